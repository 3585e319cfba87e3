package whatif

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
	"golang.org/x/sync/errgroup"
)

// replayBatch is how many records the reader hands the runs at a time.
const replayBatch = 512

// Options say which traffic to replay, and under what.
type Options struct {
	// From and To bound the window by the service's clock: the records
	// decided at or after From and before To.
	From, To time.Time
	// Candidate is the rule set to try.
	Candidate *dsl.RuleSet
	// Source, when set, names the candidate in the report (a directory).
	Source string
}

// Report compares the two runs over the window.
type Report struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// First and Last are the window's records (0 and 0: none).
	First int64 `json:"first_record"`
	Last  int64 `json:"last_record"`
	// Events counts the events in the window (not reloads, prunes,
	// erasures).
	Events int `json:"events"`
	// Rules are the versions that decided the window, in order, and the
	// candidate's.
	Rules     []string `json:"rules"`
	Candidate string   `json:"candidate"`
	Source    string   `json:"source,omitempty"`
	// FromSnapshot is the snapshot the state at the window's start was
	// rebuilt from (0: the log's start).
	FromSnapshot int64 `json:"from_snapshot"`

	// Conversations counts the conversations routed in the window, by
	// either run; Moved lists those that would go elsewhere, in the order
	// they were first routed.
	Conversations int    `json:"conversations"`
	Moved         []Move `json:"moved"`

	Matches []RuleMatches  `json:"matches"`
	Agents  []AgentChanges `json:"agents"`
	Waiting Pair[Waits]    `json:"waiting"`
	// Notifications and replies sent.
	Notifications Pair[int] `json:"notifications"`
	Replies       Pair[int] `json:"replies"`
	// Refused are the events the candidate would refuse (an agent or
	// group it does not know, say): they change nothing in its run.
	Refused []Refusal `json:"refused"`
}

// Pair is a measure before (the rules that decided) and after (the
// candidate).
type Pair[T any] struct {
	Before T `json:"before"`
	After  T `json:"after"`
}

// Move is a conversation that would go elsewhere.
type Move struct {
	Conversation string    `json:"conversation"`
	Contact      string    `json:"contact"`
	Before       Placement `json:"before"`
	After        Placement `json:"after"`
}

// Placement is where a run put a conversation first in the window: with
// an agent or in a queue; failing that, waiting in a line; or nowhere.
type Placement struct {
	// Where, in words: "agent a1", "queue Billing", "waiting in group
	// Sales", "waiting for agent b2", or "" for nowhere.
	Where string `json:"where"`
	// Group is the group the agent was chosen from, if any.
	Group string `json:"group,omitempty"`
	// Rule is the rule, or table row, that decided it.
	Rule string `json:"rule,omitempty"`
	// Event is the event it was decided on.
	Event string `json:"event,omitempty"`
}

// String says where, for people.
func (p Placement) String() string {
	if p.Where == "" {
		return "nowhere"
	}
	if p.Group != "" {
		return p.Where + " (group " + p.Group + ")"
	}
	return p.Where
}

// RuleMatches counts the events a rule (or a table row) matched.
type RuleMatches struct {
	Rule   string `json:"rule"`
	Before int    `json:"before"`
	After  int    `json:"after"`
}

// AgentChanges is one agent's assignments and peak load in either run
// (peak load in capacity units; capacity 0: unlimited).
type AgentChanges struct {
	Agent    string        `json:"agent"`
	Assigned Pair[int]     `json:"assigned"`
	Peak     Pair[float64] `json:"peak_load"`
	Capacity Pair[float64] `json:"capacity"`
}

// Waits are the conversations placed from a waiting line in the window,
// how long they waited, and those still waiting at its end.
type Waits struct {
	Placed       int           `json:"placed"`
	P50          time.Duration `json:"p50_ns"`
	P95          time.Duration `json:"p95_ns"`
	StillWaiting int           `json:"still_waiting"`
}

// Refusal is an event the candidate refuses.
type Refusal struct {
	Event  string `json:"event"`
	Record int64  `json:"record"`
	Reason string `json:"reason"`
}

// ErrEmptyWindow is returned when no record falls in the window.
var ErrEmptyWindow = errors.New("no traffic in the window")

// run is one of the two replays.
type run struct {
	j         *journal.Journal
	st        *journal.State
	candidate bool
	first     map[string]Placement // conversation: where it went first
	order     []firstSeen          // conversations, as first routed
	events    int
	notify    int
	replies   int
	rules     []string  // the log's: the versions reloaded
	refused   []Refusal // the candidate's
}

// firstSeen is a conversation a run routed, and where in the log it
// first did.
type firstSeen struct {
	conv    string
	seq     int64
	contact string
}

// step replays one record.
func (r *run) step(ctx context.Context, rec store.Record) error {
	var d engine.Decision
	switch {
	case rec.Type == store.TypeReload && r.candidate:
		r.st.Seq = rec.Seq // the log's rules change; the candidate's stay
		return nil
	case r.candidate && rec.Type != store.TypePrune && rec.Type != store.TypeErase:
		ev, err := triggers.DecodeStored(rec.Event)
		if err != nil {
			return fmt.Errorf("stored event %s (record %d) does not decode: %w", rec.ID, rec.Seq, err)
		}
		r.st.Seq = rec.Seq
		if d, err = journal.DecideStored(r.st.Engine, ev, rec); err != nil {
			r.refused = append(r.refused, Refusal{Event: rec.ID, Record: rec.Seq, Reason: err.Error()})
			return nil
		}
	default:
		var ok bool
		var err error
		if d, ok, err = r.j.Decide(ctx, r.st, rec); err != nil {
			return err
		}
		if rec.Type == store.TypeReload {
			r.rules = append(r.rules, r.st.Rules.Version)
			return nil // what it let go is no event's routing
		}
		if !ok {
			return nil
		}
	}
	r.events++
	r.note(rec, d)
	return nil
}

// note counts a decision's messages, and notes where the conversations
// it routes went first.
func (r *run) note(rec store.Record, d engine.Decision) {
	for i := range d.Actions {
		a := &d.Actions[i]
		switch a.Type {
		case engine.ActNotify:
			r.notify++
		case engine.ActReply:
			r.replies++
		case engine.ActAssign, engine.ActQueued:
			if a.Conversation == "" {
				continue
			}
			p := placement(a, d.Event)
			old, seen := r.first[a.Conversation]
			if !seen {
				fs := firstSeen{conv: a.Conversation, seq: rec.Seq}
				if len(rec.Contacts) > 0 {
					fs.contact = rec.Contacts[0]
				}
				r.order = append(r.order, fs)
			}
			// An assignment beats having waited first: where it went is
			// whom it went to.
			if !seen || (waiting(old) && !waiting(p)) {
				r.first[a.Conversation] = p
			}
		}
	}
}

func waiting(p Placement) bool { return p.Where != "" && p.Where[0] == 'w' }

func placement(a *engine.Action, event string) Placement {
	p := Placement{Rule: a.Rule, Event: event}
	switch {
	case a.Type == engine.ActAssign && a.Agent != "":
		p.Where, p.Group = "agent "+a.Agent, a.Group
	case a.Type == engine.ActAssign:
		p.Where = "queue " + a.Queue
	case a.Agent != "":
		p.Where = "waiting for agent " + a.Agent
	default:
		p.Where = "waiting in group " + a.Group
	}
	return p
}

// Run replays the window of st's log under the rules that decided it and
// under o.Candidate, and compares the runs. j reads st.
func Run(ctx context.Context, st store.Store, j *journal.Journal, o Options) (*Report, error) {
	if o.Candidate == nil {
		return nil, errors.New("no candidate rules")
	}
	if !o.From.Before(o.To) {
		return nil, fmt.Errorf("the window ends (%s) before it starts (%s)", stamp(o.To), stamp(o.From))
	}
	before, err := st.SeqBefore(ctx, o.From)
	if err != nil {
		return nil, err
	}
	last, err := st.SeqBefore(ctx, o.To)
	if err != nil {
		return nil, err
	}
	rep := &Report{From: o.From, To: o.To, Candidate: o.Candidate.Version, Source: o.Source,
		Moved: []Move{}, Matches: []RuleMatches{}, Agents: []AgentChanges{}, Refused: []Refusal{}}
	if last <= before {
		return rep, ErrEmptyWindow
	}
	rep.First, rep.Last = before+1, last

	// The state at the window's start, once; the candidate's is a copy of
	// it, switched to the candidate's rules as a reload would.
	base, err := j.Load(ctx, journal.Options{Before: rep.First})
	if err != nil {
		return nil, err
	}
	if base.Pruned >= rep.First {
		return nil, fmt.Errorf("the window starts at record %d, but retention pruned the log up to record %d: choose a later start", rep.First, base.Pruned)
	}
	rep.FromSnapshot = base.FromSnapshot
	data, err := base.Engine.Snapshot()
	if err != nil {
		return nil, err
	}
	copyEng, err := engine.Restore(base.Rules, data)
	if err != nil {
		return nil, err
	}
	candEng, _ := copyEng.Reload(o.Candidate)
	cand := &journal.State{Engine: candEng, Rules: o.Candidate, Seq: base.Seq}
	baseRules := base.Rules
	rep.Rules = []string{base.Rules.Version}

	runs := [2]*run{
		{j: j, st: base, first: map[string]Placement{}},
		{j: j, st: cand, candidate: true, first: map[string]Placement{}},
	}
	b, c := runs[0], runs[1]
	b.st.Engine.StartRun()
	c.st.Engine.StartRun()

	// One reader, two runs: each its own goroutine, on the same records.
	g, gctx := errgroup.WithContext(ctx)
	var feeds [2]chan []store.Record
	for i, r := range runs {
		feeds[i] = make(chan []store.Record, 8)
		g.Go(func() error {
			for recs := range feeds[i] {
				for _, rec := range recs {
					if err := r.step(gctx, rec); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(feeds[0])
		defer close(feeds[1])
		send := func(recs []store.Record) error {
			for _, f := range feeds {
				select {
				case f <- recs:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		}
		var recs []store.Record
		err := st.Replay(gctx, before, last, func(r store.Record) error {
			if recs = append(recs, r); len(recs) == replayBatch {
				err := send(recs)
				recs = nil
				return err
			}
			return nil
		})
		if err == nil && len(recs) > 0 {
			err = send(recs)
		}
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	rep.Events, rep.Refused = b.events, append(rep.Refused, c.refused...)
	rep.Rules = append(rep.Rules, b.rules...)

	// The conversations in the order they were first routed, by either
	// run (on the same record, the log's run first): the runs' own
	// orders, merged.
	order := make([]string, 0, len(b.order)+len(c.order)/8)
	contact := make(map[string]string, len(b.order))
	bo, co := b.order, c.order
	for len(bo) > 0 || len(co) > 0 {
		var next firstSeen
		if len(co) == 0 || len(bo) > 0 && (bo[0].seq < co[0].seq || bo[0].seq == co[0].seq) {
			next, bo = bo[0], bo[1:]
		} else {
			next, co = co[0], co[1:]
		}
		if _, done := contact[next.conv]; !done {
			contact[next.conv] = next.contact
			order = append(order, next.conv)
		}
	}
	rep.Conversations = len(order)
	for _, conv := range order {
		pb, pa := b.first[conv], c.first[conv]
		if pb.Where != pa.Where || pb.Group != pa.Group {
			rep.Moved = append(rep.Moved, Move{Conversation: conv, Contact: contact[conv], Before: pb, After: pa})
		}
	}
	rep.Matches = matches(baseRules, o.Candidate, b.st.Engine.Matches(), c.st.Engine.Matches())
	sb, sc := b.st.Engine.Stats(), c.st.Engine.Stats()
	rep.Agents = agents(sb, sc)
	rep.Waiting = Pair[Waits]{waits(sb), waits(sc)}
	rep.Notifications = Pair[int]{b.notify, c.notify}
	rep.Replies = Pair[int]{b.replies, c.replies}
	return rep, nil
}

// matches lists every rule of either rule set (the deciding rules' in
// their order, then the candidate's new ones, then rules of rule sets
// reloaded within the window) with its matches in either run.
func matches(base, cand *dsl.RuleSet, before, after map[string]int) []RuleMatches {
	var names []string
	listed := map[string]bool{}
	add := func(n string) {
		if !listed[n] {
			listed[n] = true
			names = append(names, n)
		}
	}
	for _, r := range base.Rules {
		add(r.Name)
	}
	for _, r := range cand.Rules {
		add(r.Name)
	}
	var rest []string
	for n := range before {
		if !listed[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	for _, n := range rest {
		add(n)
	}
	out := make([]RuleMatches, 0, len(names))
	for _, n := range names {
		out = append(out, RuleMatches{Rule: n, Before: before[n], After: after[n]})
	}
	return out
}

// agents pairs the agents of either run: the deciding team's order, then
// agents only the candidate has.
func agents(before, after engine.Stats) []AgentChanges {
	var out []AgentChanges
	at := map[string]int{}
	for _, a := range before.Agents {
		at[a.Agent] = len(out)
		out = append(out, AgentChanges{Agent: a.Agent, Assigned: Pair[int]{Before: a.Assigned},
			Peak: Pair[float64]{Before: a.Peak}, Capacity: Pair[float64]{Before: a.Capacity}})
	}
	for _, a := range after.Agents {
		i, ok := at[a.Agent]
		if !ok {
			i = len(out)
			out = append(out, AgentChanges{Agent: a.Agent})
		}
		out[i].Assigned.After, out[i].Peak.After, out[i].Capacity.After = a.Assigned, a.Peak, a.Capacity
	}
	return out
}

func waits(s engine.Stats) Waits {
	w := Waits{Placed: len(s.Waits), StillWaiting: s.StillWaiting}
	if len(s.Waits) > 0 {
		sorted := slices.Clone(s.Waits)
		slices.Sort(sorted)
		w.P50, w.P95 = quantile(sorted, 0.50), quantile(sorted, 0.95)
	}
	return w
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
