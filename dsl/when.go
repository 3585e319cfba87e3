package dsl

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// A when filter is what business users write in a mapping table:
// conditions joined by "and", each "ATTRIBUTE is VALUE", "is not VALUE",
// "is one of A, B, C", "contains TEXT", "is set" or "is empty".

// whenOp is a comparison in a when filter.
type whenOp string

const (
	opIs      whenOp = "is"
	opIsNot   whenOp = "is not"
	opOneOf   whenOp = "is one of"
	opHas     whenOp = "contains"
	opSet     whenOp = "is set"
	opEmpty   whenOp = "is empty"
	opUnknown whenOp = ""
)

// whenCond is one condition of a filter.
type whenCond struct {
	Attr   string   // as written, lowercased
	Path   string   // what it reads: lang, contact.country, contact.attrs.plan, ...
	List   bool     // the attribute is a list (tags)
	Op     whenOp   //
	Values []string // lowercased; one for is/is not/contains, several for is one of
	off    int      // byte offset of the condition in the cell
	text   string   // as written
}

// attribute is a contact or conversation attribute a table can test.
type attribute struct {
	path string
	list bool
}

// tableAttributes are the attributes every table knows, by the words
// people use for them. Any other word is a custom contact attribute.
var tableAttributes = map[string]attribute{
	"language": {path: "lang"}, "lang": {path: "lang"},
	"country": {path: "contact.country"},
	"name":    {path: "contact.name"}, "email": {path: "contact.email"}, "phone": {path: "contact.phone"},
	"owner": {path: "contact.owner"},
	"tags":  {path: "contact.tags", list: true}, "tag": {path: "contact.tags", list: true},
	"channel": {path: "channel"},
	"number":  {path: "conversation.to"},
}

var tableAttributeWords = []string{"language", "country", "name", "email", "phone", "owner", "tags", "channel", "number"}

// whenError is a mistake in a when filter, at a byte offset of the cell.
type whenError struct {
	off  int
	msg  string
	hint string
}

// parseWhen reads a when filter. An empty filter matches everyone.
func parseWhen(text string) ([]whenCond, *whenError) {
	var conds []whenCond
	parts := splitAnd(text)
	if len(parts) == 1 && strings.TrimSpace(parts[0].text) == "" {
		return nil, nil
	}
	for i, p := range parts {
		if strings.TrimSpace(p.text) == "" {
			where := "between two \"and\""
			switch i {
			case 0:
				where = "before the first \"and\""
			case len(parts) - 1:
				where = "after the last \"and\""
			}
			return nil, &whenError{off: p.off, msg: "a condition is missing " + where, hint: "write e.g. language is es and country is ES"}
		}
		c, err := parseCond(p.text, p.off)
		if err != nil {
			return nil, err
		}
		conds = append(conds, c)
	}
	return conds, nil
}

type part struct {
	text string
	off  int
}

// splitAnd cuts a filter at the word "and", outside quotes.
func splitAnd(s string) []part {
	var parts []part
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case !inQuote && wordAt(s, i, "and"):
			parts = append(parts, part{s[start:i], start})
			start = i + 3
			i += 2
		}
	}
	return append(parts, part{s[start:], start})
}

// wordAt reports whether word (lowercase) stands alone at s[i:].
func wordAt(s string, i int, word string) bool {
	if i+len(word) > len(s) || !strings.EqualFold(s[i:i+len(word)], word) {
		return false
	}
	before := i == 0 || s[i-1] == ' ' || s[i-1] == '\t'
	after := i+len(word) == len(s) || s[i+len(word)] == ' ' || s[i+len(word)] == '\t'
	return before && after
}

func parseCond(text string, off int) (whenCond, *whenError) {
	// Skip leading blanks, keeping offsets true to the cell.
	lead := len(text) - len(strings.TrimLeft(text, " \t"))
	off += lead
	text = strings.TrimRight(text[lead:], " \t")
	attrEnd := strings.IndexAny(text, " \t")
	if attrEnd < 0 {
		attrEnd = len(text)
	}
	c := whenCond{Attr: strings.ToLower(text[:attrEnd]), off: off, text: text}
	rest := strings.TrimLeft(text[attrEnd:], " \t")
	restOff := off + len(text) - len(rest)
	lower := strings.ToLower(rest)
	expect := `write "is", "is not", "is one of", "contains", "is set" or "is empty" after the attribute`
	switch {
	case rest == "":
		return c, &whenError{off: off, msg: fmt.Sprintf("%q needs a comparison", text[:attrEnd]), hint: expect}
	case lower == "is set":
		c.Op = opSet
	case lower == "is empty":
		c.Op = opEmpty
	case strings.HasPrefix(lower, "is set ") || strings.HasPrefix(lower, "is empty "):
		word := strings.Fields(rest)[1]
		return c, &whenError{off: restOff, msg: fmt.Sprintf("\"is %s\" takes no value", word), hint: "remove what follows it"}
	case strings.HasPrefix(lower, "is one of"):
		c.Op = opOneOf
		list := rest[len("is one of"):]
		listOff := restOff + len("is one of")
		for _, v := range splitList(list) {
			if v == "" {
				return c, &whenError{off: listOff, msg: "an empty value in the list after \"is one of\"", hint: "separate values with commas: ES, MX, AR"}
			}
			c.Values = append(c.Values, v)
		}
		if len(c.Values) == 0 {
			return c, &whenError{off: restOff, msg: "\"is one of\" needs values", hint: "separate values with commas: ES, MX, AR"}
		}
	case strings.HasPrefix(lower, "is not ") || lower == "is not":
		c.Op = opIsNot
		if err := c.value(rest[len("is not"):], restOff+len("is not"), "is not"); err != nil {
			return c, err
		}
	case strings.HasPrefix(lower, "is ") || lower == "is":
		c.Op = opIs
		if err := c.value(rest[len("is"):], restOff+len("is"), "is"); err != nil {
			return c, err
		}
	case strings.HasPrefix(lower, "contains ") || lower == "contains":
		c.Op = opHas
		if err := c.value(rest[len("contains"):], restOff+len("contains"), "contains"); err != nil {
			return c, err
		}
	default:
		word := strings.Fields(rest)[0]
		hint := expect
		switch strings.ToLower(word) {
		case "=", "==", "equals", "equal", "eq":
			hint = fmt.Sprintf("write %s is %s", text[:attrEnd], strings.TrimSpace(rest[len(word):]))
		case "!=", "<>", "isnt", "isn't", "not":
			hint = fmt.Sprintf("write %s is not %s", text[:attrEnd], strings.TrimSpace(rest[len(word):]))
		case "in":
			hint = fmt.Sprintf("write %s is one of %s", text[:attrEnd], strings.TrimSpace(rest[len(word):]))
		case "has", "includes", "include":
			hint = fmt.Sprintf("write %s contains %s", text[:attrEnd], strings.TrimSpace(rest[len(word):]))
		}
		return c, &whenError{off: restOff, msg: fmt.Sprintf("%q is not a comparison", word), hint: hint}
	}
	return c, nil
}

// value reads the one value after is, is not or contains.
func (c *whenCond) value(s string, off int, op string) *whenError {
	v := strings.TrimSpace(s)
	if v == "" {
		return &whenError{off: off, msg: fmt.Sprintf("%q needs a value", op), hint: fmt.Sprintf("write e.g. %s %s es", c.Attr, op)}
	}
	quoted := false
	if uq, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
		v, quoted = uq, true
	}
	if strings.Contains(v, ",") && c.Op == opIs && !quoted {
		return &whenError{off: off, msg: fmt.Sprintf("%q holds a comma", v), hint: fmt.Sprintf("for several values write %s is one of %s; for one that holds a comma, quote it: %s is %q", c.Attr, v, c.Attr, v)}
	}
	c.Values = []string{strings.ToLower(v)}
	return nil
}

// splitList reads "A, B, C" (values may be quoted, and hold commas
// then: "Acme, Inc.", Globex).
func splitList(s string) []string {
	var out []string
	for _, v := range splitOutsideQuotes(s) {
		v = strings.TrimSpace(v)
		if uq, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
			v = uq
		}
		out = append(out, strings.ToLower(v))
	}
	if len(out) == 1 && out[0] == "" {
		return nil
	}
	return out
}

// splitOutsideQuotes cuts s at the commas outside double quotes (a
// backslash escapes a quote inside them).
func splitOutsideQuotes(s string) []string {
	var out []string
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case inQuote && s[i] == '\\':
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// isAttrWord reports whether s can name a custom attribute.
func isAttrWord(s string) bool {
	for i, r := range s {
		if !(unicode.IsLetter(r) || r == '_' || (i > 0 && (unicode.IsDigit(r) || r == '-'))) {
			return false
		}
	}
	return s != ""
}

// expr renders the condition as an expr-lang condition. Comparisons ignore
// case: "language is ES" matches "es".
func (c whenCond) expr() string {
	q := func(v string) string { return strconv.Quote(v) }
	list := func() string {
		vs := make([]string, len(c.Values))
		for i, v := range c.Values {
			vs[i] = q(v)
		}
		return "[" + strings.Join(vs, ", ") + "]"
	}
	if c.List {
		switch c.Op {
		case opIs, opHas:
			return fmt.Sprintf("any(%s, {lower(#) == %s})", c.Path, q(c.Values[0]))
		case opIsNot:
			return fmt.Sprintf("none(%s, {lower(#) == %s})", c.Path, q(c.Values[0]))
		case opOneOf:
			return fmt.Sprintf("any(%s, {lower(#) in %s})", c.Path, list())
		case opSet:
			return fmt.Sprintf("len(%s) > 0", c.Path)
		default:
			return fmt.Sprintf("len(%s) == 0", c.Path)
		}
	}
	x := c.Path
	if name, ok := strings.CutPrefix(x, attrsPrefix); ok {
		if !exprName(name) {
			// plan-type: not a name expr reads after a dot.
			x = "contact.attrs[" + q(name) + "]"
		}
		x = fmt.Sprintf("string(%s ?? \"\")", x)
	}
	switch c.Op {
	case opIs:
		return fmt.Sprintf("lower(%s) == %s", x, q(c.Values[0]))
	case opIsNot:
		return fmt.Sprintf("lower(%s) != %s", x, q(c.Values[0]))
	case opOneOf:
		return fmt.Sprintf("lower(%s) in %s", x, list())
	case opHas:
		return fmt.Sprintf("lower(%s) contains %s", x, q(c.Values[0]))
	case opSet:
		return fmt.Sprintf("trim(%s) != \"\"", x)
	default:
		return fmt.Sprintf("trim(%s) == \"\"", x)
	}
}

// implies reports whether every customer that meets d also meets c (on the
// same attribute). It is sound, not complete: false means "not sure".
func (c whenCond) impliedBy(d whenCond) bool {
	if c.Path != d.Path {
		return false
	}
	has := func(vs []string, v string) bool { return slices.Contains(vs, v) }
	if c.List {
		switch c.Op {
		case opIs, opHas:
			return (d.Op == opIs || d.Op == opHas) && d.Values[0] == c.Values[0]
		case opOneOf:
			return (d.Op == opIs || d.Op == opHas) && has(c.Values, d.Values[0])
		case opSet:
			return d.Op == opIs || d.Op == opHas || d.Op == opOneOf || d.Op == opSet
		case opEmpty:
			return d.Op == opEmpty
		case opIsNot:
			return d.Op == opIsNot && d.Values[0] == c.Values[0] || d.Op == opEmpty
		}
		return false
	}
	switch c.Op {
	case opIs:
		return d.Op == opIs && d.Values[0] == c.Values[0] || d.Op == opOneOf && len(d.Values) == 1 && d.Values[0] == c.Values[0]
	case opIsNot:
		switch d.Op {
		case opIs:
			return d.Values[0] != c.Values[0]
		case opOneOf:
			return !has(d.Values, c.Values[0])
		case opIsNot:
			return d.Values[0] == c.Values[0]
		case opEmpty:
			return c.Values[0] != ""
		}
	case opOneOf:
		switch d.Op {
		case opIs:
			return has(c.Values, d.Values[0])
		case opOneOf:
			for _, v := range d.Values {
				if !has(c.Values, v) {
					return false
				}
			}
			return true
		}
	case opHas:
		return (d.Op == opIs || d.Op == opHas) && strings.Contains(d.Values[0], c.Values[0]) ||
			d.Op == opOneOf && !slices.ContainsFunc(d.Values, func(v string) bool { return !strings.Contains(v, c.Values[0]) })
	case opSet:
		return d.Op == opIs && strings.TrimSpace(d.Values[0]) != "" || d.Op == opOneOf || d.Op == opHas && d.Values[0] != "" || d.Op == opSet
	case opEmpty:
		return d.Op == opEmpty
	}
	return false
}

// shadows reports whether a row with conditions earlier catches every
// customer a row with conditions later would: each of earlier's conditions
// follows from one of later's.
func shadows(earlier, later []whenCond) bool {
	for _, c := range earlier {
		if !slices.ContainsFunc(later, c.impliedBy) {
			return false
		}
	}
	return true
}

// exprName reports whether expr reads s as one name after a dot: ASCII
// letters, digits and underscores, and not one of its words.
func exprName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	switch s {
	case "", "in", "not", "and", "or", "matches", "contains", "startsWith", "endsWith", "let", "nil", "true", "false", "if", "else":
		return false
	}
	return true
}
