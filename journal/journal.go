package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Journal reads a store's log into engines.
type Journal struct {
	store store.Store
	seed  uint64
	first *dsl.RuleSet // the rules of an empty log
	rules *lru.Cache[string, *dsl.RuleSet]
}

// New returns a journal over st. first is the rule set an empty log
// starts on; seed drives the random algorithm, as the service's.
func New(st store.Store, first *dsl.RuleSet, seed uint64) *Journal {
	j := &Journal{store: st, seed: seed, first: first}
	j.rules, _ = lru.New[string, *dsl.RuleSet](16)
	return j
}

// SeedKey is where a store keeps the seed its log was decided with.
const SeedKey = "seed"

// ErasedKey prefixes, in a store's meta data, each erased contact, with
// the record of its erasure: the records before it hold redacted data,
// and a replay of them may decide otherwise than was stored.
const ErasedKey = "erased:"

// Erased reports whether a stored decision may differ from its replay
// because personal data was erased from it or its event: erased maps
// contacts to the records of their erasures.
func Erased(r store.Record, erased map[string]int64) bool {
	if bytes.Contains(r.Decision, []byte(`"[erased]"`)) {
		return true
	}
	for _, c := range r.Contacts {
		if at, ok := erased[c]; ok && r.Seq < at {
			return true
		}
	}
	return false
}

// State is an engine brought to a point of the log.
type State struct {
	Engine *engine.Engine
	Rules  *dsl.RuleSet
	Seq    int64 // the last record applied
	// FromSnapshot is the snapshot it started from; 0 for the log's start.
	FromSnapshot int64
	// Pruned: records up to this seq are gone from the log.
	Pruned   int64
	Replayed int // records replayed after the snapshot
	// Changed counts replayed decisions that differ from the stored ones.
	Changed int
}

// Options say how far to load and what to do on the way.
type Options struct {
	// Before: only the records before this one are applied; 0: the
	// whole log. (Before 1 is the state before the first record.)
	Before int64
	// FromStart replays as much of the log as there is: from its start,
	// or, when retention pruned its beginning, from the snapshot where the
	// remaining records begin.
	FromStart bool
	// Each, when set, sees every replayed record with the decision the
	// replay gave (nil for records that are not events).
	Each func(r store.Record, decision []byte) error
	// Skipped, when set, hears of each unreadable snapshot passed over.
	Skipped func(info store.SnapshotInfo, err error)
}

// Load rebuilds the state just before record o.Before (or at the log's
// end): the newest readable snapshot before it, then the log after that.
func (j *Journal) Load(ctx context.Context, o Options) (*State, error) {
	st := &State{}
	pruned, err := j.store.Pruned(ctx)
	if err != nil {
		return nil, err
	}
	st.Pruned = pruned.Through
	if err := j.restore(ctx, st, o); err != nil {
		return nil, err
	}
	upto := int64(0) // the store's "to the end"
	if o.Before > 0 {
		if upto = o.Before - 1; upto <= st.Seq {
			return st, nil
		}
	}
	err = j.store.Replay(ctx, st.Seq, upto, func(r store.Record) error {
		d, err := j.Apply(ctx, st, r)
		if err != nil {
			return err
		}
		if d != nil && !bytes.Equal(d, r.Decision) {
			st.Changed++
		}
		if o.Each != nil {
			return o.Each(r, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// restore starts st from the newest readable snapshot before o.Before,
// or from the log's start.
func (j *Journal) restore(ctx context.Context, st *State, o Options) error {
	if !o.FromStart || st.Pruned > 0 {
		snaps, err := j.store.Snapshots(ctx)
		if err != nil {
			return err
		}
		if o.FromStart {
			slices.Reverse(snaps) // the oldest usable one
		}
		for _, in := range snaps {
			if o.Before > 0 && in.Seq >= o.Before || in.Seq < st.Pruned {
				continue
			}
			eng, rs, err := j.Snapshot(ctx, in)
			if err != nil {
				if o.Skipped != nil {
					o.Skipped(in, err)
				}
				continue
			}
			st.Engine, st.Rules, st.Seq, st.FromSnapshot = eng, rs, in.Seq, in.Seq
			return nil
		}
	}
	if st.Pruned > 0 {
		return fmt.Errorf("the log is pruned up to record %d and no snapshot at or after it can be read", st.Pruned)
	}
	// From the start: on the rules of the first record, as stored (so that
	// a replay is the same wherever it runs), or for an empty log the
	// first rules given.
	rs := j.first
	err := j.store.Replay(ctx, 0, 0, func(r store.Record) error {
		var err error
		if rs, err = j.RuleSet(ctx, r.RuleSet); err != nil {
			return err
		}
		return errStop
	})
	if err != nil && err != errStop {
		return err
	}
	if rs == nil {
		return fmt.Errorf("the log is empty and no rules were given")
	}
	st.Rules = rs
	st.Engine = engine.New(rs, engine.Options{Seed: j.seed})
	return nil
}

var errStop = fmt.Errorf("stop")

// Snapshot restores a stored snapshot.
func (j *Journal) Snapshot(ctx context.Context, in store.SnapshotInfo) (*engine.Engine, *dsl.RuleSet, error) {
	rs, err := j.RuleSet(ctx, in.RuleSet)
	if err != nil {
		return nil, nil, err
	}
	data, err := j.store.LoadSnapshot(ctx, in.Seq)
	if err != nil {
		return nil, nil, err
	}
	eng, err := engine.Restore(rs, data)
	if err != nil {
		return nil, nil, err
	}
	return eng, rs, nil
}

// Apply replays one record on st. It returns the decision it gave, for
// events.
func (j *Journal) Apply(ctx context.Context, st *State, r store.Record) ([]byte, error) {
	d, ok, err := j.Decide(ctx, st, r)
	if err != nil || !ok {
		return nil, err
	}
	return d.AppendJSON(nil), nil
}

// Decide replays one record on st, as Apply does, and returns the
// engine's decision; ok is false for a record that decides nothing (a
// prune, an erasure, a reload that let no work go, or one stored before
// reloads said what they let go). The decision's actions are valid until
// st's engine decides again.
func (j *Journal) Decide(ctx context.Context, st *State, r store.Record) (_ engine.Decision, ok bool, _ error) {
	st.Seq = r.Seq
	st.Replayed++
	switch r.Type {
	case store.TypeReload:
		rs, err := j.RuleSet(ctx, r.RuleSet)
		if err != nil {
			return engine.Decision{}, false, fmt.Errorf("record %d reloads rules: %w", r.Seq, err)
		}
		var letGo []engine.Action
		st.Engine, letGo = st.Engine.Reload(rs)
		st.Rules = rs
		if len(letGo) == 0 || !r.Decides() {
			return engine.Decision{}, false, nil
		}
		return ReloadDecision(r.ID, rs.Version, letGo), true, nil
	case store.TypeErase:
		var body struct {
			Contact string `json:"contact"`
		}
		if err := json.Unmarshal(r.Event, &body); err != nil {
			return engine.Decision{}, false, fmt.Errorf("record %d: %w", r.Seq, err)
		}
		st.Engine.EraseContact(body.Contact)
		return engine.Decision{}, false, nil
	case store.TypePrune:
		return engine.Decision{}, false, nil
	}
	ev, err := triggers.DecodeStored(r.Event)
	if err != nil {
		return engine.Decision{}, false, fmt.Errorf("stored event %s (record %d) does not decode: %w", r.ID, r.Seq, err)
	}
	d, err := DecideStored(st.Engine, ev, r)
	if err != nil {
		return engine.Decision{}, false, fmt.Errorf("stored event %s (record %d): %w", r.ID, r.Seq, err)
	}
	return d, true, nil
}

// ReloadDecision is the decision of the reload record id to rules version:
// the work it let go.
func ReloadDecision(id, version string, letGo []engine.Action) engine.Decision {
	return engine.Decision{Event: id, Actions: letGo, RuleSet: version}
}

// DecideStored decides a stored event on eng as the service did: at the
// service's clock when it decided, or, for events stored before the
// service owned its clock, at the event's own time.
func DecideStored(eng *engine.Engine, ev *triggers.Event, r store.Record) (engine.Decision, error) {
	if r.Clock.IsZero() {
		return eng.Decide(ev)
	}
	return eng.DecideAt(ev, r.Clock)
}

// ErrNotEvent is returned by Explain for a record the service made itself.
var ErrNotEvent = fmt.Errorf("not an event")

// Explain rebuilds the state just before record r, from the nearest
// snapshot, and explains r as the service decided it.
func (j *Journal) Explain(ctx context.Context, r store.Record) (*engine.Trace, error) {
	switch {
	case r.Type == store.TypeReload && r.Decides():
		return j.explainReload(ctx, r)
	case !r.Decides():
		return nil, ErrNotEvent
	}
	st, err := j.Load(ctx, Options{Before: r.Seq})
	if err != nil {
		return nil, err
	}
	ev, err := triggers.DecodeStored(r.Event)
	if err != nil {
		return nil, err
	}
	var trace *engine.Trace
	if r.Clock.IsZero() {
		_, trace, err = st.Engine.Explain(ev)
	} else {
		_, trace, err = st.Engine.ExplainAt(ev, r.Clock)
	}
	return trace, err
}

// explainReload says what a reload let go, and why: the agents and the
// groups the new rules no longer have.
func (j *Journal) explainReload(ctx context.Context, r store.Record) (*engine.Trace, error) {
	st, err := j.Load(ctx, Options{Before: r.Seq})
	if err != nil {
		return nil, err
	}
	var body struct {
		By     string `json:"by"`
		Reason string `json:"reason"`
	}
	json.Unmarshal(r.Event, &body)
	var stored struct {
		Actions []struct {
			Conversation string `json:"conversation"`
		} `json:"actions"`
	}
	json.Unmarshal(r.Decision, &stored)
	before := map[string]engine.ConversationView{}
	for _, a := range stored.Actions {
		before[a.Conversation], _ = st.Engine.Conversation(a.Conversation)
	}
	prev := st.Rules.Version
	d, ok, err := j.Decide(ctx, st, r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotEvent
	}
	t := &engine.Trace{Event: r.ID, Type: r.Type, At: r.Clock.UTC().Format(time.RFC3339Nano), Steps: []*engine.Step{}, Decision: d}
	who := ""
	if body.By != "" {
		who = " by " + body.By
		if body.Reason != "" {
			who += " (" + body.Reason + ")"
		}
	}
	t.Notes = append(t.Notes, fmt.Sprintf("the rules change%s from %s to %s; what the new team no longer has is let go, and waits nowhere", who, prev, st.Rules.Version))
	for _, a := range d.Actions {
		var note string
		switch {
		case a.Type == engine.ActUnassign && before[a.Conversation].OfferedTo == a.Agent:
			note = fmt.Sprintf("%s: its offer to %s, who is not in the new team, is withdrawn", a.Conversation, a.Agent)
		case a.Type == engine.ActUnassign:
			note = fmt.Sprintf("%s: taken from %s, who is not in the new team", a.Conversation, a.Agent)
		case a.Agent != "":
			note = fmt.Sprintf("%s: leaves the line of %s, who is not in the new team", a.Conversation, a.Agent)
		default:
			note = fmt.Sprintf("%s: leaves the line of group %s, which the new team does not have", a.Conversation, a.Group)
		}
		t.Notes = append(t.Notes, note)
	}
	return t, nil
}

// RuleSet compiles a rule set kept in the store, once. Its files are named
// as stored, by base name, so traces read the same in the service and in
// the CLI.
func (j *Journal) RuleSet(ctx context.Context, version string) (*dsl.RuleSet, error) {
	if rs, ok := j.rules.Get(version); ok {
		return rs, nil
	}
	files, err := j.store.RuleSet(ctx, version)
	if err != nil {
		return nil, err
	}
	var src dsl.Sources
	for _, f := range files {
		file := dsl.Source{Name: f.Name, Text: []byte(f.Text)}
		switch f.Name {
		case dsl.TeamFile:
			src.Team = &file
		case dsl.MappingsCSV, dsl.MappingsYAML:
			src.Mappings = &file
		default:
			src.Rules = append(src.Rules, file)
		}
	}
	rs, ds := dsl.Build(src)
	if rs == nil {
		return nil, fmt.Errorf("stored rule set %s no longer compiles: %v", version, ds)
	}
	// The stored files are what counts; the version they were filed under
	// names them, as the log and the snapshots do.
	rs.Version = version
	j.rules.Add(version, rs)
	return rs, nil
}
