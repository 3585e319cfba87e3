package dsl

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"
)

// Format returns the canonical text of a parsed file. It refuses a file
// with syntax errors, since it cannot know what the author meant. Comments
// are kept: a trailing comment stays at the end of its line, a comment on
// its own line stays before the line that followed it.
//
// A rule written on one line stays on one line; any other rule takes the
// multi-line form (rule, on, where, then, one action per line).
func Format(f *File) ([]byte, error) {
	for _, it := range f.Items {
		if it.Err != nil {
			return nil, Diagnostics{*it.Err}
		}
	}
	p := &printer{f: f}
	for _, it := range f.Items {
		p.item(it)
	}
	return p.finish(), nil
}

type outLine struct {
	text     string
	src      int  // source line it came from
	item     int  // index of the item it belongs to; -1 for a comment between items
	first    bool // first line of its item
	single   bool // its item is one line
	indent   string
	trailing []string
}

type printer struct {
	f     *File
	lines []*outLine
	cur   int // index of the item being printed
	// verbatim spans (byte offsets) copied as written, comments included.
	verbatim [][2]int
}

func (p *printer) emit(src int, indent, text string) {
	p.lines = append(p.lines, &outLine{text: indent + text, src: src, item: p.cur, indent: indent})
}

func (p *printer) item(it *Item) {
	start := len(p.lines)
	switch {
	case it.Rule != nil:
		p.rule(it, it.Rule)
	case it.Segment != nil:
		p.segment(it.Segment)
	}
	if start < len(p.lines) {
		p.lines[start].first = true
		for _, l := range p.lines[start:] {
			l.single = len(p.lines)-start == 1
		}
	}
	p.cur++
}

func (p *printer) segment(s *segmentAST) {
	head := "segment " + p.name(s.Name) + " where "
	lines := p.expr(s.Cond.Tokens)
	p.emit(s.Pos.Line, "", head+lines[0].text)
	for _, l := range lines[1:] {
		p.emit(l.src, "  ", l.text)
	}
}

func (p *printer) rule(it *Item, r *ruleAST) {
	trigger := "on " + strings.Join(r.On.Trigger, " ")
	if r.On.After != nil {
		trigger += " " + r.On.After.Value
	}
	// Stray words are the checker's to report; fmt keeps them.
	for _, t := range r.On.Extra {
		trigger += " " + t.Value
	}
	if r.On.Pos.Line == it.End.Line {
		var b strings.Builder
		if r.Name != nil {
			if r.Name.Pos.Line == r.On.Pos.Line {
				b.WriteString("rule " + p.name(r.Name) + " ")
			} else {
				p.emit(r.Name.Pos.Line, "", "rule "+p.name(r.Name))
			}
		}
		b.WriteString(trigger)
		if r.Cond != nil {
			b.WriteString(" where " + p.expr(r.Cond.Tokens)[0].text)
		}
		b.WriteString(" " + r.Arrow.Value + " ")
		for i, a := range r.Actions {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(p.action(a))
		}
		p.emit(r.On.Pos.Line, "", b.String())
		return
	}
	if r.Name != nil {
		p.emit(r.Name.Pos.Line, "", "rule "+p.name(r.Name))
	}
	p.emit(r.On.Pos.Line, "", trigger)
	if r.Cond != nil {
		lines := p.expr(r.Cond.Tokens)
		p.emit(lines[0].src, "", "where "+lines[0].text)
		for _, l := range lines[1:] {
			p.emit(l.src, "  ", l.text)
		}
	}
	p.emit(r.Arrow.Pos.Line, "", "then")
	for _, a := range r.Actions {
		p.emit(a.Pos.Line, "  ", p.action(a))
	}
}

// name prints a name as written.
func (p *printer) name(n *nameAST) string {
	if n.Quoted != "" {
		return n.Quoted
	}
	return n.Ident
}

type exprLine struct {
	src  int
	text string
}

// expr copies an expression as written, line by line, with continuation
// lines stripped of their common indentation. A raw string's line breaks
// are its text: a line of the result may hold several of the source's.
func (p *printer) expr(toks []lexer.Token) []exprLine {
	var first, last *lexer.Token
	for i := range toks {
		if significant(toks[i]) {
			if first == nil {
				first = &toks[i]
			}
			last = &toks[i]
		}
	}
	if first == nil {
		return []exprLine{{}}
	}
	end := last.Pos.Offset + len(last.Value)
	p.verbatim = append(p.verbatim, [2]int{first.Pos.Offset, end})
	src := p.f.Src[first.Pos.Offset:end]
	// The line breaks inside raw strings, as offsets in src.
	var inside [][2]int
	for _, t := range toks {
		if strings.HasPrefix(t.Value, "`") && strings.Contains(t.Value, "\n") {
			inside = append(inside, [2]int{t.Pos.Offset - first.Pos.Offset, t.Pos.Offset - first.Pos.Offset + len(t.Value)})
		}
	}
	var out []exprLine
	line, from := first.Pos.Line, 0
	for i := 0; i <= len(src); i++ {
		if i < len(src) && (src[i] != '\n' || slices.ContainsFunc(inside, func(r [2]int) bool { return i > r[0] && i < r[1] })) {
			continue
		}
		out = append(out, exprLine{src: line, text: strings.TrimRight(src[from:i], " \t\r")})
		line += strings.Count(src[from:min(i+1, len(src))], "\n")
		from = i + 1
	}
	common := -1
	for _, l := range out[1:] {
		if strings.TrimSpace(l.text) == "" {
			continue
		}
		n := len(l.text) - len(strings.TrimLeft(l.text, " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	for i := 1; i < len(out); i++ {
		if len(out[i].text) >= common && common > 0 {
			out[i].text = out[i].text[common:]
		}
	}
	return out
}

func (p *printer) action(a *actionAST) string {
	var s string
	switch {
	case a.Assign != nil:
		s = p.assign(a.Assign)
	case a.Reply != nil:
		s = "reply " + a.Reply.Text.Value
	case a.Notify != nil:
		s = p.notify(a.Notify)
	case a.Tag != nil:
		s = "tag " + p.name(a.Tag.Name)
	case a.Set != nil:
		// A value over several lines keeps them, indented under the
		// action.
		var b strings.Builder
		for i, l := range p.expr(a.Set.Value.Tokens) {
			if i > 0 {
				b.WriteString("\n    ")
			}
			b.WriteString(l.text)
		}
		s = "set " + a.Set.Path.Value + " = " + b.String()
	case a.Word != nil:
		s = a.Word.Kw
	case a.Untag != nil:
		s = "untag " + p.name(a.Untag.Name)
	case a.Bad != nil:
		s = strings.Join(append([]string{a.Bad.Word}, a.Bad.Rest...), " ")
	}
	if a.Else != nil {
		s += " else " + p.action(a.Else.Action)
	}
	return s
}

func (p *printer) assign(a *assignAST) string {
	parts := []string{a.Verb}
	if a.Kind != nil {
		parts = append(parts, a.Kind.Value)
	}
	if a.Name != nil {
		parts = append(parts, p.name(a.Name))
	}
	for _, m := range a.Mods {
		switch {
		case m.By != nil:
			parts = append(parts, "by "+m.By.Value)
		case m.Skills != nil:
			names := make([]string, len(m.Skills.Names))
			for i, n := range m.Skills.Names {
				names[i] = p.name(n)
			}
			parts = append(parts, "skills ["+strings.Join(names, ", ")+"]")
		case m.Cost != nil:
			c := "cost " + m.Cost.Value
			if m.Cost.Percent {
				c += "%"
			}
			parts = append(parts, c)
		case m.Priority != nil:
			parts = append(parts, "priority "+m.Priority.Value)
		case m.Offline:
			parts = append(parts, "even if offline")
		case m.Away:
			parts = append(parts, "including away")
		case m.Limit != nil:
			l := "limit"
			if m.Limit.Count != nil {
				l += " " + m.Limit.Count.Value
			}
			if m.Limit.Per != nil {
				l += " per " + m.Limit.Per.Value
			}
			parts = append(parts, l)
		case m.Offer != nil:
			o := "offer"
			if m.Offer.After != nil {
				o += " " + m.Offer.After.Value
			}
			parts = append(parts, o)
		}
	}
	return strings.Join(parts, " ")
}

func (p *printer) notify(n *notifyAST) string {
	parts := []string{"notify"}
	switch {
	case n.User != nil:
		parts = append(parts, "user", p.name(n.User))
	case n.Group != nil:
		parts = append(parts, "group", p.name(n.Group))
	case n.Endpoint != nil:
		parts = append(parts, "webhook", p.name(n.Endpoint))
	case n.Address != nil:
		parts = append(parts, "email", n.Address.Value)
	case n.Who != nil:
		parts = append(parts, n.Who.Value)
	}
	if n.Via {
		parts = append(parts, "via")
	}
	if n.Channel != nil {
		parts = append(parts, n.Channel.Value)
	}
	if n.With != nil {
		parts = append(parts, "with", n.With.Value)
	}
	return strings.Join(parts, " ")
}

func (p *printer) inVerbatim(off int) bool {
	for _, v := range p.verbatim {
		if off >= v[0] && off < v[1] {
			return true
		}
	}
	return false
}

// finish places the comments and joins the lines.
func (p *printer) finish() []byte {
	srcLines := strings.Split(p.f.Src, "\n")
	blankBefore := func(line int) bool {
		return line >= 2 && line-2 < len(srcLines) && strings.TrimSpace(srcLines[line-2]) == ""
	}
	type entry struct {
		line *outLine
		own  *Comment
	}
	var entries []entry
	for _, l := range p.lines {
		entries = append(entries, entry{line: l})
	}
	for i := range p.f.Comments {
		c := &p.f.Comments[i]
		if p.inVerbatim(c.Pos.Offset) {
			continue
		}
		if !c.Own {
			// Trailing: the last output line from the same source line, or
			// failing that the last one before it.
			var target *outLine
			for _, l := range p.lines {
				if l.src <= c.Pos.Line {
					target = l
				}
			}
			if target != nil {
				target.trailing = append(target.trailing, c.Text)
				continue
			}
		}
		// Own line: before the first output line from a later source line.
		at := len(entries)
		for j, e := range entries {
			if e.line != nil && e.line.src > c.Pos.Line {
				at = j
				break
			}
		}
		entries = slices.Insert(entries, at, entry{own: c})
	}

	var b strings.Builder
	prevItem := -2
	prevSingle := false
	wrote := false
	for i, e := range entries {
		if e.own != nil {
			// A comment inside an item is indented like the line after it.
			indent := ""
			inside := false
			for _, next := range entries[i+1:] {
				if next.line != nil {
					inside = !next.line.first && next.line.item == prevItem
					if inside {
						indent = next.line.indent
					}
					break
				}
			}
			if wrote && !inside && blankBefore(e.own.Pos.Line) {
				b.WriteString("\n")
			}
			b.WriteString(indent + e.own.Text + "\n")
			wrote = true
			continue
		}
		l := e.line
		if l.first && wrote {
			// One blank line between items, unless the item's own comments
			// stand right above it.
			// Adjacent one-line items (a list of segments, say) stay
			// together as written.
			prevIsComment := i > 0 && entries[i-1].own != nil && entries[i-1].own.Pos.Line == l.src-1
			together := prevSingle && l.single && !blankBefore(l.src)
			if !prevIsComment && !together && !strings.HasSuffix(b.String(), "\n\n") {
				b.WriteString("\n")
			}
		}
		b.WriteString(l.text)
		for _, t := range l.trailing {
			b.WriteString("  " + t)
		}
		b.WriteString("\n")
		prevItem = l.item
		prevSingle = l.single
		wrote = true
	}
	return []byte(b.String())
}

// FormatSource parses and formats rule text.
func FormatSource(name, src string) ([]byte, error) {
	f, ds := ParseFile(name, src)
	if ds.HasErrors() {
		return nil, ds
	}
	out, err := Format(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// Move is an unnamed rule that formatting moves to another line: it is
// named by its line (FILE:LINE), so its name changes from From to To.
type Move struct{ From, To string }

// MovedRules lists the unnamed rules of a rule file that are named
// otherwise in after (its formatted text) than in before: what names them
// elsewhere (tests' decisions, dashboards) must follow, or the rules be
// given names of their own. Nil when both parse to other rules.
func MovedRules(name, before, after string) []Move {
	lines := func(src string) []int {
		f, ds := ParseFile(name, src)
		if ds.HasErrors() {
			return nil
		}
		var out []int
		for _, it := range f.Items {
			if it.Rule != nil && it.Rule.Name == nil {
				out = append(out, posOf(it.Rule.Pos).Line)
			}
		}
		return out
	}
	was, now := lines(before), lines(after)
	if len(was) != len(now) {
		return nil
	}
	base := filepath.Base(name)
	var moves []Move
	for i := range was {
		if was[i] != now[i] {
			moves = append(moves, Move{From: fmt.Sprintf("%s:%d", base, was[i]), To: fmt.Sprintf("%s:%d", base, now[i])})
		}
	}
	return moves
}
