package dsl

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/triggers"
	"gopkg.in/yaml.v3"
)

// Mapping table files in a rule set directory.
const (
	MappingsCSV  = "mappings.csv"
	MappingsYAML = "mappings.yaml"
)

// Table columns.
const (
	colSegment  = "segment"
	colWhen     = "when"
	colGroup    = "group"
	colHow      = "how"
	colGreeting = "greeting"
	colOffline  = "offline"
)

var tableColumns = []string{colSegment, colWhen, colGroup, colHow, colGreeting, colOffline}

// columnSynonyms are other words people head these columns with.
var columnSynonyms = map[string]string{
	"name": colSegment, "customers": colSegment, "customer": colSegment,
	"filter": colWhen, "condition": colWhen, "conditions": colWhen, "if": colWhen, "rule": colWhen,
	"team": colGroup, "agents": colGroup, "agent group": colGroup, "queue": colGroup,
	"algorithm": colHow, "method": colHow, "distribution": colHow, "routing": colHow,
	"welcome": colGreeting, "message": colGreeting, "reply": colGreeting, "welcome message": colGreeting,
	"fallback": colOffline, "when offline": colOffline, "out of office": colOffline,
}

// cell is one value of a table row, with where it stands.
type cell struct {
	text string
	pos  Pos
	set  bool // the row has this column
}

// row is one row of a mapping table.
type row struct {
	n     int // the spreadsheet row number: the header is row 1
	pos   Pos
	cells map[string]cell
}

// tableHow maps the words of the how column to algorithms.
var tableHow = map[string]Algorithm{
	"round robin": RoundRobin, "in order": RoundRobin, "least busy": LeastActive,
	"longest idle": LongestIdle, "most available": MostAvailable, "random": Random,
	"fair rotation": Fair, "fewest served": FewestServed, "longest free": LongestFree,
}

var tableHowWords = []string{"round robin", "least busy", "longest idle", "most available", "random", "in order", "fair rotation", "fewest served", "longest free"}

// readTable reads a mapping table into rows. Problems with the file as a
// whole (not UTF-8, unknown or missing columns) are reported here.
func readTable(src Source, d *diags) []row {
	name := src.Name
	data := bytes.TrimPrefix(src.Text, []byte("\ufeff")) // Excel writes a BOM
	if !utf8.Valid(data) {
		line := 1 + bytes.Count(data[:firstInvalid(data)], []byte("\n"))
		d.errorf(Pos{File: name, Line: line, Col: 1}, CodeTable, "in your spreadsheet, save as \"CSV UTF-8\"", "the table is not UTF-8 text")
		return nil
	}
	if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
		return readYAMLTable(name, data, d)
	}
	return readCSVTable(name, data, d)
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

func readCSVTable(name string, data []byte, d *diags) []row {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	// Spreadsheets set to a European locale write semicolons.
	if first, _, _ := bytes.Cut(data, []byte("\n")); bytes.Count(first, []byte(";")) > bytes.Count(first, []byte(",")) {
		r.Comma = ';'
	}
	header, err := r.Read()
	if err == io.EOF {
		d.errorf(Pos{File: name, Line: 1, Col: 1}, CodeTable, "the first row names the columns: "+strings.Join(tableColumns, ", "), "the table is empty")
		return nil
	}
	if err != nil {
		d.errorf(csvErrPos(name, err), CodeTable, "", "%s", csvErrMsg(err))
		return nil
	}
	cols := make([]string, len(header))
	for i, h := range header {
		line, col := r.FieldPos(i)
		cols[i] = checkColumn(strings.ToLower(strings.TrimSpace(h)), Pos{File: name, Line: line, Col: col}, cols[:i], d)
	}
	if !requiredColumns(name, cols, d) {
		return nil
	}
	var rows []row
	for n := 2; ; n++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			d.errorf(csvErrPos(name, err), CodeTable, "", "%s", csvErrMsg(err))
			return nil
		}
		line, _ := r.FieldPos(0)
		rw := row{n: n, pos: Pos{File: name, Line: line, Col: 1}, cells: map[string]cell{}}
		if extra := extraValues(rec, len(cols)); extra > 0 {
			// Almost always a value with commas that is not in quotes, such
			// as country is one of ES, MX, AR: the rest of the row shifts.
			d.errorf(rw.pos, CodeTable, `put a value that holds commas in double quotes, e.g. "country is one of ES, MX, AR"`,
				"row %d has %d values but the table has %d columns", n, len(cols)+extra, len(cols))
			continue
		}
		blank := true
		for i, v := range rec {
			l, c := r.FieldPos(i)
			if i >= len(cols) {
				continue
			}
			if cols[i] == "" {
				continue
			}
			rw.cells[cols[i]] = cell{text: strings.TrimSpace(v), pos: Pos{File: name, Line: l, Col: c}, set: true}
			if strings.TrimSpace(v) != "" {
				blank = false
			}
		}
		if !blank {
			rows = append(rows, rw)
		}
	}
	return rows
}

// extraValues counts the values of a record beyond the named columns, up
// to its last non-blank one.
func extraValues(rec []string, cols int) int {
	last := -1
	for i, v := range rec {
		if strings.TrimSpace(v) != "" {
			last = i
		}
	}
	return max(0, last+1-cols)
}

func csvErrPos(name string, err error) Pos {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return Pos{File: name, Line: pe.Line, Col: max(pe.Column, 1)}
	}
	return Pos{File: name, Line: 1, Col: 1}
}

func csvErrMsg(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(pe.Err, csv.ErrQuote), errors.Is(pe.Err, csv.ErrBareQuote):
			return "a quote (\") is not closed, or stands inside a value; put values holding quotes or commas in quotes and double the quotes inside"
		}
		return pe.Err.Error()
	}
	return err.Error()
}

// checkColumn validates a header cell and returns the column it names,
// or "" when it is not one.
func checkColumn(h string, p Pos, seen []string, d *diags) string {
	switch {
	case h == "":
		d.errorf(p, CodeTable, "name it, or remove the column", "a column has no name")
		return ""
	case !slices.Contains(tableColumns, h):
		hint := didYouMean(h, tableColumns)
		if syn, ok := columnSynonyms[h]; ok {
			hint = fmt.Sprintf("did you mean %q?", syn)
		}
		if hint == "" {
			hint = "the columns are " + strings.Join(tableColumns, ", ")
		}
		d.errorf(p, CodeTable, hint, "unknown column %q", h)
		return ""
	case slices.Contains(seen, h):
		d.errorf(p, CodeTable, "keep one", "column %q appears twice", h)
		return ""
	}
	return h
}

func requiredColumns(name string, cols []string, d *diags) bool {
	ok := true
	for _, req := range []string{colSegment, colGroup} {
		if !slices.Contains(cols, req) {
			d.errorf(Pos{File: name, Line: 1, Col: 1}, CodeTable, "add a "+req+" column to the first row", "the table has no %s column", req)
			ok = false
		}
	}
	return ok
}

func readYAMLTable(name string, data []byte, d *diags) []row {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		pos, msg := yamlError(name, err)
		d.errorf(pos, CodeTable, "", "the table is not valid YAML: %s", msg)
		return nil
	}
	if len(doc.Content) == 0 {
		d.errorf(Pos{File: name, Line: 1, Col: 1}, CodeTable, "write one \"- segment: ...\" entry per row", "the table is empty")
		return nil
	}
	list := doc.Content[0]
	at := func(n *yaml.Node) Pos { return Pos{File: name, Line: n.Line, Col: n.Column} }
	if list.Kind != yaml.SequenceNode {
		d.errorf(at(list), CodeTable, "write one \"- segment: ...\" entry per row", "the table must be a list of rows")
		return nil
	}
	var rows []row
	for i, n := range list.Content {
		rw := row{n: i + 1, pos: at(n), cells: map[string]cell{}}
		if n.Kind != yaml.MappingNode {
			d.errorf(at(n), CodeTable, "", "row %d must have the columns as keys: segment, when, group, ...", rw.n)
			continue
		}
		var seen []string
		for j := 0; j+1 < len(n.Content); j += 2 {
			k, v := n.Content[j], n.Content[j+1]
			col := checkColumn(strings.ToLower(k.Value), at(k), seen, d)
			if col == "" {
				continue
			}
			seen = append(seen, col)
			if v.Kind != yaml.ScalarNode {
				d.errorf(at(v), CodeTable, "", "row %d, %s: write a single value", rw.n, col)
				continue
			}
			rw.cells[col] = cell{text: strings.TrimSpace(v.Value), pos: at(v), set: true}
		}
		rows = append(rows, rw)
	}
	return rows
}

// tableRow is a compiled row, kept for the shadowing check.
type tableRow struct {
	rule  *Rule
	conds []whenCond
	name  string
	n     int
}

// table compiles a mapping table into new conversation rules, in row order.
func (c *compiler) table(src Source, strict bool, declared []string) []*Rule {
	rows := readTable(src, &c.d)
	base := filepath.Base(src.Name)
	var done []tableRow
	names := map[string]int{}
	var rules []*Rule
	for _, rw := range rows {
		at := func(col string) Pos {
			if cl, ok := rw.cells[col]; ok {
				return cl.pos
			}
			return rw.pos
		}
		errs := len(c.d.list)
		seg := rw.cells[colSegment].text
		if seg == "" {
			c.d.errorf(at(colSegment), CodeTable, "name the kind of customer the row is for, e.g. Spanish speakers", "row %d has no segment name", rw.n)
		} else if prev, dup := names[strings.ToLower(seg)]; dup {
			c.d.errorf(at(colSegment), CodeDuplicate, "give each row its own segment name", "row %d repeats the segment name %q of row %d", rw.n, seg, prev)
		} else {
			names[strings.ToLower(seg)] = rw.n
		}
		conds := c.tableWhen(rw, strict, declared)
		group := rw.cells[colGroup].text
		if group == "" {
			c.d.errorf(at(colGroup), CodeTable, "write the team from team.yaml that gets these customers", "row %d has no group", rw.n)
		} else {
			c.inCell(rw.n, colGroup, func() {
				c.checkGroup(group, at(colGroup))
				c.checkMembers(group, at(colGroup))
			})
		}
		alg := RoundRobin
		if how := normalWords(rw.cells[colHow].text); how != "" {
			a, ok := tableHow[how]
			if !ok {
				hint := didYouMean(how, tableHowWords)
				if hint == "" {
					hint = "write one of: " + strings.Join(tableHowWords, ", ")
				}
				c.d.errorf(at(colHow), CodeAlgorithm, hint, "row %d: %q is not a way to hand out conversations", rw.n, rw.cells[colHow].text)
			}
			alg = a
		}
		assign := &Assign{Pos: at(colGroup), Target: TargetGroup, Name: group, Algorithm: alg}
		c.inCell(rw.n, colOffline, func() { c.tableOffline(rw, assign, at(colOffline)) })
		actions := []Action{assign}
		if g := rw.cells[colGreeting]; g.text != "" {
			// The greeting's placeholders point into the cell.
			var t *Template
			c.inCell(rw.n, colGreeting, func() { t = parseTemplate(g.text, g.text, g.pos, &c.d) })
			actions = append(actions, &Reply{Pos: g.pos, Text: t, AfterAssign: true})
		}
		if len(c.d.list) > errs && c.d.list[len(c.d.list)-1].Severity == Error {
			continue
		}
		label := seg
		r := &Rule{
			Name:    fmt.Sprintf("%s:%d (%s)", base, rw.n, label),
			Pos:     rw.pos,
			Trigger: Trigger{Kind: triggers.ConversationCreated},
			Actions: actions,
			Table:   true,
		}
		if len(conds) > 0 {
			parts := make([]string, len(conds))
			for i, cd := range conds {
				parts[i] = cd.expr()
			}
			r.When = c.generated(strings.Join(parts, " && "), at(colWhen), rw.cells[colWhen].text, conds)
		}
		for _, prev := range done {
			if shadows(prev.conds, conds) {
				c.d.errorf(at(colWhen), CodeTable, "move it above row "+fmt.Sprint(prev.n)+", or narrow row "+fmt.Sprint(prev.n),
					"row %d (%s) can never match: row %d (%s) comes first and catches every customer it would", rw.n, label, prev.n, prev.name)
				break
			}
		}
		done = append(done, tableRow{rule: r, conds: conds, name: label, n: rw.n})
		rules = append(rules, r)
	}
	return rules
}

// inCell runs check and starts the messages it adds with the row and
// column, the terms a table's author thinks in.
func (c *compiler) inCell(n int, col string, check func()) {
	from := len(c.d.list)
	check()
	prefix := fmt.Sprintf("row %d, %s: ", n, col)
	for i := from; i < len(c.d.list); i++ {
		if !strings.HasPrefix(c.d.list[i].Message, "row ") {
			c.d.list[i].Message = prefix + c.d.list[i].Message
		}
	}
}

// normalWords lowercases and collapses spaces and underscores.
func normalWords(s string) string {
	return strings.Join(strings.Fields(strings.ToLower(strings.ReplaceAll(s, "_", " "))), " ")
}

// tableWhen parses and checks a row's when filter.
func (c *compiler) tableWhen(rw row, strict bool, declared []string) []whenCond {
	cl := rw.cells[colWhen]
	conds, err := parseWhen(cl.text)
	at := func(off int) Pos {
		p := cl.pos
		p.Col += utf8.RuneCountInString(cl.text[:min(off, len(cl.text))])
		return p
	}
	if err != nil {
		c.d.errorf(at(err.off), CodeTable, err.hint, "row %d, when: %s", rw.n, err.msg)
		return nil
	}
	for i := range conds {
		cd := &conds[i]
		if a, ok := tableAttributes[cd.Attr]; ok {
			cd.Path, cd.List = a.path, a.list
			continue
		}
		known := append(slices.Clip(tableAttributeWords), declared...)
		switch {
		case !isAttrWord(cd.Attr):
			c.d.errorf(at(cd.off), CodeTable, "an attribute is one word, such as language, country or plan", "row %d, when: %q is not an attribute name", rw.n, cd.Attr)
			continue
		case strict && !slices.Contains(declared, cd.Attr):
			hint := didYouMean(cd.Attr, known)
			if hint == "" {
				hint = "declare it under attributes: in team.yaml"
			}
			c.d.errorf(at(cd.off), CodeTable, hint, "row %d, when: unknown attribute %q", rw.n, cd.Attr)
			continue
		case !strict:
			if hint := didYouMean(cd.Attr, tableAttributeWords); hint != "" {
				c.d.warnf(at(cd.off), CodeTable, hint, "row %d, when: %q is read as a custom contact attribute", rw.n, cd.Attr)
			}
		}
		cd.Path = attrsPrefix + cd.Attr
	}
	return conds
}

// tableOffline sets what an assign does when nobody in the group is online:
// wait (the default), email USER (and wait), or owner (the contact's owner, even if
// offline; if there is none, it waits).
func (c *compiler) tableOffline(rw row, as *Assign, p Pos) {
	text := normalWords(rw.cells[colOffline].text)
	switch {
	case text == "" || text == "wait":
	case text == "owner":
		as.Else = &Assign{Pos: p, Target: TargetOwner, EvenIfOffline: true,
			Else: &Assign{Pos: p, Target: TargetGroup, Name: as.Name, Algorithm: as.Algorithm}}
	case strings.HasPrefix(text, "email"):
		user := strings.TrimSpace(rw.cells[colOffline].text[len("email"):])
		if user == "" {
			c.d.errorf(p, CodeTable, "write email and the agent's id, e.g. email amelie", "row %d, offline: whom to email?", rw.n)
			return
		}
		c.checkUser(user, p)
		// Emailed, and the conversation waits for the team all the same:
		// the first to come online takes it.
		as.Else = &Notify{Pos: p, To: NotifyUser, Name: user, Via: "email"}
		as.ElseAndWait = true
	default:
		hint := didYouMean(strings.Fields(text)[0], []string{"wait", "email", "owner"})
		if hint == "" {
			hint = "write wait, email USER or owner"
		}
		c.d.errorf(p, CodeTable, hint, "row %d, offline: %q is not wait, email USER or owner", rw.n, rw.cells[colOffline].text)
	}
}

// generated compiles a condition the compiler wrote itself from a when
// filter; a failure is reported at the cell it came from. Its source and
// its clauses read as the author wrote them ("language is es"), for
// explain.
func (c *compiler) generated(src string, at Pos, written string, conds []whenCond) *Condition {
	prog, err := compileQuiet(src)
	if err != nil {
		c.d.errorf(at, CodeTable, "", "cannot compile %q: %v", written, err)
		return nil
	}
	cond := &Condition{Source: written, Pos: at, Program: prog}
	c.clauses(fragment{src: src, start: at}, cond)
	if len(cond.Clauses) == len(conds) {
		for i, cd := range conds {
			cond.Clauses[i].Source = cd.text
		}
	}
	return cond
}
