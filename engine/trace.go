package engine

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Trace is why an event went where it went: every rule that could run,
// matched or not and why, every action and its outcome, and for group
// assigns every member and why it was or was not chosen.
type Trace struct {
	Event    string   `json:"event"`
	Type     string   `json:"type"`
	At       string   `json:"at"`
	Notes    []string `json:"notes,omitempty"`
	Steps    []*Step  `json:"steps"`
	Decision Decision `json:"decision"`
}

// Step is one trigger's rules, an unanswered timer, or waiting work placed.
type Step struct {
	Trigger string       `json:"trigger"`
	Rules   []*RuleTrace `json:"rules,omitempty"`
	Placed  []string     `json:"placed,omitempty"`
}

// RuleTrace is one rule's evaluation.
type RuleTrace struct {
	Rule    string `json:"rule"`
	Pos     string `json:"pos"`
	Matched bool   `json:"matched"`
	// Why the rule did not match: its first false clause and the values
	// that clause saw, or the error it ran into.
	Clause  string         `json:"clause,omitempty"`
	Values  []Value        `json:"values,omitempty"`
	Error   string         `json:"error,omitempty"`
	Skipped string         `json:"skipped,omitempty"`
	Actions []*ActionTrace `json:"actions,omitempty"`
}

// Value is an operand of a clause and what it was.
type Value struct {
	Expr  string `json:"expr"`
	Value string `json:"value"`
}

// ActionTrace is one action and what came of it.
type ActionTrace struct {
	Action  string        `json:"action"`
	Outcome string        `json:"outcome"`
	Members []MemberTrace `json:"members,omitempty"`
	Else    *ActionTrace  `json:"else,omitempty"`
}

// MemberTrace is one group member and why it was or was not chosen.
type MemberTrace struct {
	Agent  string `json:"agent"`
	Chosen bool   `json:"chosen,omitempty"`
	Reason string `json:"reason"`
}

func (at *ActionTrace) set(outcome string) {
	if at != nil && at.Outcome == "" {
		at.Outcome = outcome
	}
}

func (t *Trace) note(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}

func (e *Engine) beginStep(name string) *Step {
	s := &Step{Trigger: name}
	e.trace.Steps = append(e.trace.Steps, s)
	e.step = s
	return s
}

func (e *Engine) traceRule(r *dsl.Rule, ctx *evalCtx) *RuleTrace {
	rt := &RuleTrace{Rule: r.Name, Pos: r.Pos.String()}
	if ctx.stopped {
		rt.Skipped = "not run: an earlier rule stopped the event"
	}
	e.step.Rules = append(e.step.Rules, rt)
	return rt
}

// explainMatch records why a rule matched or not: the first false clause
// and the values it saw.
func (e *Engine) explainMatch(rt *RuleTrace, r *dsl.Rule, ok bool, err error) {
	rt.Matched = ok
	if ok || r.When == nil {
		return
	}
	if err != nil {
		rt.Error = err.Error()
	}
	for _, cl := range r.When.Clauses {
		out, err := e.vm.Run(cl.Program, e.box)
		if err == nil && out == true {
			continue
		}
		rt.Clause = cl.Source
		if err != nil {
			rt.Error = err.Error()
		}
		for _, op := range cl.Operands {
			v, err := e.vm.Run(op.Program, e.box)
			text := formatValue(v)
			if err != nil {
				text = "error: " + err.Error()
			}
			rt.Values = append(rt.Values, Value{Expr: op.Source, Value: text})
		}
		return
	}
	rt.Clause = r.When.Source
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return strconv.Quote(x)
	case time.Time:
		return x.Format(time.RFC3339)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return fmt.Sprint(v)
}

// describe renders an action as rule text.
func describe(a dsl.Action) string {
	if s, ok := a.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", a)
}

// explainMembers says, for every member of the group, why it was or was
// not chosen.
func (e *Engine) explainMembers(v *actions.View, a *dsl.Assign, chosen, except *actions.Agent, excluded []*actions.Agent) []MemberTrace {
	g := v.Group()
	ch := v.Want().Channel
	out := make([]MemberTrace, 0, len(g.Members))
	for _, m := range g.Members {
		mt := MemberTrace{Agent: m.ID}
		switch {
		case m == except:
			mt.Reason = "is the conversation's current agent"
		case slices.Contains(excluded, m):
			mt.Reason = "left out: declined or missed an offer of this conversation, or went offline holding one"
		case !presentFor(a, m):
			mt.Reason = m.Status
			if m.Status != m.Presence {
				mt.Reason += " (" + m.Presence + ")"
			}
		case !m.HasSkills(a.Skills):
			for _, s := range a.Skills {
				if !m.HasSkills([]string{s}) {
					mt.Reason = "missing skill " + s
					break
				}
			}
		case m.TakesNone(ch):
			mt.Reason = fmt.Sprintf("takes no conversations on channel %q (no capacity for it in team.yaml)", ch)
		case !m.Fits(a.Cost, ch) && m.LoadOn(ch) >= m.CapacityOn(ch):
			mt.Reason = "full " + loadText(m, ch)
		case !m.Fits(a.Cost, ch):
			mt.Reason = fmt.Sprintf("no room: %s in use, needs %s", loadText(m, ch), units(m.CostOf(a.Cost, ch)))
		case e.pool.Limited(m, a.Limit, a.LimitPer):
			mt.Reason = fmt.Sprintf("reached the limit of %d per %s; budget back at %s", a.Limit, dsl.FormatDuration(a.LimitPer),
				e.pool.LimitedUntil(m, a.Limit, a.LimitPer).UTC().Format(time.RFC3339))
		case m == chosen:
			mt.Chosen = true
			mt.Reason = "chosen: " + merit(e.pool, a.Algorithm, m, ch)
		default:
			switch a.Algorithm {
			case dsl.RoundRobin:
				mt.Reason = "not next in turn"
			case dsl.Random:
				mt.Reason = "not drawn"
			default:
				mt.Reason = "eligible, but " + merit(e.pool, a.Algorithm, m, ch)
			}
		}
		out = append(out, mt)
	}
	return out
}

// merit is what an algorithm looks at in a member.
func merit(pool *actions.Pool, alg dsl.Algorithm, m *actions.Agent, ch string) string {
	idle := "never active"
	if !m.LastActive.IsZero() {
		idle = "last active " + m.LastActive.UTC().Format(time.RFC3339)
	}
	switch alg {
	case dsl.RoundRobin:
		return "next in turn"
	case dsl.Random:
		return "drawn at random"
	case dsl.LongestIdle:
		return idle
	case dsl.LeastActive:
		if m.PerChannel {
			return fmt.Sprintf("%d open on %s, %s", m.OpenOn(ch), channelName(ch), idle)
		}
		return fmt.Sprintf("%d open, %s", m.Open, idle)
	case dsl.MostAvailable:
		if !m.PerChannel && m.Capacity == 0 {
			return "unlimited capacity, " + idle
		}
		if m.PerChannel {
			return fmt.Sprintf("%s free on %s, %s", units(m.Spare(ch)), channelName(ch), idle)
		}
		return fmt.Sprintf("%s free, %s", units(m.Spare(ch)), idle)
	case dsl.Fair:
		switch n := pool.AssignedAgo(m); n {
		case 0:
			return "never assigned"
		case 1:
			return "had the last assignment"
		default:
			return fmt.Sprintf("last assigned %d assignments ago", n)
		}
	case dsl.FewestServed:
		return fmt.Sprintf("%d served since coming online, %s", m.Served, idle)
	case dsl.LongestFree:
		switch f := m.FreeSince(); {
		case !m.Busy():
			return "never busy"
		case f.IsZero():
			return "free since the start"
		default:
			return "free since " + f.UTC().Format(time.RFC3339)
		}
	}
	return ""
}

// loadText renders "3/4" (units in use of capacity), or "whatsapp 3/3"
// for an agent with a budget per channel.
func loadText(a *actions.Agent, ch string) string {
	if a.PerChannel {
		return channelName(ch) + " " + units(a.LoadOn(ch)) + "/" + units(a.CapacityOn(ch))
	}
	if a.Capacity == 0 {
		return units(a.Load) + "/unlimited"
	}
	return units(a.Load) + "/" + units(a.Capacity)
}

// channelName names a channel in explanations.
func channelName(ch string) string {
	if ch == "" {
		return "(no channel)"
	}
	return ch
}

func units(v int64) string {
	return strconv.FormatFloat(float64(v)/actions.Unit, 'f', -1, 64)
}

// placeholderFields are the text placeholders an environment can fill.
var placeholderFields = func() map[string]func(*triggers.Env) string {
	m := maps.Clone(triggers.StringFields)
	m["conversation.priority"] = func(e *triggers.Env) string { return strconv.Itoa(e.Conversation.Priority) }
	return m
}()

// WriteText renders the trace for people.
func (t *Trace) WriteText(w io.Writer) {
	fmt.Fprintf(w, "event %s: %s at %s\n", t.Event, t.Type, t.At)
	for _, n := range t.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	for _, s := range t.Steps {
		fmt.Fprintf(w, "\n%s\n", s.Trigger)
		if len(s.Rules) == 0 && len(s.Placed) == 0 {
			fmt.Fprintln(w, "  no rules")
		}
		for _, r := range s.Rules {
			status := "not matched"
			switch {
			case r.Skipped != "":
				status = r.Skipped
			case r.Matched:
				status = "matched"
			}
			fmt.Fprintf(w, "  rule %q (%s): %s\n", r.Rule, r.Pos, status)
			if !r.Matched && r.Skipped == "" {
				if r.Clause != "" {
					fmt.Fprintf(w, "    false: %s\n", r.Clause)
				}
				for _, v := range r.Values {
					fmt.Fprintf(w, "      %s = %s\n", v.Expr, v.Value)
				}
				if r.Error != "" {
					fmt.Fprintf(w, "    error: %s\n", r.Error)
				}
			}
			for _, a := range r.Actions {
				writeAction(w, a, "    ")
			}
		}
		for _, p := range s.Placed {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	fmt.Fprintf(w, "\ndecision: %s\n", t.Decision.AppendJSON(nil))
}

func writeAction(w io.Writer, a *ActionTrace, indent string) {
	fmt.Fprintf(w, "%s%s: %s\n", indent, a.Action, a.Outcome)
	for _, m := range a.Members {
		mark := " "
		if m.Chosen {
			mark = "*"
		}
		fmt.Fprintf(w, "%s  %s %-12s %s\n", indent, mark, m.Agent, m.Reason)
	}
	if a.Else != nil {
		writeAction(w, a.Else, indent+"  ")
	}
}

// Explain decides the event like Decide and also returns the trace of why.
func (e *Engine) Explain(ev *triggers.Event) (Decision, *Trace, error) {
	return e.explain(ev, ev.At, false)
}

// ExplainAt is Explain on the caller's clock, as DecideAt.
func (e *Engine) ExplainAt(ev *triggers.Event, now time.Time) (Decision, *Trace, error) {
	return e.explain(ev, now, true)
}

func (e *Engine) explain(ev *triggers.Event, now time.Time, reported bool) (Decision, *Trace, error) {
	e.trace = &Trace{Event: ev.ID, Type: ev.Type}
	defer func() { e.trace, e.step = nil, nil }()
	d, err := e.decide(ev, now, reported)
	if err != nil {
		return d, nil, err
	}
	t := e.trace
	t.At = e.clock.UTC().Format(time.RFC3339)
	t.Decision = Decision{Event: d.Event, Conversation: d.Conversation, Actions: append([]Action(nil), d.Actions...)}
	return d, t, nil
}
