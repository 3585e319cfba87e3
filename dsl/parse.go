package dsl

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/alecthomas/participle/v2"
	"github.com/alecthomas/participle/v2/lexer"
)

// File is one parsed rule file: its items (rules and segments, in order)
// and its comments, which the formatter keeps.
type File struct {
	Name     string
	Src      string
	Items    []*Item
	Comments []Comment
	// code is Src with every comment blanked out, so that a condition can be
	// sliced from it and handed to expr with its columns intact.
	code string
}

// Comment is one "# ..." comment.
type Comment struct {
	Pos  Pos
	Text string
	// Own reports whether the comment is alone on its line.
	Own bool
}

// Item is one rule or segment as parsed, or the syntax error that stopped it.
type Item struct {
	Start, End Pos // first and last significant tokens
	Rule       *ruleAST
	Segment    *segmentAST
	Err        *Diagnostic
}

// ParseFile splits a rule file into items and parses each one. Syntax
// errors are returned as diagnostics, one per broken item, so that a single
// mistake does not hide the rest of the file.
func ParseFile(name, src string) (*File, Diagnostics) {
	// Editors on Windows may start a file with a byte order mark.
	src = strings.TrimPrefix(src, "\ufeff")
	f := &File{Name: name, Src: src}
	var d diags
	if !utf8.ValidString(src) {
		// Its text could never match an event's, which is UTF-8.
		at := firstInvalid([]byte(src))
		line := 1 + strings.Count(src[:at], "\n")
		col := 1 + utf8.RuneCountInString(src[strings.LastIndexByte(src[:at], '\n')+1:at])
		d.errorf(Pos{File: name, Line: line, Col: col}, CodeSyntax, "save the file as UTF-8 in your editor", "the file is not UTF-8 text (byte %d)", at+1)
		return f, d.list
	}
	toks, err := tokenize(name, src)
	if err != nil {
		d.errorf(Pos{File: name, Line: 1, Col: 1}, CodeSyntax, "", "cannot read file: %v", err)
		return f, d.list
	}
	f.code = blankComments(src, toks, f)
	for _, span := range splitItems(toks) {
		item := parseItem(name, span)
		f.Items = append(f.Items, item)
		if item.Err != nil {
			d.list = append(d.list, *item.Err)
		}
	}
	return f, d.list
}

func tokenize(name, src string) ([]lexer.Token, error) {
	l, err := lex.LexString(name, src)
	if err != nil {
		return nil, err
	}
	return lexer.ConsumeAll(l)
}

// blankComments records the comments of f and returns src with each comment
// replaced by spaces.
func blankComments(src string, toks []lexer.Token, f *File) string {
	var b []byte
	lineStart := true
	for _, t := range toks {
		switch t.Type {
		case tokComment:
			f.Comments = append(f.Comments, Comment{Pos: posOf(t.Pos), Text: strings.TrimRight(t.Value, " \t\r"), Own: lineStart})
			if b == nil {
				b = []byte(src)
			}
			for i := t.Pos.Offset; i < t.Pos.Offset+len(t.Value); i++ {
				b[i] = ' '
			}
		case tokNL:
			lineStart = true
		case tokWS:
		default:
			lineStart = false
		}
	}
	if b == nil {
		return src
	}
	return string(b)
}

// significant reports whether a token matters to the grammar.
func significant(t lexer.Token) bool {
	return t.Type != tokWS && t.Type != tokComment && t.Type != tokNL && !t.EOF()
}

// splitItems cuts the token stream into items: a new item starts at a
// "rule", "on" or "segment" that begins a line, except that the "on" line
// after "rule NAME" belongs to that rule.
func splitItems(toks []lexer.Token) [][]lexer.Token {
	var (
		items     [][]lexer.Token
		start     = 0
		lineStart = true
		first     = "" // first significant word of the current item
		count     = 0  // significant tokens in the current item
	)
	for i, t := range toks {
		if t.EOF() {
			break
		}
		if t.Type == tokNL {
			lineStart = true
			continue
		}
		if !significant(t) {
			continue
		}
		if lineStart && t.Type == tokIdent && (t.Value == "rule" || t.Value == "on" || t.Value == "segment") {
			attach := t.Value == "on" && first == "rule" && count <= 2
			if !attach && count > 0 {
				items = append(items, toks[start:i])
				start = i
				count = 0
			}
		}
		if count == 0 {
			first = t.Value
		}
		count++
		lineStart = false
	}
	if count > 0 {
		items = append(items, toks[start:len(toks)])
	}
	return items
}

// sliceLexer replays pre-lexed tokens to participle.
type sliceLexer struct {
	toks []lexer.Token
	eof  lexer.Position
}

func (s *sliceLexer) Next() (lexer.Token, error) {
	if len(s.toks) == 0 {
		return lexer.EOFToken(s.eof), nil
	}
	t := s.toks[0]
	s.toks = s.toks[1:]
	return t, nil
}

func parseItem(name string, toks []lexer.Token) *Item {
	item := &Item{}
	var last lexer.Token
	firstSet := false
	for _, t := range toks {
		if !significant(t) {
			continue
		}
		if !firstSet {
			item.Start = posOf(t.Pos)
			firstSet = true
		}
		last = t
	}
	// EOF sits just after the last significant token, so "expected then"
	// points at the end of what was written rather than at the next rule.
	eof := last.Pos
	eof.Advance(last.Value)
	item.End = posOf(last.Pos)
	// An unterminated string swallows the rest of its line; say so rather
	// than report whatever the parser trips on next.
	for _, t := range toks {
		if t.Type == tokBad {
			item.Err = &Diagnostic{Pos: posOf(t.Pos), Severity: Error, Code: CodeSyntax,
				Message: "unterminated string " + t.Value, Hint: "add the closing quote"}
			return item
		}
	}
	// Drop the EOF token the lexer added at the very end of the file.
	if n := len(toks); n > 0 && toks[n-1].EOF() {
		toks = toks[:n-1]
	}
	pl, err := lexer.Upgrade(&sliceLexer{toks: toks, eof: eof}, tokWS, tokComment)
	if err == nil {
		var ast *itemAST
		ast, err = itemParser.ParseFromLexer(pl)
		if err == nil {
			item.Rule, item.Segment = ast.Rule, ast.Segment
			return item
		}
	}
	item.Err = syntaxError(name, err)
	refineSyntax(item, toks)
	return item
}

// durationWords maps units written as words to the duration unit.
var durationWords = map[string]string{
	"s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
	"m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
	"h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
	"d": "d", "day": "d", "days": "d",
}

// refineSyntax rewords two common mistakes that the parser only notices
// later than the author made them.
func refineSyntax(item *Item, toks []lexer.Token) {
	var sig []lexer.Token
	for _, t := range toks {
		if significant(t) {
			sig = append(sig, t)
		}
	}
	if len(sig) == 0 {
		return
	}
	// A name with punctuation in it: tier-2 lexes as tier, -, 2.
	for i := 1; i < len(sig); i++ {
		t, prev := sig[i], sig[i-1]
		if t.Pos.Offset != item.Err.Pos.Offset || prev.Type != tokIdent || prev.Pos.Offset+len(prev.Value) != t.Pos.Offset {
			continue
		}
		word, j := prev.Value, i
		for ; j < len(sig) && sig[j].Pos.Offset == sig[j-1].Pos.Offset+len(sig[j-1].Value); j++ {
			word += sig[j].Value
		}
		if j-i < 2 {
			break // trailing punctuation, not a joined word
		}
		item.Err.Pos = posOf(prev.Pos)
		if i >= 2 && sig[i-2].Value == "by" {
			// by round-robin: an algorithm, not a name.
			item.Err.Message = fmt.Sprintf("unknown algorithm %q", word)
			norm := strings.NewReplacer("-", "_", " ", "_").Replace(word)
			item.Err.Hint = didYouMean(norm, algorithmWords())
			if slices.Contains(algorithmWords(), norm) {
				item.Err.Hint = "write by " + norm
			}
			if item.Err.Hint == "" {
				item.Err.Hint = "algorithms are " + quoteList(algorithmWords(), "or")
			}
			item.Err.Code = CodeAlgorithm
			return
		}
		item.Err.Message = fmt.Sprintf("%s is not a plain name", word)
		item.Err.Hint = fmt.Sprintf("quote names that hold punctuation or spaces: %q", word)
		return
	}
	// "unanswered 5 min", "inactive 5 min": a number and a unit written
	// as a word.
	for i := 2; i < len(sig); i++ {
		t, num := sig[i], sig[i-1]
		if t.Pos.Offset != item.Err.Pos.Offset || t.Type != tokIdent || num.Type != tokNumber || (sig[i-2].Value != "unanswered" && sig[i-2].Value != "inactive") {
			continue
		}
		written := num.Value + " " + t.Value
		if num.Pos.Offset+len(num.Value) == t.Pos.Offset {
			written = num.Value + t.Value
		}
		item.Err.Pos = posOf(num.Pos)
		item.Err.Message = fmt.Sprintf("%q is not a duration", written)
		word := strings.ToLower(t.Value)
		if unit, known := durationWords[word]; known {
			item.Err.Hint = fmt.Sprintf("write %s%s (units are s, m, h and d)", num.Value, unit)
		} else if n, err := strconv.Atoi(num.Value); err == nil && slices.Contains([]string{"w", "wk", "wks", "week", "weeks"}, word) {
			item.Err.Hint = fmt.Sprintf("write %dd; units are s, m, h and d", 7*n)
		} else {
			item.Err.Hint = "units are s, m, h and d, e.g. 90s, 5m, 1h30m or 2d"
		}
		return
	}
	// rule NAME WITH SPACES: the name runs into the trigger.
	if len(sig) > 2 && sig[0].Value == "rule" && sig[1].Type == tokIdent && item.Err.Pos.Offset == sig[2].Pos.Offset && sig[2].Value != "on" {
		name := sig[1].Value
		for _, t := range sig[2:] {
			if t.Type != tokIdent || t.Value == "on" || t.Pos.Line != sig[1].Pos.Line {
				break
			}
			name += " " + t.Value
		}
		item.Err.Pos = posOf(sig[1].Pos)
		item.Err.Message = fmt.Sprintf("the rule name %s has spaces", name)
		item.Err.Hint = fmt.Sprintf("quote it: rule %q", name)
		return
	}
	// Actions with no rule around them.
	if first := sig[0]; slices.Contains(actionWords, first.Value) && item.Err.Pos.Offset == first.Pos.Offset {
		item.Err.Message = fmt.Sprintf("%q is outside any rule", first.Value)
		item.Err.Hint = "start the rule with a line such as: on new conversation then"
		return
	}
	// "where COND assign ...": the condition ran into the actions because
	// "then" is missing; point at the first action word after where.
	if strings.HasPrefix(item.Err.Message, `expected "then"`) {
		inCond := false
		for _, t := range sig {
			if t.Value == "where" {
				inCond = true
				continue
			}
			if inCond && t.Type == tokIdent && slices.Contains(actionWords, t.Value) {
				item.Err.Pos = posOf(t.Pos)
				item.Err.Message = fmt.Sprintf("missing \"then\", \"->\" or \"→\" before %q", t.Value)
				item.Err.Hint = ""
				return
			}
		}
	}
}

func posOf(p lexer.Position) Pos {
	return Pos{File: p.Filename, Line: p.Line, Col: p.Column, Offset: p.Offset}
}

// syntaxError turns a participle error into a diagnostic in plain words.
func syntaxError(name string, err error) *Diagnostic {
	d := &Diagnostic{Severity: Error, Code: CodeSyntax, Message: err.Error()}
	var perr participle.Error
	if !errors.As(err, &perr) {
		d.Pos = Pos{File: name, Line: 1, Col: 1}
		return d
	}
	d.Pos = posOf(perr.Position())
	if d.Pos.File == "" {
		d.Pos.File = name
	}
	d.Message, d.Hint = explainSyntax(perr)
	return d
}

func explainSyntax(perr participle.Error) (msg, hint string) {
	var ute *participle.UnexpectedTokenError
	if !errors.As(perr, &ute) {
		if strings.HasPrefix(perr.Message(), "too many iterations") {
			// The parser's own bound on repetitions.
			return "too long to read: a condition of more than a million tokens", "split it into segments (segment NAME where ...) and test them with in_segment"
		}
		return perr.Message(), ""
	}
	tok := ute.Unexpected
	if tok.Type == tokBad {
		return "unterminated string " + tok.Value, "add the closing quote"
	}
	got := describeToken(tok)
	expected := ute.Expect
	if m := ute.Message(); expected == "" {
		if i := strings.Index(m, "(expected "); i >= 0 {
			expected = strings.TrimSuffix(m[i+len("(expected "):], ")")
		}
	}
	first, _, _ := strings.Cut(expected, " ")
	if strings.HasPrefix(expected, "<ident> ~(") {
		first = "ActionAST"
	}
	switch first {
	case "AlgoAST":
		return fmt.Sprintf("expected an algorithm after by, found %s", got), "algorithms are " + quoteList(algorithmWords(), "or")
	case "ArrowAST":
		return fmt.Sprintf("expected \"then\", \"->\" or \"→\" before the actions, found %s", got), ""
	case "OnAST":
		if tok.Value == "rule" {
			return "expected a name after rule", "write rule \"NAME\" on the line before on"
		}
		return fmt.Sprintf("expected \"on\" and a trigger, found %s", got), "write e.g. \"on incoming message\""
	case "ActionAST", "ActionAST?":
		return fmt.Sprintf("expected an action, found %s", got), "actions are " + quoteList(actionWords, "or")
	case "NameAST":
		return fmt.Sprintf("expected a name, found %s", got), "write a word or a \"quoted name\""
	case "ExprAST", "SetExprAST":
		return fmt.Sprintf("expected an expression, found %s", got), ""
	case "StringAST":
		return fmt.Sprintf("expected a \"quoted text\", found %s", got), ""
	case "TokenIdent":
		return fmt.Sprintf("expected a word, found %s", got), ""
	case "NumberAST", "CostAST":
		return fmt.Sprintf("expected a number, found %s", got), ""
	case `"="`:
		return fmt.Sprintf("expected \"=\" after the path to set, found %s", got), "write set PATH = EXPRESSION"
	case `"]"`, `","`:
		return fmt.Sprintf("expected \",\" or \"]\" in the skill list, found %s", got), ""
	case "":
		return fmt.Sprintf("unexpected %s", got), "each rule or segment starts a line with \"rule\", \"on\" or \"segment\""
	}
	return fmt.Sprintf("unexpected %s (expected %s)", got, expected), ""
}

var actionWords = []string{"assign", "reassign", "unassign", "reply", "notify", "tag", "untag", "set", "cancel", "release", "close", "stop"}

func describeToken(t lexer.Token) string {
	switch {
	case t.EOF():
		return "end of rule"
	case t.Type == tokNL:
		return "end of line"
	case t.Type == tokBad:
		return "unterminated string " + t.Value
	}
	return fmt.Sprintf("%q", t.Value)
}
