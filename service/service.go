// Package service runs Switchboard as an HTTP service: the messaging
// platform posts events, the service answers with decisions once they are
// durable, and keeps the live state of agents, conversations and queues.
//
// Every accepted event goes through one commit loop: events are decided in
// order on one engine, and the decisions of all the requests waiting at
// that moment are committed to the store in one transaction (group commit)
// before any of them is answered. On restart the engine is rebuilt by
// replaying the store, so an answered event is never lost and never
// decided twice.
package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Config sets up a service.
type Config struct {
	Rules *dsl.RuleSet
	// Load compiles the rule set again, for reloads; nil disables them.
	Load  func() (*dsl.RuleSet, dsl.Diagnostics)
	Store store.Store
	// Token, when set, must be presented as "Authorization: Bearer TOKEN" on
	// every /v1 call.
	Token string
	Log   *slog.Logger
	Seed  uint64
	// Now is the wall clock; events without "at" happen now.
	Now func() time.Time
	// MaxBody is the largest request body accepted, in bytes.
	MaxBody int64
	// RecentIDs is how many recent event ids are kept in memory in front of
	// the store, to answer retries without a lookup.
	RecentIDs int
}

// Service is a running Switchboard.
type Service struct {
	cfg    Config
	mu     sync.Mutex // guards eng, seq, rs: the commit loop and the readers
	eng    *engine.Engine
	seq    int64
	rs     *dsl.RuleSet               // the rule set running
	recent *lru.Cache[string, []byte] // event id → decision JSON
	// evicted is set once recent has dropped an id: until then it holds
	// every stored id, and a miss means the event is new.
	evicted atomic.Bool
	reqs    chan *request
	wake    chan struct{} // the next timer may have changed
	m       *metrics
}

// rules is the rule set running; the caller holds s.mu.
func (s *Service) rules() *dsl.RuleSet { return s.rs }

// request is events waiting for the commit loop, and where to answer.
type request struct {
	reload  *dsl.RuleSet // a reload instead of events
	events  []*triggers.Event
	results []result
	done    chan struct{}
	start   time.Time
	err     error // a reload's outcome
}

// result is what became of one event.
type result struct {
	decision []byte // the decision as JSON; nil on error
	err      error
	dup      bool   // an event with this id was decided before
	rules    string // the version of the rule set that decided it (new events)
}

// errNotStored is answered when the store failed: nothing changed.
var errNotStored = errors.New("the event could not be stored; nothing changed, send it again")

// New opens a service on a store, rebuilding the live state from it.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 4 << 20
	}
	if cfg.RecentIDs == 0 {
		cfg.RecentIDs = 100_000
	}
	s := &Service{cfg: cfg, reqs: make(chan *request, 1024), wake: make(chan struct{}, 1)}
	s.m = newMetrics(s)
	s.recent, _ = lru.NewWithEvict[string, []byte](cfg.RecentIDs, func(string, []byte) { s.evicted.Store(true) })
	// The rules started with are kept, so that a replay finds them whatever
	// the files on disk say later.
	if err := cfg.Store.SaveRuleSet(ctx, cfg.Rules.Version, ruleSetFiles(cfg.Rules)); err != nil {
		return nil, err
	}
	if err := s.rebuild(ctx); err != nil {
		return nil, err
	}
	// Starting on other rules than the log's last is a reload.
	if s.rs.Version != cfg.Rules.Version {
		if err := s.switchRules(ctx, cfg.Rules); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// reloadType marks a reload in the log: the rules change there.
const reloadType = "rules.reload"

type reloadEvent struct {
	Version string `json:"version"`
}

// switchRules records a reload in the log and swaps the engine; the caller
// holds s.mu (or owns s).
func (s *Service) switchRules(ctx context.Context, rs *dsl.RuleSet) error {
	if err := s.cfg.Store.SaveRuleSet(ctx, rs.Version, ruleSetFiles(rs)); err != nil {
		return err
	}
	now := s.cfg.Now()
	body, _ := json.Marshal(reloadEvent{Version: rs.Version})
	rec := store.Record{Seq: s.seq + 1, ID: fmt.Sprintf("reload-%d-%s", s.seq+1, rs.Version), Type: reloadType, At: now,
		Event: body, Decision: []byte("{}"), RuleSet: rs.Version, Received: now}
	if err := s.cfg.Store.Append(ctx, []store.Record{rec}); err != nil {
		return err
	}
	s.seq++
	s.eng = s.eng.Reload(rs)
	s.rs = rs
	return nil
}

// storedRules compiles a rule set kept in the store.
func (s *Service) storedRules(ctx context.Context, version string) (*dsl.RuleSet, error) {
	files, err := s.cfg.Store.RuleSet(ctx, version)
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
	rs.Sources = src
	return rs, nil
}

func ruleSetFiles(rs *dsl.RuleSet) []store.RuleSetFile {
	var out []store.RuleSetFile
	for _, f := range rs.Sources.Files() {
		out = append(out, store.RuleSetFile{Name: f.Name, Text: string(f.Text)})
	}
	return out
}

// walk replays the log into a fresh engine, changing rules where the log
// reloaded them; each event is handed to on (nil: decide it), which may
// stop the walk.
func (s *Service) walk(ctx context.Context, on func(eng *engine.Engine, ev *triggers.Event, r store.Record) (stop bool, err error)) (*engine.Engine, *dsl.RuleSet, int64, error) {
	rs := s.cfg.Rules
	eng := engine.New(rs, engine.Options{Seed: s.cfg.Seed})
	var seq int64
	first := true
	errStop := errors.New("stop")
	err := s.cfg.Store.Replay(ctx, func(r store.Record) error {
		// The log starts on the rules of its first record, and changes
		// rules where reloads were.
		if r.RuleSet != rs.Version && (first || r.Type == reloadType) {
			next, err := s.storedRules(ctx, r.RuleSet)
			if err != nil {
				return err
			}
			if first {
				eng = engine.New(next, engine.Options{Seed: s.cfg.Seed})
			} else {
				eng = eng.Reload(next)
			}
			rs = next
		}
		first = false
		seq = r.Seq
		if r.Type == reloadType {
			return nil
		}
		ev, err := triggers.DecodeEvent(r.Event, true)
		if err != nil {
			return fmt.Errorf("stored event %s (seq %d) does not decode: %w", r.ID, r.Seq, err)
		}
		stop, err := on(eng, ev, r)
		if err != nil {
			return fmt.Errorf("stored event %s (seq %d): %w", r.ID, r.Seq, err)
		}
		if stop {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, nil, 0, err
	}
	return eng, rs, seq, nil
}

// rebuild replays the store into a fresh engine. Called at start, and when
// a commit failed, so that memory never runs ahead of the store.
func (s *Service) rebuild(ctx context.Context) error {
	start := time.Now()
	changed := 0
	eng, rs, seq, err := s.walk(ctx, func(eng *engine.Engine, ev *triggers.Event, r store.Record) (bool, error) {
		d, err := eng.Decide(ev)
		if err != nil {
			return false, err
		}
		if !bytes.Equal(d.AppendJSON(nil), r.Decision) {
			changed++
		}
		s.recent.Add(r.ID, r.Decision)
		return false, nil
	})
	if err != nil {
		return err
	}
	s.eng, s.seq, s.rs = eng, seq, rs
	s.cfg.Log.Info("state rebuilt from the store", "records", seq, "rules", rs.Version, "took", time.Since(start).Round(time.Millisecond))
	if changed > 0 {
		s.cfg.Log.Warn("replaying the log gave other decisions than were stored", "events", changed)
	}
	return nil
}

// Submit decides events and makes them durable, in order. It returns when
// every one has been committed (or refused).
func (s *Service) Submit(ctx context.Context, events []*triggers.Event) ([]result, error) {
	r := &request{events: events, results: make([]result, len(events)), done: make(chan struct{}), start: time.Now()}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	<-r.done // once queued, the request is committed or refused: wait for it
	return r.results, nil
}

// Run is the commit loop and the wall clock for unanswered timers. It
// returns when ctx is done, after answering every request it took.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.clock(ctx) }()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			s.drainRefuse()
			return
		case r := <-s.reqs:
			batch := []*request{r}
		more:
			for len(batch) < 256 {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
				default:
					break more
				}
			}
			s.commit(ctx, batch)
		}
	}
}

// drainRefuse answers requests that arrive after the loop stopped.
func (s *Service) drainRefuse() {
	for {
		select {
		case r := <-s.reqs:
			for i := range r.results {
				r.results[i] = result{err: errNotStored}
			}
			close(r.done)
		default:
			return
		}
	}
}

// commit decides a group of requests and stores them in one transaction.
func (s *Service) commit(ctx context.Context, batch []*request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		for _, r := range batch {
			for _, res := range r.results {
				switch {
				case errors.Is(res.err, errNotStored):
					s.m.refused.WithLabelValues("store").Inc()
				case res.err != nil:
					s.m.refused.WithLabelValues("does not fit the state").Inc()
				default:
					s.m.latency.Observe(time.Since(r.start).Seconds())
				}
			}
			close(r.done)
		}
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}()
	var recs []store.Record
	var acts []engine.Action
	inBatch := map[string][]byte{}
	now := s.cfg.Now()
	for _, r := range batch {
		if r.reload != nil {
			// Events before the reload are committed on the old rules.
			if !s.flush(ctx, batch, &recs, &acts) {
				return
			}
			r.err = s.switchRules(ctx, r.reload)
			continue
		}
		for i, ev := range r.events {
			if dec, ok := s.known(ctx, ev.ID, inBatch); ok {
				r.results[i] = result{decision: dec, dup: true}
				continue
			}
			if ev.At.IsZero() {
				ev.At = now
			}
			d, err := s.eng.Decide(ev)
			if err != nil {
				r.results[i] = result{err: err}
				continue
			}
			acts = append(acts, d.Actions...)
			dec := d.AppendJSON(nil)
			evJSON, _ := json.Marshal(ev)
			s.seq++
			recs = append(recs, store.Record{Seq: s.seq, ID: ev.ID, Type: ev.Type, At: ev.At, Event: evJSON,
				Decision: dec, RuleSet: s.rs.Version, Received: now})
			inBatch[ev.ID] = dec
			r.results[i] = result{decision: dec, rules: s.rs.Version}
		}
	}
	s.flush(ctx, batch, &recs, &acts)
}

// flush commits the records decided so far in one transaction. When the
// store fails, the batch's new events are refused and the state rebuilt
// from the store; it returns false then.
func (s *Service) flush(ctx context.Context, batch []*request, recs *[]store.Record, acts *[]engine.Action) bool {
	if len(*recs) == 0 {
		return true
	}
	defer func() { *recs, *acts = (*recs)[:0], (*acts)[:0] }()
	if err := s.cfg.Store.Append(ctx, *recs); err != nil {
		s.cfg.Log.Error("commit failed; rebuilding the state from the store", "events", len(*recs), "err", err)
		failed := map[string]bool{}
		for _, rec := range *recs {
			failed[rec.ID] = true
		}
		for _, r := range batch {
			for i, ev := range r.events {
				if failed[ev.ID] && !r.results[i].dup && r.results[i].err == nil {
					r.results[i] = result{err: errNotStored}
				}
			}
		}
		if err := s.rebuild(context.WithoutCancel(ctx)); err != nil {
			s.cfg.Log.Error("rebuild failed", "err", err)
		}
		return false
	}
	for _, rec := range *recs {
		s.recent.Add(rec.ID, rec.Decision)
	}
	s.m.count(*acts)
	return true
}

// ReloadResult is the answer to a reload.
type ReloadResult struct {
	Version     string          `json:"version"`
	Previous    string          `json:"previous"`
	Changed     bool            `json:"changed"`
	Diagnostics dsl.Diagnostics `json:"diagnostics,omitempty"`
}

// errReloadRefused is returned when the new rules do not compile.
var errReloadRefused = errors.New("the rules have errors; the running rules are kept")

// Reload compiles the rule directory again and, if it is clean, swaps it
// in between two events, atomically. With any diagnostic the running
// rules stay.
func (s *Service) Reload(ctx context.Context) (ReloadResult, error) {
	if s.cfg.Load == nil {
		return ReloadResult{}, errors.New("this service cannot reload its rules")
	}
	rs, ds := s.cfg.Load()
	s.mu.Lock()
	prev := s.rs.Version
	s.mu.Unlock()
	if rs == nil {
		s.m.reloads.WithLabelValues("refused").Inc()
		s.cfg.Log.Warn("reload refused: the rules have errors", "diagnostics", len(ds))
		return ReloadResult{Version: prev, Previous: prev, Diagnostics: ds}, errReloadRefused
	}
	if rs.Version == prev {
		s.m.reloads.WithLabelValues("unchanged").Inc()
		return ReloadResult{Version: prev, Previous: prev, Diagnostics: ds}, nil
	}
	r := &request{reload: rs, done: make(chan struct{}), start: time.Now()}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
	<-r.done
	if r.err != nil {
		s.m.reloads.WithLabelValues("failed").Inc()
		return ReloadResult{Version: prev, Previous: prev}, r.err
	}
	s.m.reloads.WithLabelValues("reloaded").Inc()
	s.cfg.Log.Info("rules reloaded", "version", rs.Version, "previous", prev)
	return ReloadResult{Version: rs.Version, Previous: prev, Changed: true, Diagnostics: ds}, nil
}

// known returns the stored decision of an event id, if any.
func (s *Service) known(ctx context.Context, id string, inBatch map[string][]byte) ([]byte, bool) {
	if dec, ok := inBatch[id]; ok {
		return dec, true
	}
	if dec, ok := s.recent.Get(id); ok {
		return dec, true
	}
	if !s.evicted.Load() {
		return nil, false
	}
	rec, ok, err := s.cfg.Store.Get(ctx, id)
	if err != nil || !ok {
		return nil, false
	}
	s.recent.Add(id, rec.Decision)
	return rec.Decision, true
}

// clock ticks the engine when its next unanswered timer is due, on the
// wall clock. Ticks are events like any other: stored, and replayed.
func (s *Service) clock(ctx context.Context) {
	for {
		s.mu.Lock()
		due, ok := s.eng.NextDue()
		seq := s.seq
		s.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(due.Sub(s.cfg.Now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		if !ok {
			continue
		}
		at := s.cfg.Now()
		tick := &triggers.Event{ID: fmt.Sprintf("tick-%d-%s", seq, due.UTC().Format(time.RFC3339Nano)), Type: triggers.TypeTick, At: at}
		if _, err := s.Submit(ctx, []*triggers.Event{tick}); err != nil {
			return
		}
	}
}
