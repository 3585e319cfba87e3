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
	mu     sync.Mutex // guards eng, seq: the commit loop and the readers
	eng    *engine.Engine
	seq    int64
	recent *lru.Cache[string, []byte] // event id → decision JSON
	// evicted is set once recent has dropped an id: until then it holds
	// every stored id, and a miss means the event is new.
	evicted atomic.Bool
	reqs    chan *request
	wake    chan struct{} // the next timer may have changed
	m       *metrics
}

// rules is the rule set running.
func (s *Service) rules() *dsl.RuleSet { return s.cfg.Rules }

// request is events waiting for the commit loop, and where to answer.
type request struct {
	events  []*triggers.Event
	results []result
	done    chan struct{}
	start   time.Time
}

// result is what became of one event.
type result struct {
	decision []byte // the decision as JSON; nil on error
	err      error
	dup      bool // an event with this id was decided before
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
	if err := cfg.Store.SaveRuleSet(ctx, cfg.Rules.Version, ruleSetFiles(cfg.Rules)); err != nil {
		return nil, err
	}
	if err := s.rebuild(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func ruleSetFiles(rs *dsl.RuleSet) []store.RuleSetFile {
	var out []store.RuleSetFile
	for _, f := range rs.Sources.Files() {
		out = append(out, store.RuleSetFile{Name: f.Name, Text: string(f.Text)})
	}
	return out
}

// rebuild replays the store into a fresh engine. Called at start, and when
// a commit failed, so that memory never runs ahead of the store.
func (s *Service) rebuild(ctx context.Context) error {
	start := time.Now()
	eng := engine.New(s.cfg.Rules, engine.Options{Seed: s.cfg.Seed})
	var seq int64
	var changed int
	err := s.cfg.Store.Replay(ctx, func(r store.Record) error {
		ev, err := triggers.DecodeEvent(r.Event, true)
		if err != nil {
			return fmt.Errorf("stored event %s (seq %d) does not decode: %w", r.ID, r.Seq, err)
		}
		d, err := eng.Decide(ev)
		if err != nil {
			return fmt.Errorf("stored event %s (seq %d) no longer applies: %w", r.ID, r.Seq, err)
		}
		if r.RuleSet != s.cfg.Rules.Version || !bytes.Equal(d.AppendJSON(nil), r.Decision) {
			changed++
		}
		seq = r.Seq
		s.recent.Add(r.ID, r.Decision)
		return nil
	})
	if err != nil {
		return err
	}
	s.eng, s.seq = eng, seq
	s.cfg.Log.Info("state rebuilt from the store", "events", seq, "took", time.Since(start).Round(time.Millisecond))
	if changed > 0 {
		s.cfg.Log.Warn("stored events were decided by other rules; the state follows the current rules", "events", changed)
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
				Decision: dec, RuleSet: s.cfg.Rules.Version, Received: now})
			inBatch[ev.ID] = dec
			r.results[i] = result{decision: dec}
		}
	}
	if len(recs) == 0 {
		return
	}
	if err := s.cfg.Store.Append(ctx, recs); err != nil {
		s.cfg.Log.Error("commit failed; rebuilding the state from the store", "events", len(recs), "err", err)
		for _, r := range batch {
			for i := range r.results {
				if !r.results[i].dup && r.results[i].err == nil {
					r.results[i] = result{err: errNotStored}
				}
			}
		}
		if err := s.rebuild(context.WithoutCancel(ctx)); err != nil {
			s.cfg.Log.Error("rebuild failed", "err", err)
		}
		return
	}
	for _, rec := range recs {
		s.recent.Add(rec.ID, rec.Decision)
	}
	s.m.count(acts)
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
