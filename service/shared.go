package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// Several instances over one shared store (PostgreSQL). Any instance
// accepts any event. The log's order is the database's: an instance
// appends a group under the log's lock, in a transaction that first reads
// what the other instances appended since it last looked; it applies
// those records to its engine (a replay, deterministic), decides its
// group after them, appends it, commits, and only then answers. Between
// its own commits an instance follows the log (NOTIFY, and a poll), and
// every read catches up with the log's tail first, so that what it shows
// is never behind what was acknowledged before the read began.

// Following the log.
const (
	// followEvery is how often an instance reads the log's tail even when
	// no notification came.
	followEvery = time.Second
	// unreachableAfter is how long the database may go unanswered before
	// the instance says it is not ready.
	unreachableAfter = 3 * time.Second
	// busyAppending: an instance that appended this recently leaves the
	// others' announcements to its next append, for this long at most.
	busyAppending = 100 * time.Millisecond
	// catchUpBatch is how many records a catch-up reads at once; a tail
	// longer than that is a long catch-up, and the instance says it is
	// not ready while it lasts.
	catchUpBatch = 10_000
)

// startShared settles which rules an instance starting on a shared log
// runs: the log's, whatever its own files say, so that instances started
// one by one (a rolling restart) never switch the others' rules. A reload
// (POST /v1/reload) on any instance switches them all.
func (s *Service) startShared(rs *dsl.RuleSet) {
	s.reach.Store(time.Now().UnixNano())
	if s.seq > 0 && s.rs.Version != rs.Version {
		s.log.Warn("this instance's rule files differ from the rules the shared log runs; it runs the log's. POST /v1/rules/reload to this instance to switch every instance to its files",
			"running", s.rs.Version, "files", rs.Version)
	}
}

// sharedReady says whether an instance of several accepts events: not
// while the database does not answer, nor while it is catching up with a
// long tail.
func (s *Service) sharedReady() (bool, string) {
	if why := s.unreach.Load(); why != nil && time.Since(time.Unix(0, s.reach.Load())) > unreachableAfter {
		return false, *why
	}
	if s.catching.Load() {
		return false, "catching up with the log the other instances appended"
	}
	return true, ""
}

// reached records how the last exchange with the shared database went.
func (s *Service) reached(err error) {
	if err == nil {
		s.reach.Store(time.Now().UnixNano())
		if s.unreach.Swap(nil) != nil {
			s.log.Info("the database answers again", "database", s.sh.Where())
		}
		return
	}
	why := fmt.Sprintf("cannot reach the database at %s: %v", s.sh.Where(), err)
	if old := s.unreach.Swap(&why); old == nil {
		s.log.Error("the database does not answer", "database", s.sh.Where(), "err", err)
	}
}

// errAnswered stops a Sequence whose requests were answered already;
// errRebuild one whose tail replays otherwise than the log says (the state
// is rebuilt from the store, and the group decided again).
var (
	errAnswered = errors.New("answered")
	errRebuild  = errors.New("the tail replays otherwise than the log: rebuild")
)

// groupTimeout is how long one group may take to reach the database and
// back: past it, its requests are refused (503) rather than left hanging
// on a database that does not answer.
const groupTimeout = 15 * time.Second

// commitShared decides a group of requests and appends it to the shared
// log, after the records the other instances appended.
func (s *Service) commitShared(ctx context.Context, batch []*request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupTimeout)
	defer cancel()
	// (follow keeps the instance close to the log's tail, so that the
	// tail read under the lock is short; one too long is caught up with
	// outside it, and the group tried again.)
	for try := 0; ; try++ {
		var retry bool
		batch, retry = s.tryShared(ctx, batch, try == 2)
		if !retry {
			return
		}
		s.catchUp(ctx)
	}
}

// drainQueued takes the requests that came while the group waited for the
// log's lock, up to the group's limits: under contention, the wait for
// the lock gathers the next group, and one commit covers more events.
func (s *Service) drainQueued(n int) []*request {
	var more []*request
	for n < maxGroup {
		select {
		case r := <-s.reqs:
			more = append(more, r)
			n += len(r.events) + 1
		default:
			return more
		}
	}
	return more
}

// tryShared makes one attempt at appending a group, which may grow by the
// requests that come while it waits for the lock; it returns the group,
// and true when it should be decided again (nothing was stored, nothing
// answered).
func (s *Service) tryShared(ctx context.Context, batch []*request, last bool) (_ []*request, retry bool) {
	s.mu.Lock()
	if f := s.fault.Load(); f != nil {
		s.refuseAll(batch, &refusal{reason: *f})
		s.mu.Unlock()
		s.answer(batch)
		return batch, false
	}
	// Ids stored long ago are looked up before the lock; those the other
	// instances append meanwhile come with the tail.
	stored, err := s.lookup(ctx, batch)
	after := s.seq
	s.mu.Unlock()
	if err != nil {
		s.log.Error("cannot look up event ids", "err", err)
		s.refuseAll(batch, errNotStored)
		s.answer(batch)
		return batch, false
	}
	size := 0
	for _, r := range batch {
		size += len(r.events) + 1
	}
	var f *flight
	applied := false
	start := time.Now()
	var locked time.Time
	err = s.sh.Sequence(ctx, after, func(tail []store.Record) ([]store.Record, error) {
		locked = time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(tail) > 0 {
			applied = true
			if err := s.applyTail(ctx, tail); err != nil {
				return nil, err
			}
			for _, r := range tail {
				if len(r.Hash) == hashSize {
					stored[r.ID] = knownOf(r.Seq, r.Hash, r.RuleSet)
				}
			}
		}
		if more := s.drainQueued(size); len(more) > 0 {
			found, err := s.lookup(ctx, more)
			batch = append(batch, more...)
			if err != nil {
				return nil, err
			}
			for id, k := range found {
				if _, ok := stored[id]; !ok {
					stored[id] = k
				}
			}
		}
		if fault := s.fault.Load(); fault != nil {
			s.refuseAll(batch, &refusal{reason: *fault})
			return nil, errAnswered
		}
		// (An id looked up as stored stays so even past a prune record:
		// the prune keeps records whose deliveries are open, and until
		// it is done the record is there. One gone by the answer is a
		// 503, and its retry a new event.)
		f = s.decide(batch, stored)
		return f.recs, nil
	})
	if err != nil && f != nil {
		switch stored, known := s.committedAnyway(f); {
		case stored:
			// The commit went through though its answer was lost.
			err = nil
		case !known:
			err = fmt.Errorf("%w: %w", errUnconfirmed, err)
		}
	}
	if err == nil {
		s.reached(nil)
		// The tail was read before locked: what was committed before
		// then is applied here.
		s.tailRead.Store(locked.UnixNano())
		if f != nil && len(f.recs) > 0 {
			s.m.stored(len(f.recs), time.Since(start))
			s.m.lockHeld.Observe(time.Since(locked).Seconds())
		}
	}
	if f != nil {
		s.finish(f, err)
		return batch, false
	}
	if errors.Is(err, errAnswered) {
		s.answer(batch)
		return batch, false
	}
	if applied {
		// Part of a tail may have been applied before it failed: the
		// state is the store's again.
		s.mu.Lock()
		s.rebuild(ctx)
		s.idle.Broadcast()
		s.mu.Unlock()
	}
	if !last && (errors.Is(err, store.ErrLongTail) || errors.Is(err, errRebuild)) {
		return batch, true
	}
	s.log.Error("cannot append to the shared log: refusing the group", "err", err)
	// As a failed commit: /readyz sends traffic elsewhere for a while
	// (the log's lock held by a session that does not let go, say).
	s.failed.Store(&commitFailure{at: time.Now(), why: err.Error()})
	s.refuseAll(batch, errNotStored)
	s.answer(batch)
	return batch, false
}

// committedAnyway says whether a group whose commit reported an error was
// stored nonetheless (the connection failed after the database
// committed): its first record is in the log under its number. The
// database is asked again for a few seconds while it does not answer (its
// connections were ended, say); known is false when it never did.
func (s *Service) committedAnyway(f *flight) (stored, known bool) {
	if len(f.recs) == 0 {
		return false, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), outcomeWait)
	defer cancel()
	first := f.recs[0]
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		found, err := s.cfg.Store.Lookup(ctx, []string{first.ID})
		if err == nil {
			k, ok := found[first.ID]
			return ok && k.Seq == first.Seq && bytes.Equal(k.Hash, first.Hash), true
		}
		select {
		case <-ctx.Done():
			return false, false
		case <-time.After(wait):
		}
	}
}

// outcomeWait is how long an instance asks the database whether a commit
// whose answer was lost went through, before telling its clients it does
// not know.
const outcomeWait = 5 * time.Second

// applyTail applies records the other instances appended to the live
// state, as a replay does; the caller holds s.mu with no group in flight.
// A replay that decides otherwise than the log says (the record's data was
// erased meanwhile) returns errRebuild: the state must be rebuilt from the
// newest snapshot, which holds what was decided before the erasure.
func (s *Service) applyTail(ctx context.Context, recs []store.Record) error {
	st := &journal.State{Engine: s.eng, Rules: s.rs, Seq: s.seq}
	var done []store.Record
	var items []delivery.Item
	changed, erased := 0, false
	feeding := s.disp.Feeding()
	for _, r := range recs {
		if r.Seq <= st.Seq {
			continue // applied already
		}
		if r.Seq != st.Seq+1 {
			// Records missing (pruned while this instance was away): the
			// state is rebuilt from a snapshot after them.
			changed++
			break
		}
		if r.Type != store.TypeReload && r.RuleSet != st.Rules.Version {
			// The log's first record, decided by another instance on its
			// rules: those are the log's.
			rs, err := s.j.RuleSet(ctx, r.RuleSet)
			if err != nil {
				return fmt.Errorf("record %d: %w", r.Seq, err)
			}
			st.Engine, _ = st.Engine.Reload(rs)
			st.Rules = rs
		}
		d, err := s.j.Apply(ctx, st, r)
		if err != nil {
			return err
		}
		if d != nil && !bytes.Equal(d, r.Decision) {
			changed++
		}
		done = append(done, r)
		if it, ok := delivery.ItemOf(r); ok && feeding {
			items = append(items, it) // events', and reloads' that let work go
		}
		switch r.Type {
		case store.TypeReload:
		case store.TypePrune:
			// Another instance pruned: the ids it pruned are forgotten
			// here too.
			var body struct {
				Through int64 `json:"through"`
			}
			if gojson.Unmarshal(r.Event, &body) == nil {
				s.forgetThrough(body.Through)
			}
		case store.TypeErase:
			erased = true
		default:
			s.recent.Add(r.ID, knownOf(r.Seq, r.Hash, r.RuleSet))
		}
	}
	s.eng, s.rs, s.seq, s.next = st.Engine, st.Rules, st.Seq, st.Seq
	v := st.Rules.Version
	s.version.Store(&v)
	if len(done) > 0 {
		s.m.applied.Add(float64(len(done)))
		s.signalCommit(done)
		s.disp.Committed(items, s.seq)
		s.snap.committedTo(s.seq)
	}
	if erased {
		s.disp.Forget()
	}
	if changed > 0 {
		s.log.Warn("the other instances' records replay differently here (erased data, or records pruned): rebuilding the state from the store", "records", changed)
		return errRebuild
	}
	return nil
}

// catchUp applies what the other instances appended, up to the log's
// tail as it is now. Readers call it first, so that they never show less
// than was acknowledged before they asked.
func (s *Service) catchUp(ctx context.Context) error {
	if s.sh == nil {
		return nil
	}
	defer s.catching.Store(false)
	for {
		s.mu.Lock()
		from, ok := s.seq, s.eng != nil
		s.mu.Unlock()
		if !ok {
			// Refusing, until repaired. The platform's feed, if this
			// instance works it, reads what the others commit meanwhile
			// from the store: it needs the log, not this state.
			if s.disp.Feeding() {
				head, err := s.cfg.Store.LastSeq(ctx)
				if err != nil {
					return err
				}
				s.reached(nil)
				s.disp.Resync(head)
			}
			return nil
		}
		recs, err := s.cfg.Store.Records(ctx, from, catchUpBatch)
		if err != nil {
			return err
		}
		s.reached(nil)
		if len(recs) == 0 {
			return nil
		}
		s.lockState()
		if s.eng != nil {
			if err = s.applyTail(ctx, recs); err != nil {
				if !errors.Is(err, errRebuild) {
					s.log.Error("cannot apply the other instances' records: rebuilding the state", "err", err)
				}
				s.rebuild(ctx)
				err = nil
			}
		}
		s.idle.Broadcast()
		s.mu.Unlock()
		if err != nil || len(recs) < catchUpBatch {
			return err
		}
		s.catching.Store(true)
	}
}

// follow keeps an instance of several close to the log's tail: it catches
// up when another instance announces an append, and at least every
// followEvery, and watches that the database answers.
func (s *Service) follow(ctx context.Context) {
	if s.sh == nil {
		return
	}
	t := time.NewTicker(followEvery)
	defer t.Stop()
	// An announcement left to the next append: when the last was heard,
	// and when to catch up if no append has read the tail since.
	var heard time.Time
	var later <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.sh.Appended():
			// An instance appending itself reads the tail as it does: a
			// catch-up now would only take the same records sooner.
			read := time.Unix(0, s.tailRead.Load())
			if wait := busyAppending - time.Since(read); wait > 0 {
				heard = time.Now()
				if later == nil {
					later = time.After(wait)
				}
				continue
			}
		case <-later:
			later = nil
			if time.Unix(0, s.tailRead.Load()).After(heard) {
				continue // an append read the tail after the announcement
			}
		case <-t.C:
			s.reached(s.sh.Ping(ctx))
		}
		cctx, cancel := context.WithTimeout(ctx, readTimeout)
		err := s.catchUp(cctx)
		cancel()
		if err != nil && ctx.Err() == nil && s.unreach.Load() == nil {
			s.log.Warn("cannot read the shared log's tail", "err", err)
		}
	}
}
