package dsl

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/alecthomas/participle/v2/lexer"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/switchboard-dev/switchboard/triggers"
)

// envNames are the top-level names a condition may use, for suggestions.
var envNames = func() []string {
	var out []string
	t := reflect.TypeFor[triggers.Env]()
	for i := range t.NumField() {
		out = append(out, t.Field(i).Tag.Get("expr"))
	}
	return out
}()

// fieldsOf maps a Go type name as expr prints it ("triggers.Contact") to
// the condition's name for it and its fields, for suggestions.
var fieldsOf = func() map[string]struct {
	name   string
	fields []string
} {
	out := map[string]struct {
		name   string
		fields []string
	}{}
	t := reflect.TypeFor[triggers.Env]()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Struct || f.Type.PkgPath() != t.PkgPath() {
			continue
		}
		var names []string
		for j := range f.Type.NumField() {
			names = append(names, f.Type.Field(j).Tag.Get("expr"))
		}
		out[f.Type.String()] = struct {
			name   string
			fields []string
		}{f.Tag.Get("expr"), names}
	}
	return out
}()

// fragment is a piece of expr-lang source sliced from a rule file.
type fragment struct {
	src   string
	start Pos
}

// fragmentOf slices the source of an expression from the file's code (its
// comments blanked), from its first to its last significant token.
func fragmentOf(f *File, toks []lexer.Token) (fragment, bool) {
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
		return fragment{}, false
	}
	end := last.Pos.Offset + len(last.Value)
	return fragment{src: f.code[first.Pos.Offset:end], start: posOf(first.Pos)}, true
}

// at returns the position of the rune at offset runeOff in the fragment.
func (fr fragment) at(runeOff int) Pos {
	p := fr.start
	n := 0
	for i, r := range fr.src {
		if n == runeOff {
			p.Offset = fr.start.Offset + i
			return p
		}
		if r == '\n' {
			p.Line++
			p.Col = 1
		} else {
			p.Col++
		}
		n++
	}
	p.Offset = fr.start.Offset + len(fr.src)
	return p
}

// call is a use of one of the environment's functions with a literal
// argument, checked once the whole rule set is known.
type call struct {
	fn  string
	arg string
	lit bool // the argument is a string literal
	pos Pos
}

// inspector is an expr patcher: it fills online()'s default argument and
// records function calls and names for the checker.
type inspector struct {
	fr     fragment
	calls  []call
	idents map[string]Pos
}

func (v *inspector) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		switch id.Value {
		case triggers.FuncOnline, triggers.FuncAvailable, triggers.FuncIsOnline, triggers.FuncInSegment, triggers.FuncBusinessHours:
		case triggers.FuncInGroup:
			if len(n.Arguments) == 2 {
				if s, ok := n.Arguments[1].(*ast.StringNode); ok {
					v.calls = append(v.calls, call{fn: id.Value, arg: s.Value, lit: true, pos: v.fr.at(n.Arguments[1].Location().From)})
				}
			}
			return
		default:
			return
		}
		if id.Value == triggers.FuncOnline && len(n.Arguments) == 0 {
			arg := &ast.StringNode{Value: ""}
			arg.SetLocation(n.Location())
			n.Arguments = append(n.Arguments, arg)
			return
		}
		if len(n.Arguments) != 1 {
			return
		}
		c := call{fn: id.Value, pos: v.fr.at(n.Arguments[0].Location().From)}
		if s, ok := n.Arguments[0].(*ast.StringNode); ok {
			c.arg, c.lit = s.Value, true
		}
		v.calls = append(v.calls, c)
	case *ast.IdentifierNode:
		if _, seen := v.idents[n.Value]; !seen {
			v.idents[n.Value] = v.fr.at(n.Location().From)
		}
	}
}

var exprOptions = []expr.Option{expr.Env(triggers.Env{})}

// compileExpr compiles an expr fragment, turning its errors into
// diagnostics at their place in the rule file.
func (c *compiler) compileExpr(fr fragment, extra ...expr.Option) (*inspector, *vm.Program) {
	insp := &inspector{fr: fr, idents: map[string]Pos{}}
	opts := append(slices.Clip(exprOptions), expr.Patch(insp))
	prog, err := expr.Compile(fr.src, append(opts, extra...)...)
	if err != nil {
		c.exprError(fr, err)
		return insp, nil
	}
	for _, cl := range insp.calls {
		c.checkCall(cl)
	}
	return insp, prog
}

// exprError reports an expr compile error in the rule file's coordinates.
func (c *compiler) exprError(fr fragment, err error) {
	var fe *file.Error
	pos := fr.start
	msg := err.Error()
	if errors.As(err, &fe) {
		pos = fr.at(fe.From)
		msg = fe.Message
	}
	msg, hint := plainExprMessage(msg)
	c.d.errorf(pos, CodeCondition, hint, "%s", msg)
}

var (
	reUnknownName = regexp.MustCompile(`^unknown name (\S+)$`)
	reNoField     = regexp.MustCompile(`^type (\S+) has no field (\S+)$`)
	reMismatch    = regexp.MustCompile(`^invalid operation: (\S+) \(mismatched types (\S+) and (\S+)\)$`)
	reExpected    = regexp.MustCompile(`^expected (\S+), but got (\S+)$`)
	reUnexpected  = regexp.MustCompile(`^unexpected token \w+\("?(.*?)"?\)$`)
)

// plainExprMessage rewords expr's common errors for rule authors.
func plainExprMessage(msg string) (string, string) {
	if m := reUnknownName.FindStringSubmatch(msg); m != nil {
		hint := didYouMean(m[1], envNames)
		if hint == "" {
			hint = fmt.Sprintf("to compare with the text %s, quote it: '%s'; conditions see message, contact, conversation, agent, now, lang, channel, text, country and the functions online, is_online, available, in_segment, business_hours", m[1], m[1])
		}
		return fmt.Sprintf("unknown name %q", m[1]), hint
	}
	if m := reNoField.FindStringSubmatch(msg); m != nil {
		if obj, ok := fieldsOf[m[1]]; ok {
			hint := didYouMean(m[2], obj.fields)
			if hint == "" {
				hint = fmt.Sprintf("%s has %s", obj.name, strings.Join(obj.fields, ", "))
			}
			if obj.name == "contact" && hint == "" {
				hint += "; custom attributes are contact.attrs." + m[2]
			}
			return fmt.Sprintf("%s has no field %q", obj.name, m[2]), hint
		}
		return fmt.Sprintf("%s has no field %q", m[1], m[2]), ""
	}
	if m := reMismatch.FindStringSubmatch(msg); m != nil {
		hint := ""
		if (m[2] == "string") != (m[3] == "string") {
			hint = "quote text values, e.g. 'fr'"
		}
		return fmt.Sprintf("cannot use %s between %s and %s", m[1], m[2], m[3]), hint
	}
	if m := reUnexpected.FindStringSubmatch(msg); m != nil {
		hint := ""
		if m[1] == "=" {
			hint = "compare with == (one = is not a comparison)"
		}
		return fmt.Sprintf("unexpected %q in the expression", m[1]), hint
	}
	if m := reExpected.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("the value must be %s, but this is %s", m[1], m[2]), ""
	}
	return msg, ""
}

// condition compiles a rule's or segment's condition.
func (c *compiler) condition(f *File, x *exprAST, wherePos Pos, kind triggers.Kind) *Condition {
	fr, ok := fragmentOf(f, x.Tokens)
	if !ok {
		c.d.errorf(wherePos, CodeCondition, "write a condition such as lang == 'fr', or remove where", "empty condition after where")
		return nil
	}
	insp, prog := c.compileExpr(fr)
	if prog == nil {
		return nil
	}
	cond := &Condition{Source: tidy(fr.src), Pos: fr.start, Program: prog}
	if t := prog.Node().Type(); t != nil && t.Kind() != reflect.Bool && t.Kind() != reflect.Interface {
		c.d.errorf(fr.start, CodeNotBool, "compare it, e.g. contact.name != ''", "condition must be true or false, but this is a %s", typeWord(t))
	}
	if !kind.HasAgent() {
		if p, used := insp.idents["agent"]; used {
			c.d.errorf(p, CodeAgentOnlyField, "use conversation.assignee for the conversation's agent", "agent is only set in agent status, offer declined and offer expired rules")
		}
	}
	for _, cl := range insp.calls {
		if cl.fn == triggers.FuncInSegment && cl.lit && !slices.Contains(cond.Segments, cl.arg) {
			cond.Segments = append(cond.Segments, cl.arg)
		}
	}
	c.checkStatuses(fr)
	c.clauses(fr, cond)
	return cond
}

// checkStatuses reports comparisons of a status with a name no agent or
// conversation can have: agent.status == 'lnuch'.
func (c *compiler) checkStatuses(fr fragment) {
	tree, err := parser.Parse(fr.src)
	if err != nil {
		return
	}
	ast.Walk(&tree.Node, visitFunc(func(n *ast.Node) {
		key := indexKey(*n)
		if key == nil {
			return
		}
		var valid []string
		switch key.Field {
		case "agent.status":
			valid = c.team.StatusNames()
		case "agent.presence":
			valid = Statuses
		case "conversation.status", "previous.status":
			valid = triggers.ConversationStatuses
		case "channel", "message.channel", "conversation.channel":
			c.channels = append(c.channels, key.Values...)
			return
		default:
			return
		}
		for _, v := range key.Values {
			if !slices.Contains(valid, v) {
				hint := didYouMean(v, valid)
				if hint == "" {
					hint = key.Field + " is " + orList(valid)
					if key.Field == "agent.status" {
						hint += "; declare your own in team.yaml, e.g. statuses: {" + v + ": away}"
					}
				}
				c.d.errorf(fr.at((*n).Location().From), CodeCondition, hint, "%s is never %q", key.Field, v)
			}
		}
	}))
}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "text (string)"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list"
	case reflect.Map:
		return "map"
	}
	return t.String()
}

// checkCall checks a function's literal argument against the team and the
// segments.
func (c *compiler) checkCall(cl call) {
	switch cl.fn {
	case triggers.FuncInSegment:
		if !cl.lit {
			c.d.errorf(cl.pos, CodeSegment, `write in_segment("NAME")`, "in_segment needs a quoted segment name")
			return
		}
		if c.segments[cl.arg] == nil {
			hint := didYouMean(cl.arg, c.segmentNames)
			if hint == "" {
				hint = `declare it with segment "` + cl.arg + `" where ...`
			}
			c.d.errorf(cl.pos, CodeSegment, hint, "unknown segment %q", cl.arg)
		}
	case triggers.FuncBusinessHours:
		if !cl.lit {
			return
		}
		h, err := ParseHours(cl.arg)
		if err != nil {
			for _, e := range unjoin(err) {
				c.d.errorf(cl.pos, CodeHours, "", "business_hours: %v", e)
			}
			return
		}
		c.hours[cl.arg] = h
	case triggers.FuncOnline, triggers.FuncAvailable, triggers.FuncInGroup:
		if cl.lit && cl.arg != "" {
			c.checkGroup(cl.arg, cl.pos)
		}
	case triggers.FuncIsOnline:
		if cl.lit {
			c.checkUser(cl.arg, cl.pos)
		}
	}
}

// clauses splits a condition at its top-level "and"s and compiles each part
// on its own, with the values it reads, for explain; it also finds the
// condition's index key. Clauses is nil when a part does not compile on its
// own (explain then shows the whole condition).
func (c *compiler) clauses(fr fragment, cond *Condition) {
	tree, err := parser.Parse(fr.src)
	if err != nil {
		return
	}
	var parts []ast.Node
	var split func(n ast.Node)
	split = func(n ast.Node) {
		if b, ok := n.(*ast.BinaryNode); ok && (b.Operator == "&&" || b.Operator == "and") {
			split(b.Left)
			split(b.Right)
			return
		}
		parts = append(parts, n)
	}
	split(tree.Node)
	for _, p := range parts {
		if key := indexKey(p); key != nil {
			cond.Keys = append(cond.Keys, *key)
		}
	}
	out := make([]*Clause, 0, len(parts))
	for _, p := range parts {
		src := p.String()
		prog, err := compileQuiet(src)
		if err != nil {
			return
		}
		cl := &Clause{Source: src, Pos: fr.at(leftmost(p)), Program: prog}
		for _, op := range operands(p) {
			if prog, err := compileQuiet(op); err == nil {
				cl.Operands = append(cl.Operands, &Expr{Source: op, Program: prog})
			}
		}
		out = append(out, cl)
	}
	cond.Clauses = out
}

// compileQuiet compiles a fragment that is already known to type-check as
// part of a larger condition.
func compileQuiet(src string) (*vm.Program, error) {
	return expr.Compile(src, append(slices.Clip(exprOptions), expr.Patch(&inspector{fr: fragment{src: src}, idents: map[string]Pos{}}))...)
}

// indexKey recognises FIELD == 'v', 'v' == FIELD and FIELD in ['a', 'b'].
func indexKey(n ast.Node) *IndexKey {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	switch b.Operator {
	case "==":
		field, lit := b.Left, b.Right
		if _, isLit := field.(*ast.StringNode); isLit {
			field, lit = lit, field
		}
		s, ok := lit.(*ast.StringNode)
		if name := fieldPath(field); ok && name != "" {
			return &IndexKey{Field: name, Values: []string{s.Value}}
		}
	case "in":
		arr, ok := b.Right.(*ast.ArrayNode)
		name := fieldPath(b.Left)
		if !ok || name == "" || len(arr.Nodes) == 0 {
			return nil
		}
		key := &IndexKey{Field: name}
		for _, e := range arr.Nodes {
			s, ok := e.(*ast.StringNode)
			if !ok {
				return nil
			}
			if !slices.Contains(key.Values, s.Value) {
				key.Values = append(key.Values, s.Value)
			}
		}
		return key
	}
	return nil
}

// fieldPath returns "contact.lang" for a member chain naming one of the
// indexable text fields, else "".
func fieldPath(n ast.Node) string {
	var parts []string
	for {
		switch x := n.(type) {
		case *ast.IdentifierNode:
			parts = append(parts, x.Value)
			slices.Reverse(parts)
			path := strings.Join(parts, ".")
			if _, ok := triggers.StringFields[path]; ok {
				return path
			}
			return ""
		case *ast.MemberNode:
			prop, ok := x.Property.(*ast.StringNode)
			if !ok || x.Method || x.Optional {
				return ""
			}
			parts = append(parts, prop.Value)
			n = x.Node
		default:
			return ""
		}
	}
}

// operands lists, in order of appearance and once each, the environment
// values a clause reads: whole member chains (contact.attrs.plan) and calls
// of the environment's functions (online("Sales")).
func operands(n ast.Node) []string {
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	var walk func(n ast.Node, inPredicate bool)
	walk = func(n ast.Node, inPredicate bool) {
		switch x := n.(type) {
		case *ast.IdentifierNode:
			if !inPredicate && slices.Contains(envNames, x.Value) {
				add(x.Value)
			}
			return
		case *ast.MemberNode:
			if root := memberRoot(x); root != nil && !x.Method {
				if !inPredicate && slices.Contains(envNames, root.Value) {
					add(x.String())
				}
				return
			}
		case *ast.CallNode:
			if id, ok := x.Callee.(*ast.IdentifierNode); ok && slices.Contains(envFuncs, id.Value) {
				if !inPredicate {
					add(x.String())
				}
				return
			}
		case *ast.PredicateNode:
			walk(x.Node, true)
			return
		}
		for _, child := range children(n) {
			walk(child, inPredicate)
		}
	}
	walk(n, false)
	return out
}

var envFuncs = []string{triggers.FuncOnline, triggers.FuncIsOnline, triggers.FuncAvailable, triggers.FuncInSegment, triggers.FuncBusinessHours, triggers.FuncInGroup}

// memberRoot returns the identifier a chain of plain field accesses starts
// from, or nil when the chain holds an index, a method or a call.
func memberRoot(m *ast.MemberNode) *ast.IdentifierNode {
	var n ast.Node = m
	for {
		switch x := n.(type) {
		case *ast.MemberNode:
			if _, ok := x.Property.(*ast.StringNode); !ok || x.Method {
				return nil
			}
			n = x.Node
		case *ast.IdentifierNode:
			return x
		default:
			return nil
		}
	}
}

// children returns a node's direct children.
func children(n ast.Node) []ast.Node {
	var out []ast.Node
	switch x := n.(type) {
	case *ast.UnaryNode:
		out = append(out, x.Node)
	case *ast.BinaryNode:
		out = append(out, x.Left, x.Right)
	case *ast.ChainNode:
		out = append(out, x.Node)
	case *ast.MemberNode:
		out = append(out, x.Node, x.Property)
	case *ast.SliceNode:
		out = append(out, x.Node)
		if x.From != nil {
			out = append(out, x.From)
		}
		if x.To != nil {
			out = append(out, x.To)
		}
	case *ast.CallNode:
		out = append(out, x.Callee)
		out = append(out, x.Arguments...)
	case *ast.BuiltinNode:
		out = append(out, x.Arguments...)
	case *ast.PredicateNode:
		out = append(out, x.Node)
	case *ast.ConditionalNode:
		out = append(out, x.Cond, x.Exp1, x.Exp2)
	case *ast.ArrayNode:
		out = append(out, x.Nodes...)
	case *ast.MapNode:
		for _, p := range x.Pairs {
			out = append(out, p)
		}
	case *ast.PairNode:
		out = append(out, x.Key, x.Value)
	}
	return out
}

// leftmost returns the smallest source offset in a node's subtree: the
// start of the clause as written.
func leftmost(n ast.Node) int {
	from := n.Location().From
	ast.Walk(&n, visitFunc(func(m *ast.Node) {
		if f := (*m).Location().From; f < from {
			from = f
		}
	}))
	return from
}

type visitFunc func(*ast.Node)

func (f visitFunc) Visit(n *ast.Node) { f(n) }

// tidy drops the blanks left where comments were: trailing spaces and
// lines that held only a comment.
func tidy(src string) string {
	if !strings.Contains(src, "\n") {
		return strings.TrimRight(src, " \t")
	}
	lines := strings.Split(src, "\n")
	out := lines[:0]
	for _, l := range lines {
		if l = strings.TrimRight(l, " \t\r"); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// unjoin flattens errors joined with errors.Join, so each is reported on
// its own.
func unjoin(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, unjoin(e)...)
	}
	return out
}
