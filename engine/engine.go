package engine

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/expr-lang/expr/vm"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/suggest"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Options tune an engine.
type Options struct {
	// Seed drives the random algorithm; the same seed gives the same picks.
	Seed uint64
}

// Engine decides events against one rule set and its live state.
type Engine struct {
	rs    *dsl.RuleSet
	seed  uint64
	pool  *actions.Pool
	clock time.Time
	// reported is the current event's own time (message.at): the clock,
	// unless the engine runs on a caller's clock (DecideAt).
	reported time.Time
	seq      uint64

	contacts   contactSet
	convs      map[string]*conversation
	groupLines map[*actions.Group]*actions.Line
	agentLines map[*actions.Agent]*actions.Line
	timers     timerHeap
	offers     offerHeap

	index      [triggers.NumKinds]ruleIndex
	unanswered []*dsl.Rule
	inactive   []*dsl.Rule
	ruleOrder  map[*dsl.Rule]int

	// Evaluation: one boxed environment refilled per event (see envBox),
	// one VM, and one more VM per level of segments within segments.
	box     any
	env     *triggers.Env
	base    triggers.Env
	vm      vm.VM
	segVMs  []*vm.VM
	segMemo []int8
	hours   *lru.Cache[string, *dsl.Hours]
	cands   []int32

	stats    runStats
	deciding string // the id of the event being decided

	// Free lists: closed conversations and spent timers are reused, so that
	// a steady stream of conversations allocates nothing.
	freeConvs  []*conversation
	freeTimers []*timer
	timerGroup []*timer
	// kept lists the closed conversations kept for reopening, in the
	// order they closed, from keptHead on: let go once reopen_within has
	// passed, whether or not their contact comes back.
	kept     []keptConv
	keptHead int
	// lastSnapshot is the size of the latest snapshot, to size the next.
	lastSnapshot int

	// Per decision.
	out   []Action
	dirty []*actions.Agent
	trace *Trace
	step  *Step
}

// New builds an engine for a compiled rule set, its team in its initial
// state.
func New(rs *dsl.RuleSet, opts Options) *Engine {
	e := &Engine{
		rs:         rs,
		seed:       opts.Seed,
		pool:       actions.NewPool(rs.Team, rs.Rules, opts.Seed),
		contacts:   contactSet{byID: map[string]*contact{}},
		convs:      map[string]*conversation{},
		groupLines: map[*actions.Group]*actions.Line{},
		agentLines: map[*actions.Agent]*actions.Line{},
		ruleOrder:  map[*dsl.Rule]int{},
		segMemo:    make([]int8, len(rs.Segments)),
	}
	e.hours, _ = lru.New[string, *dsl.Hours](256)
	e.stats.agents = map[*actions.Agent]*agentStats{}
	for _, a := range e.pool.Agents {
		e.stats.agents[a] = &agentStats{}
	}
	byKind := make([][]*dsl.Rule, triggers.NumKinds)
	for i, r := range rs.Rules {
		e.ruleOrder[r] = i
		switch r.Trigger.Kind {
		case triggers.ConversationUnanswered:
			e.unanswered = append(e.unanswered, r)
			continue
		case triggers.ConversationInactive:
			e.inactive = append(e.inactive, r)
			continue
		}
		byKind[r.Trigger.Kind] = append(byKind[r.Trigger.Kind], r)
	}
	for kind, rules := range byKind {
		e.index[kind].build(rules)
	}
	e.box, e.env = newEnvBox()
	e.base = triggers.Env{
		Online:        e.pool.OnlineCount,
		IsOnline:      e.isOnline,
		Available:     e.available,
		InSegment:     e.inSegment,
		BusinessHours: e.businessHours,
		InGroup:       e.inGroup,
	}
	*e.env = e.base
	return e
}

// RuleSet returns the rule set the engine runs.
func (e *Engine) RuleSet() *dsl.RuleSet { return e.rs }

// newEnvBox returns an interface holding a triggers.Env and a pointer to
// that very value. Conditions run on the interface: expr reads the fields
// of a struct passed by value without copying them to the heap, and since
// the box is allocated once and refilled in place, running a condition
// allocates nothing. The box comes from reflect.New so that it is a real
// heap value of its own (a zero composite literal converted to an interface
// may share read-only memory).
func newEnvBox() (any, *triggers.Env) {
	box := reflect.New(reflect.TypeFor[triggers.Env]()).Elem().Interface()
	type eface struct{ typ, data unsafe.Pointer }
	return box, (*triggers.Env)((*eface)(unsafe.Pointer(&box)).data)
}

// ruleIndex holds one trigger's rules, indexed by their key clause.
type ruleIndex struct {
	rules  []*dsl.Rule
	always []int32
	fields []fieldIndex
}

type fieldIndex struct {
	name    string
	get     func(*triggers.Env) string
	byValue map[string][]int32
}

// build indexes one trigger's rules. Each rule is filed under one of its
// key clauses: the one on the field with the most distinct values among the
// trigger's rules, whose buckets are the smallest.
func (x *ruleIndex) build(rules []*dsl.Rule) {
	distinct := map[string]map[string]bool{}
	for _, r := range rules {
		if r.When == nil {
			continue
		}
		for _, k := range r.When.Keys {
			if distinct[k.Field] == nil {
				distinct[k.Field] = map[string]bool{}
			}
			for _, v := range k.Values {
				distinct[k.Field][v] = true
			}
		}
	}
	for _, r := range rules {
		var best *dsl.IndexKey
		if r.When != nil {
			for i := range r.When.Keys {
				k := &r.When.Keys[i]
				if best == nil || len(distinct[k.Field])*len(best.Values) > len(distinct[best.Field])*len(k.Values) {
					best = k
				}
			}
		}
		x.add(r, best)
	}
}

func (x *ruleIndex) add(r *dsl.Rule, key *dsl.IndexKey) {
	pos := int32(len(x.rules))
	x.rules = append(x.rules, r)
	if key == nil {
		x.always = append(x.always, pos)
		return
	}
	i := slices.IndexFunc(x.fields, func(f fieldIndex) bool { return f.name == key.Field })
	if i < 0 {
		x.fields = append(x.fields, fieldIndex{name: key.Field, get: triggers.StringFields[key.Field], byValue: map[string][]int32{}})
		i = len(x.fields) - 1
	}
	for _, v := range key.Values {
		x.fields[i].byValue[v] = append(x.fields[i].byValue[v], pos)
	}
}

// candidates appends, in rule order, the rules whose key clause holds for
// env: the only ones whose condition can be true.
func (x *ruleIndex) candidates(env *triggers.Env, buf []int32) []int32 {
	buf = append(buf[:0], x.always...)
	for i := range x.fields {
		f := &x.fields[i]
		buf = append(buf, f.byValue[f.get(env)]...)
	}
	if len(x.fields) > 0 {
		slices.Sort(buf)
	}
	return buf
}

func (e *Engine) isOnline(id string) bool {
	a := e.pool.Agent(id)
	return a != nil && a.Online()
}

// available counts the group's members who could take a conversation on
// the event's channel now.
func (e *Engine) available(group string) int { return e.pool.AvailableCount(group, e.env.Channel) }

func (e *Engine) inGroup(agent, group string) bool {
	a, g := e.pool.Agent(agent), e.pool.Group(group)
	return a != nil && g != nil && g.Has(a)
}

// inSegment evaluates a segment's condition on the current environment,
// once per environment.
func (e *Engine) inSegment(name string) bool {
	s := e.rs.Segment(name)
	if s == nil || s.When == nil {
		return false
	}
	switch e.segMemo[s.Index] {
	case 1:
		return true
	case 2:
		return false
	}
	// A segment can use other segments: each level needs its own VM.
	depth := 0
	for depth < len(e.segVMs) && e.segVMs[depth] == nil {
		depth++
	}
	var m *vm.VM
	if depth < len(e.segVMs) {
		m, e.segVMs[depth] = e.segVMs[depth], nil
		defer func() { e.segVMs[depth] = m }()
	} else {
		m = new(vm.VM)
		e.segVMs = append(e.segVMs, nil)
		defer func() { e.segVMs[depth] = m }()
	}
	out, err := m.Run(s.When.Program, e.box)
	in := err == nil && out == true
	e.segMemo[s.Index] = 2
	if in {
		e.segMemo[s.Index] = 1
	}
	return in
}

func (e *Engine) businessHours(spec string) bool {
	h := e.rs.Hours[spec]
	if h == nil {
		var ok bool
		if h, ok = e.hours.Get(spec); !ok {
			parsed, err := dsl.ParseHours(spec)
			if err != nil {
				return false
			}
			h = parsed
			e.hours.Add(spec, h)
		}
	}
	return h.Contains(e.env.Now)
}

// runStats accumulate what Stats reports.
type runStats struct {
	agents    map[*actions.Agent]*agentStats
	waited    int
	waitTotal time.Duration
	waitMax   time.Duration
	// Since StartRun: every wait, and every rule's matches by name.
	waits   []time.Duration
	matched map[string]int
	// Conditions that failed at run time, by rule, since the engine
	// began (and taken by TakeFailures).
	failures []*CondFailure
}

// CondFailure is a rule whose condition failed at run time, and so did
// not match: a custom attribute of an unexpected type, say
// (contact.attrs.n % 2 on a number sent as 2.0).
type CondFailure struct {
	Rule  string
	Pos   dsl.Pos
	Count int    // how many evaluations failed
	Event string // the first event it failed on
	Err   string // and why, in one line
}

// failed counts a failure of r's condition on the event being decided.
func (e *Engine) failed(r *dsl.Rule, err error) {
	for _, f := range e.stats.failures {
		if f.Rule == r.Name {
			f.Count++
			return
		}
	}
	why, _, _ := strings.Cut(err.Error(), "\n") // not expr's source excerpt
	e.stats.failures = append(e.stats.failures, &CondFailure{Rule: r.Name, Pos: r.Pos, Count: 1, Event: e.deciding, Err: why})
}

// TakeFailures returns the conditions that failed at run time since the
// last call, and forgets them.
func (e *Engine) TakeFailures() []CondFailure {
	if len(e.stats.failures) == 0 {
		return nil
	}
	out := make([]CondFailure, len(e.stats.failures))
	for i, f := range e.stats.failures {
		out[i] = *f
	}
	e.stats.failures = nil
	return out
}

type agentStats struct {
	assigned int
	peak     int64
}

// evalCtx is what one evaluation is about, and what it has done so far.
type evalCtx struct {
	conv    *conversation
	contact *contact
	msg     triggers.EventMessage
	hasMsg  bool
	channel string
	to      string
	agent   *actions.Agent // agent status rules; message.sent's writer
	opened  bool           // the event opened the conversation
	placed  bool           // an action of this event placed it
	stopped bool
	row     bool // a mapping table row matched
	// reopened: the event's message reopened a closed conversation.
	reopened bool
	// offered: offer declined and offer expired rules, whose agent is the
	// one who declined or missed the offer.
	offered bool
	// prev is the conversation before a conversation.updated event.
	prev *triggers.Previous
}

// setEnv refills the boxed environment for ctx.
func (e *Engine) setEnv(ctx *evalCtx) {
	env := e.env
	*env = e.base
	env.Now = e.clock
	if c := ctx.contact; c != nil {
		env.Contact = triggers.Contact{ID: c.id, Name: c.name, Email: c.email, Phone: c.phone, Lang: c.lang.String(),
			Country: c.country.String(), Owner: c.owner.String(), IsNew: c.conversations == 0, Tags: c.tags, Attrs: c.attrs}
		if ctx.conv != nil {
			env.Contact.IsNew = ctx.conv.contactNew
		}
		env.Country = env.Contact.Country
	}
	if v := ctx.conv; v != nil {
		env.Conversation = triggers.Conversation{ID: v.id, Status: v.status, Channel: v.channel, To: v.to,
			Priority: v.priority, IsNew: ctx.opened, CreatedAt: v.createdAt}
		if len(v.tags) > 0 { // no tags are nil, whether or not the conversation was recycled
			env.Conversation.Tags = v.tags
		}
		if v.assignee != nil {
			env.Conversation.Assignee = v.assignee.ID // on close: who had it
		}
		env.Conversation.Attrs = v.attrs
		env.Conversation.Reopened = ctx.reopened
		env.Conversation.AssigneeGroup = v.group
		if v.waiting != nil {
			env.Conversation.WaitingSince = v.waiting.Since
		}
	}
	if ctx.prev != nil {
		env.Previous = *ctx.prev
	}
	if ctx.hasMsg {
		m := &ctx.msg
		env.Message = triggers.Message{ID: m.ID, Text: m.Text, Lang: m.Lang, Channel: ctx.channel, To: ctx.to, At: e.reported}
		var contactAddr string
		if ctx.contact != nil {
			contactAddr = ctx.contact.phone
			if contactAddr == "" {
				contactAddr = ctx.contact.id
			}
		}
		if ctx.agent != nil { // an outgoing message: the agent wrote to the contact
			env.Message.From, env.Message.To = ctx.agent.ID, contactAddr
		} else {
			env.Message.From = contactAddr
		}
		env.Text = m.Text
	}
	env.Channel = ctx.channel
	env.Lang = env.Message.Lang
	if env.Lang == "" {
		env.Lang = env.Contact.Lang
	}
	if a := ctx.agent; a != nil {
		env.Agent = triggers.Agent{ID: a.ID, Status: a.Status, Presence: a.Presence, Declined: a.Declined, MissedInARow: a.MissedInARow}
	}
	clear(e.segMemo)
}

// match runs a rule's condition. A condition that fails at run time (a
// custom attribute of an unexpected type, say) does not match; the trace
// says why.
func (e *Engine) match(r *dsl.Rule) (bool, error) {
	if r.When == nil {
		return true, nil
	}
	out, err := e.vm.Run(r.When.Program, e.box)
	if err != nil {
		return false, err
	}
	return out == true, nil
}

// run evaluates one trigger's rules for ctx, in file order.
func (e *Engine) run(kind triggers.Kind, ctx *evalCtx) { e.runStep(kind, ctx, kind.String()) }

// runStep is run, with the trace's step for the rules named step; "" for
// the step already begun.
func (e *Engine) runStep(kind triggers.Kind, ctx *evalCtx, step string) {
	if ctx.stopped {
		return
	}
	x := &e.index[kind]
	if len(x.rules) == 0 {
		return
	}
	e.setEnv(ctx)
	if e.trace != nil {
		if step != "" {
			e.beginStep(step)
		}
		for _, r := range x.rules {
			e.runRule(r, ctx)
		}
		return
	}
	e.cands = x.candidates(e.env, e.cands)
	for _, i := range e.cands {
		if ctx.stopped {
			return
		}
		e.runRule(x.rules[i], ctx)
	}
}

func (e *Engine) runRule(r *dsl.Rule, ctx *evalCtx) {
	var rt *RuleTrace
	if e.trace != nil {
		rt = e.traceRule(r, ctx)
		if ctx.stopped {
			return
		}
	}
	// A mapping table row acts only while the conversation is unplaced
	// (the rules keep precedence), and only the first matching row acts.
	if r.Table && (ctx.row || ctx.placed || ctx.conv == nil || ctx.conv.placed()) {
		if rt != nil {
			rt.Skipped = "not run: the rules already placed the conversation"
			if ctx.row {
				rt.Skipped = "not run: an earlier row of the table matched"
			}
		}
		return
	}
	ok, err := e.match(r)
	if rt != nil {
		e.explainMatch(rt, r, ok, err)
	}
	if err != nil {
		e.failed(r, err)
	}
	if !ok {
		return
	}
	if e.stats.matched != nil {
		e.stats.matched[r.Name]++
	}
	if r.Table {
		ctx.row = true
	}
	for _, act := range r.Actions {
		if ctx.stopped {
			if rt != nil {
				rt.Actions = append(rt.Actions, &ActionTrace{Action: describe(act), Outcome: "not run: stopped"})
			}
			continue
		}
		at := e.do(act, r, ctx)
		if rt != nil && at != nil {
			rt.Actions = append(rt.Actions, at)
		}
	}
}

// Decide applies one event and returns the decision. The returned
// Decision's Actions are only valid until the next call. An event that does
// not fit the state (an unknown agent, say) is an error and changes
// nothing.
func (e *Engine) Decide(ev *triggers.Event) (Decision, error) {
	return e.decide(ev, ev.At, false)
}

// DecideAt is Decide on a clock of the caller's: the event happens at now
// (or at the engine's clock, if now is before it), whatever its At says.
// The event's At is only its reported time, which conditions read as
// message.at. A service runs the engine on its own clock so that no client
// can move it.
func (e *Engine) DecideAt(ev *triggers.Event, now time.Time) (Decision, error) {
	return e.decide(ev, now.Round(0), true) // wall time only, as a stored clock reads back
}

func (e *Engine) decide(ev *triggers.Event, t time.Time, reported bool) (Decision, error) {
	if t.Before(e.clock) || t.IsZero() {
		t = e.clock // the clock never goes back
	}
	if err := e.check(ev, t); err != nil {
		return Decision{}, err
	}
	e.deciding = ev.ID
	e.out = e.out[:0]
	e.dirty = e.dirty[:0]
	e.fireTimers(t)
	e.advance(t)
	if e.keptHead < len(e.kept) {
		e.sweepKept()
	}
	if len(e.dirty) > 0 {
		e.drain() // work that a fairness window freed budget for goes first
	}
	e.reported = t
	if reported && !ev.At.IsZero() {
		e.reported = ev.At
	}
	convID := e.apply(ev)
	e.drain()
	return Decision{Event: ev.ID, Conversation: convID, Actions: e.out}, nil
}

// check validates an event happening at t against the state, before
// anything changes.
func (e *Engine) check(ev *triggers.Event, t time.Time) error {
	if err := ev.Validate(false); err != nil {
		return err
	}
	bad := func(field, format string, args ...any) error {
		return &triggers.FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	knownAgent := func() error {
		if e.pool.Agent(ev.Agent) == nil {
			return bad("agent", "unknown agent %q; agents come from team.yaml", ev.Agent)
		}
		return nil
	}
	switch ev.Type {
	case triggers.TypeMessageReceived:
		if ev.Conversation != "" {
			if c := e.convs[ev.Conversation]; c != nil && c.contact.id != ev.Contact.ID {
				return bad("conversation", "conversation %q belongs to contact %q, not %q", ev.Conversation, c.contact.id, ev.Contact.ID)
			}
		} else if c := e.contacts.get(ev.Contact.ID); c == nil || c.openFor(ev.Channel, ev.To) == nil {
			if e.convs[ev.ID] != nil {
				return bad("id", "event id %q would open a conversation, but a conversation with that id is open; give the event a unique id", ev.ID)
			}
		}
	case triggers.TypeMessageSent:
		if err := knownAgent(); err != nil {
			return err
		}
		if ev.Conversation != "" {
			c := e.convs[ev.Conversation]
			if c == nil {
				return bad("conversation", "no open conversation %q", ev.Conversation)
			}
			if ev.Contact != nil && ev.Contact.ID != "" && ev.Contact.ID != c.contact.id {
				return bad("contact.id", "conversation %q belongs to contact %q, not %q", ev.Conversation, c.contact.id, ev.Contact.ID)
			}
		}
	case triggers.TypeConversationClosed, triggers.TypeConversationUpdated:
		if e.convs[ev.Conversation] == nil {
			return bad("conversation", "no open conversation %q", ev.Conversation)
		}
	case triggers.TypeOfferAccepted, triggers.TypeOfferDeclined:
		if err := knownAgent(); err != nil {
			return err
		}
		if field, why := e.answerable(ev, t); why != "" {
			return bad(field, "%s", why)
		}
	case triggers.TypeAgentStatus:
		if err := knownAgent(); err != nil {
			return err
		}
		if _, ok := e.pool.Presence(ev.Status); !ok {
			names := e.pool.StatusNames()
			msg := fmt.Sprintf("unknown status %q; expected %s or %s", ev.Status, strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
			if best := suggest.Closest(ev.Status, names); best != "" {
				msg += fmt.Sprintf("; did you mean %q?", best)
			}
			return bad("status", "%s", msg)
		}
	}
	return nil
}

// apply changes the state for the event and runs its rules. It returns the
// event's conversation id.
func (e *Engine) apply(ev *triggers.Event) string {
	switch ev.Type {
	case triggers.TypeMessageReceived:
		return e.received(ev)
	case triggers.TypeMessageSent:
		return e.sent(ev)
	case triggers.TypeConversationClosed:
		return e.closed(ev)
	case triggers.TypeConversationUpdated:
		return e.updated(ev)
	case triggers.TypeOfferAccepted, triggers.TypeOfferDeclined:
		return e.answered(ev)
	case triggers.TypeAgentStatus:
		a := e.pool.Agent(ev.Agent)
		was := a.Presence
		e.pool.SetStatus(a, ev.Status, e.clock)
		// Online, or away (for work that takes away members too), the agent
		// may take waiting work; offline, it answers no offer.
		if a.Presence != was && (a.Online() || a.Away()) {
			e.dirty = append(e.dirty, a)
		}
		if a.Presence != was && a.Presence == dsl.StatusOffline && len(e.offers) > 0 {
			e.recall(a)
		}
		e.run(triggers.AgentStatus, &evalCtx{agent: a})
	}
	return ""
}

func (e *Engine) upsertContact(ec *triggers.EventContact) *contact {
	c := e.contacts.get(ec.ID)
	if c == nil {
		c = e.contacts.add(ec.ID)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setSym := func(dst *sym, v string) {
		if v != "" && v != dst.String() {
			*dst = intern(v)
		}
	}
	set(&c.name, ec.Name)
	set(&c.email, ec.Email)
	set(&c.phone, ec.Phone)
	setSym(&c.lang, ec.Lang)
	setSym(&c.country, ec.Country)
	setSym(&c.owner, ec.Owner) // the CRM record owner always wins
	if ec.Tags != nil {
		c.tags = ec.Tags
	}
	if len(ec.Attrs) > 0 {
		if c.attrs == nil {
			c.attrs = make(map[string]any, len(ec.Attrs))
		}
		for k, v := range ec.Attrs {
			c.attrs[k] = v
		}
	}
	return c
}

func (e *Engine) received(ev *triggers.Event) string {
	c := e.upsertContact(ev.Contact)
	var conv *conversation
	if ev.Conversation != "" {
		conv = e.convs[ev.Conversation]
	} else {
		conv = c.openFor(ev.Channel, ev.To)
	}
	opened, reopened := conv == nil, false
	var closedAt time.Time
	if opened {
		if conv = e.reopenable(c, ev); conv != nil {
			opened, reopened, closedAt = false, true, conv.closedAt
			e.reopen(conv)
		}
	}
	if opened {
		id := ev.Conversation
		if id == "" {
			id = ev.ID
		}
		conv = e.newConversation()
		*conv = conversation{id: id, contact: c, channel: ev.Channel, to: ev.To, status: StatusOpen,
			createdAt: e.clock, priority: dsl.DefaultPriority, contactNew: c.conversations == 0, tags: conv.tags[:0]}
		if ev.ConversationStatus == StatusPending {
			conv.status = StatusPending
		}
		c.conversations++
		e.convs[id] = conv
		c.setOpen(conv)
	}
	ctx := &evalCtx{conv: nil, contact: c, hasMsg: true, channel: ev.Channel, to: ev.To, opened: opened, reopened: reopened}
	if ev.Message != nil {
		ctx.msg = *ev.Message
	}
	conv.lastMessage = ctx.msg
	// The contact wrote: the inactive clock stops, and a released
	// conversation takes its agent's capacity again.
	e.stopQuiet(conv)
	if conv.released {
		conv.released = false
		e.pool.Reserve(conv.assignee, conv.load, conv.channel)
		if e.trace != nil {
			e.trace.note("the contact wrote: conversation %s, released, counts against %s's capacity again", conv.id, conv.assignee.ID)
		}
	}
	var prev *triggers.Previous
	if conv.status == StatusSnoozed {
		// The contact wrote: a snoozed conversation wakes up.
		prev = &triggers.Previous{Status: conv.status, Tags: conv.tags, Priority: conv.priority, Attrs: conv.attrs}
		e.setStatus(conv, StatusOpen)
	}
	switch {
	case conv.status != StatusOpen:
		conv.held = true // pending: the unanswered clock starts when it turns open
	case conv.waitingSince.IsZero():
		e.startStreak(conv)
	}
	if e.trace != nil {
		switch {
		case opened:
			e.trace.note("opens conversation %s (contact %s, channel %q, to %q): new conversation rules run first, then incoming message rules", conv.id, c.id, conv.channel, conv.to)
			if conv.status == StatusPending {
				e.trace.note("the conversation opens pending: assigns leave it alone until it turns open")
			}
		case reopened:
			e.trace.note("reopens conversation %s, closed at %s (reopen_within %s): incoming message rules run, with conversation.reopened true", conv.id, closedAt.UTC().Format(time.RFC3339), e.reopenWithin())
		case prev != nil:
			e.trace.note("joins snoozed conversation %s, which turns open: conversation updated rules run first, then incoming message rules", conv.id)
		default:
			e.trace.note("joins %s conversation %s, %s", conv.status, conv.id, conv.where())
		}
	}
	ctx.conv = conv
	if opened {
		e.run(triggers.ConversationCreated, ctx)
	}
	if prev != nil {
		ctx.prev = prev
		e.run(triggers.ConversationUpdated, ctx)
		ctx.prev = nil
	}
	e.run(triggers.MessageReceived, ctx)
	return conv.id
}

// startStreak starts the conversation's unanswered clock: the contact
// waits for an answer from now, and the unanswered rules are due.
func (e *Engine) startStreak(conv *conversation) {
	conv.held = false
	conv.waitingSince = e.clock
	conv.streak++
	e.seq++
	conv.batch = e.seq
	for _, r := range e.unanswered {
		tm := e.newTimer()
		*tm = timer{due: e.clock.Add(r.Trigger.After), conv: conv, streak: conv.streak, rule: r, order: e.ruleOrder[r], batch: e.seq}
		heap.Push(&e.timers, tm)
		conv.timers++
	}
}

// startQuiet starts the conversation's inactive clock, or sets it back to
// now: an agent wrote, and the contact has not written since. Each
// inactive rule is due that long from now, whether or not it ran after an
// earlier message of the agent's.
func (e *Engine) startQuiet(conv *conversation) {
	e.seq++
	conv.quietSince, conv.quietBatch = e.clock, e.seq
	if len(e.inactive) == 0 {
		return // (a reload that brings inactive rules starts them)
	}
	if conv.quiet == nil {
		conv.quiet = make([]*timer, len(e.inactive))
	}
	for i, r := range e.inactive {
		due := e.clock.Add(r.Trigger.After)
		if tm := conv.quiet[i]; tm != nil {
			tm.due, tm.batch = due, e.seq
			heap.Fix(&e.timers, tm.index)
			continue
		}
		tm := e.newTimer()
		*tm = timer{due: due, conv: conv, rule: r, order: e.ruleOrder[r], batch: e.seq, slot: i}
		heap.Push(&e.timers, tm)
		conv.quiet[i] = tm
		conv.timers++
	}
}

// stopQuiet stops the conversation's inactive clock: the contact wrote,
// or the conversation closed. Its inactive timers go at once.
func (e *Engine) stopQuiet(conv *conversation) {
	conv.quietSince = time.Time{}
	for i, tm := range conv.quiet {
		if tm != nil {
			heap.Remove(&e.timers, tm.index)
			conv.quiet[i] = nil
			conv.timers--
			e.freeTimers = append(e.freeTimers, tm)
		}
	}
}

// setStatus turns an open conversation pending or snoozed, or back open.
// A pending or snoozed conversation keeps its agent and capacity, leaves
// its waiting line and stops its unanswered clock; turning open starts the
// clock again if the contact still waits for an answer.
func (e *Engine) setStatus(conv *conversation, status string) {
	if conv.status == status {
		return
	}
	was := conv.status
	conv.status = status
	if status == StatusOpen {
		if conv.held {
			e.startStreak(conv)
		}
		return
	}
	if conv.waiting != nil {
		e.unqueue(conv)
	}
	if was == StatusOpen && !conv.waitingSince.IsZero() {
		conv.waitingSince = time.Time{}
		conv.held = true
	}
}

func (e *Engine) reopenWithin() time.Duration {
	if e.rs.Team == nil {
		return 0
	}
	return e.rs.Team.ReopenWithin
}

// reopenable returns the closed conversation a message reopens: the
// contact's latest on the message's channel and number (or the one the
// message names), closed within team.yaml's reopen_within. Kept
// conversations past the window are let go on the way.
func (e *Engine) reopenable(c *contact, ev *triggers.Event) *conversation {
	within := e.reopenWithin()
	if within <= 0 || c.closed == nil {
		return nil
	}
	conv := c.closedFor(ev.Channel, ev.To)
	if ev.Conversation != "" {
		conv = nil
		for v := c.closed; v != nil; v = v.nextOpen {
			if v.id == ev.Conversation {
				conv = v
				break
			}
		}
	}
	if conv == nil {
		return nil
	}
	if e.clock.After(conv.closedAt.Add(within)) {
		e.letGo(conv)
		return nil
	}
	if o := e.convs[conv.id]; o != nil {
		return nil // its id was given to a conversation opened since
	}
	return conv
}

// keptConv is a closed conversation kept for reopening, and when it
// closed: the conversation may since have been reopened, let go, or
// reused for another.
type keptConv struct {
	conv *conversation
	at   time.Time
}

// sweepKept lets go of the closed conversations that reopen_within no
// longer lets a message reopen, so that contacts who never come back
// leave only themselves in memory.
func (e *Engine) sweepKept() {
	within := e.reopenWithin()
	for e.keptHead < len(e.kept) {
		k := e.kept[e.keptHead]
		if within > 0 && !e.clock.After(k.at.Add(within)) {
			break
		}
		e.kept[e.keptHead] = keptConv{}
		e.keptHead++
		if k.conv.kept && k.conv.closedAt.Equal(k.at) {
			e.letGo(k.conv)
		}
	}
	if e.keptHead > 0 && e.keptHead*2 >= len(e.kept) {
		n := copy(e.kept, e.kept[e.keptHead:])
		clear(e.kept[n:])
		e.kept, e.keptHead = e.kept[:n], 0
	}
}

// fileKept lists the kept closed conversations in the order they closed
// (contacts in order for those that closed at one instant): after a
// restore.
func (e *Engine) fileKept() {
	e.kept, e.keptHead = e.kept[:0], 0
	for _, chunk := range e.contacts.chunks {
		for i := range chunk {
			for v := chunk[i].closed; v != nil; v = v.nextOpen {
				e.kept = append(e.kept, keptConv{v, v.closedAt})
			}
		}
	}
	slices.SortStableFunc(e.kept, func(a, b keptConv) int { return a.at.Compare(b.at) })
}

// letGo stops keeping a closed conversation for reopening.
func (e *Engine) letGo(conv *conversation) {
	conv.contact.dropClosed(conv)
	conv.kept = false
	if conv.recyclable() {
		e.freeConvs = append(e.freeConvs, conv)
	}
}

// reopen makes a kept closed conversation open again, as the contact's
// open one on its channel and number.
func (e *Engine) reopen(conv *conversation) {
	c := conv.contact
	c.dropClosed(conv)
	conv.kept = false
	conv.status = StatusOpen
	conv.closedAt = time.Time{}
	conv.waitingSince = time.Time{}
	conv.held = false
	e.convs[conv.id] = conv
	c.setOpen(conv)
}

func (e *Engine) sent(ev *triggers.Event) string {
	a := e.pool.Agent(ev.Agent)
	var conv *conversation
	var c *contact
	if ev.Conversation != "" {
		conv = e.convs[ev.Conversation]
		c = conv.contact
	} else {
		c = e.upsertContact(&triggers.EventContact{ID: ev.Contact.ID})
	}
	if c.lastSender.String() != a.ID {
		c.lastSender = intern(a.ID)
	}
	e.pool.Touch(a, e.clock)
	// The agent answered: the conversation's unanswered clock stops. Without
	// a conversation id, every open conversation with the contact counts.
	if conv != nil {
		conv.waitingSince, conv.held = time.Time{}, false
		e.startQuiet(conv)
	} else {
		for open := c.open; open != nil; open = open.nextOpen {
			open.waitingSince, open.held = time.Time{}, false
			e.startQuiet(open)
		}
		if c.open != nil && c.open.nextOpen == nil {
			conv = c.open
		}
	}
	ctx := &evalCtx{conv: conv, contact: c, hasMsg: true, channel: ev.Channel, to: ev.To, agent: a}
	if ev.Message != nil {
		ctx.msg = *ev.Message
	}
	if conv != nil {
		ctx.channel, ctx.to = conv.channel, conv.to
	}
	e.run(triggers.MessageSent, ctx)
	if conv != nil {
		return conv.id
	}
	return ""
}

func (e *Engine) closed(ev *triggers.Event) string {
	return e.close(e.convs[ev.Conversation], true)
}

// close closes the conversation and, with rules, runs the conversation
// closed rules (a close action runs none).
func (e *Engine) close(conv *conversation, rules bool) string {
	e.stopQuiet(conv)
	conv.status = StatusClosed
	conv.closedAt = e.clock
	conv.waitingSince, conv.held = time.Time{}, false
	if o := conv.offer; o != nil && e.trace != nil {
		e.trace.note("the offer of %s to %s is withdrawn, and the capacity held for it freed", conv.id, o.agent.ID)
	}
	e.withdraw(conv)
	conv.excluded = conv.excluded[:0]
	if conv.assignee != nil {
		if !conv.released {
			e.pool.Release(conv.assignee, conv.load, conv.channel, e.clock)
			e.dirty = append(e.dirty, conv.assignee)
		}
		conv.load, conv.released = 0, false
	}
	if conv.waiting != nil {
		e.unqueue(conv)
	}
	conv.queue = ""
	if rules {
		ctx := &evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to}
		e.run(triggers.ConversationClosed, ctx)
	}
	conv.lastMessage = triggers.EventMessage{} // a closed conversation keeps no message
	if conv.assignee != nil {
		conv.previous = intern(conv.assignee.ID)
		conv.assignee, conv.group = nil, ""
	}
	conv.contact.dropOpen(conv)
	delete(e.convs, conv.id)
	id := conv.id
	if e.reopenWithin() > 0 {
		conv.kept = true
		e.kept = append(e.kept, keptConv{conv, conv.closedAt})
		if old := conv.contact.keepClosed(conv); old != nil {
			old.kept = false
			if old.recyclable() {
				e.freeConvs = append(e.freeConvs, old)
			}
		}
	} else if conv.recyclable() {
		e.freeConvs = append(e.freeConvs, conv)
	}
	return id
}

// traceUpdate notes what a conversation.updated event changes.
func (e *Engine) traceUpdate(conv *conversation, prev *triggers.Previous, ev *triggers.Event) {
	var changes []string
	if ev.Status != "" {
		changes = append(changes, fmt.Sprintf("status %s → %s", prev.Status, ev.Status))
	}
	if ev.Tags != nil {
		changes = append(changes, fmt.Sprintf("tags %v → %v", prev.Tags, conv.tags))
	}
	if ev.Priority != nil {
		changes = append(changes, fmt.Sprintf("priority %d → %d", prev.Priority, conv.priority))
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Attrs)) {
		was, _ := json.Marshal(prev.Attrs[k])
		now, _ := json.Marshal(ev.Attrs[k])
		changes = append(changes, fmt.Sprintf("attrs.%s %s → %s", k, was, now))
	}
	e.trace.note("updates conversation %s: %s", conv.id, strings.Join(changes, "; "))
}

// updated applies a conversation.updated event: tags replace the list,
// attrs merge key by key (null deletes), a status of closed closes it as
// conversation.closed does; then the conversation updated rules run,
// seeing what changed in previous.
func (e *Engine) updated(ev *triggers.Event) string {
	conv := e.convs[ev.Conversation]
	prev := &triggers.Previous{Status: conv.status, Tags: slices.Clone(conv.tags), Priority: conv.priority, Attrs: maps.Clone(conv.attrs)}
	if ev.Tags != nil {
		conv.tags = conv.tags[:0]
		for _, t := range ev.Tags {
			if !contains(conv.tags, t) {
				conv.tags = append(conv.tags, t)
			}
		}
	}
	for k, v := range ev.Attrs {
		if v == nil {
			delete(conv.attrs, k)
			continue
		}
		if conv.attrs == nil {
			conv.attrs = map[string]any{}
		}
		conv.attrs[k] = v
	}
	if ev.Priority != nil && *ev.Priority != conv.priority {
		conv.priority = *ev.Priority
		if w := conv.waiting; w != nil { // it moves to its new place in the line
			line := e.lineFor(w)
			line.Remove(w)
			w.Priority = conv.priority
			line.Add(w)
		}
	}
	if e.trace != nil {
		e.traceUpdate(conv, prev, ev)
	}
	if ev.Status == StatusClosed {
		if e.trace != nil {
			e.trace.note("closes conversation %s, as conversation.closed does", conv.id)
		}
		return e.close(conv, true)
	}
	if ev.Status != "" {
		if e.trace != nil && conv.waiting != nil && ev.Status != StatusOpen {
			e.trace.note("conversation %s turns %s: it leaves its waiting line (%s)", conv.id, ev.Status, conv.where())
		}
		e.setStatus(conv, ev.Status)
	}
	ctx := &evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to, prev: prev}
	e.run(triggers.ConversationUpdated, ctx)
	return conv.id
}

func (e *Engine) newConversation() *conversation {
	if n := len(e.freeConvs); n > 0 {
		c := e.freeConvs[n-1]
		e.freeConvs = e.freeConvs[:n-1]
		return c
	}
	return new(conversation)
}

func (e *Engine) newTimer() *timer {
	if n := len(e.freeTimers); n > 0 {
		t := e.freeTimers[n-1]
		e.freeTimers = e.freeTimers[:n-1]
		return t
	}
	return new(timer)
}

// dropTimer lets go of a timer that will not fire. A closed conversation is
// recycled once no timer points at it any more.
func (e *Engine) dropTimer(t *timer) {
	c := t.conv
	c.timers--
	if t.quiet() && c.quiet[t.slot] == t {
		c.quiet[t.slot] = nil
	}
	if c.recyclable() {
		e.freeConvs = append(e.freeConvs, c)
	}
	e.freeTimers = append(e.freeTimers, t)
}

// timer is an unanswered or an inactive rule due for a conversation.
type timer struct {
	due    time.Time
	conv   *conversation
	streak int
	rule   *dsl.Rule
	order  int    // the rule's place in the rule set
	batch  uint64 // one per unanswered streak or inactive clock's start, in the order they began
	// An inactive rule's timer is its conversation's quiet[slot], and
	// index is its place in the heap, so that an agent's next message
	// moves it and the contact's removes it.
	slot  int
	index int
}

// quiet reports whether the timer is an inactive rule's.
func (t *timer) quiet() bool { return t.rule.Trigger.Kind == triggers.ConversationInactive }

type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	if h[i].batch != h[j].batch {
		return h[i].batch < h[j].batch
	}
	return h[i].order < h[j].order
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// advance moves the clock to t. Agents whose fairness window frees budget
// by then may take waiting work.
func (e *Engine) advance(t time.Time) {
	e.clock = t
	if e.pool.Limits() {
		e.dirty = e.pool.Advance(t, e.dirty)
	} else {
		e.pool.SetNow(t)
	}
}

// fireTimers runs the unanswered rules due up to t, in time order; the
// rules due at one instant for one conversation run together, in file
// order, as one evaluation.
func (e *Engine) fireTimers(t time.Time) {
	for {
		var o *offer
		if len(e.offers) > 0 {
			o = e.nextExpiry(t)
		}
		if o != nil && (len(e.timers) == 0 || !e.timers[0].due.Before(o.expires)) {
			e.expire(o) // an offer's time runs out before a timer due then
			continue
		}
		if len(e.timers) == 0 || e.timers[0].due.After(t) {
			return
		}
		first := heap.Pop(&e.timers).(*timer)
		group := append(e.timerGroup[:0], first)
		for len(e.timers) > 0 && e.timers[0].due.Equal(first.due) && e.timers[0].batch == first.batch {
			group = append(group, heap.Pop(&e.timers).(*timer))
		}
		e.timerGroup = group
		conv := first.conv
		conv.timers -= len(group)
		quiet := first.quiet()
		if quiet {
			for _, tm := range group {
				conv.quiet[tm.slot] = nil
			}
		}
		if !first.live() || quiet && conv.status != StatusOpen {
			// Answered, closed or superseded since. A closed conversation is
			// recycled once no timer points at it any more. (An inactive
			// rule runs only for an open conversation: a pending or snoozed
			// one is left alone, and the agent's next message starts the
			// clock again.)
			if conv.recyclable() {
				e.freeConvs = append(e.freeConvs, conv)
			}
			e.freeTimers = append(e.freeTimers, group...)
			continue
		}
		e.advance(first.due)
		e.drain()
		e.reported = first.due
		if e.trace != nil {
			if quiet {
				e.beginStep(fmt.Sprintf("conversation.inactive: %s has had no word from its contact since an agent wrote at %s", conv.id, conv.quietSince.Format(time.RFC3339)))
			} else {
				e.beginStep(fmt.Sprintf("conversation.unanswered: %s has waited since %s", conv.id, conv.waitingSince.Format(time.RFC3339)))
			}
		}
		ctx := &evalCtx{conv: conv, contact: conv.contact, msg: conv.lastMessage, hasMsg: true, channel: conv.channel, to: conv.to}
		e.setEnv(ctx)
		for _, tm := range group {
			if ctx.stopped {
				break
			}
			e.runRule(tm.rule, ctx)
		}
		e.freeTimers = append(e.freeTimers, group...)
		e.drain() // capacity a reassign freed is taken at once
	}
}
