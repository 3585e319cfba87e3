package service

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// snapshotter checkpoints the state in the background. It never touches the
// live engine: it folds the log from the newest snapshot on an engine of
// its own, up to the last committed record, and stores the result, so a
// snapshot costs the commit loop nothing. It also prunes for retention and
// rewrites history for erasures, one job at a time, so that no snapshot is
// written from data an erasure is removing.
type snapshotter struct {
	s         *Service
	kick      chan struct{}
	jobs      chan func(context.Context)
	committed atomic.Int64 // the last committed record
	last      atomic.Int64 // the newest snapshot's record
	size      atomic.Int64 // the newest snapshot's bytes
}

// bytesPerRecord spaces snapshots by the state's size: at least one
// record per so many bytes of the last snapshot, so that taking them costs
// a small share of deciding, however large the state.
const bytesPerRecord = 64

// due reports whether enough records came since the last snapshot.
func (p *snapshotter) due() bool {
	since := p.committed.Load() - p.last.Load()
	return since >= p.s.cfg.SnapshotEvery && since >= p.size.Load()/bytesPerRecord
}

func newSnapshotter(s *Service, last int64) *snapshotter {
	p := &snapshotter{s: s, kick: make(chan struct{}, 1), jobs: make(chan func(context.Context))}
	p.last.Store(last)
	p.committed.Store(s.seq)
	return p
}

// committed records that the log reached seq.
func (p *snapshotter) committedTo(seq int64) {
	p.committed.Store(seq)
	if p.due() {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// do runs fn on the snapshotter's goroutine and waits for it.
func (p *snapshotter) do(ctx context.Context, fn func(context.Context) error) error {
	done := make(chan error, 1)
	select {
	case p.jobs <- func(ctx context.Context) { done <- fn(ctx) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// elsewhereWait is how long an instance waits before asking again for a
// snapshot that another instance is taking.
const elsewhereWait = time.Second

// Failed snapshots are tried again after a pause that grows from
// snapshotRetryMin, and is at least ten times what the failed one took,
// up to snapshotRetryMax: a full disk costs a replay of the log now and
// then, not at every commit.
const (
	snapshotRetryMin = 5 * time.Second
	snapshotRetryMax = 10 * time.Minute
)

func (p *snapshotter) run(ctx context.Context) {
	t := time.NewTicker(p.s.cfg.SnapshotInterval)
	defer t.Stop()
	var quiet time.Time // kicks before it are let go
	var failedUntil time.Time
	var retry time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-p.jobs:
			job(ctx)
			continue
		case <-p.kick:
			// (A kick sent before the last snapshot is stale.)
			if time.Now().Before(quiet) || !p.due() {
				continue
			}
		case <-t.C:
		}
		if time.Now().Before(failedUntil) {
			continue
		}
		if p.committed.Load() > p.last.Load() {
			start := time.Now()
			elsewhere, err := p.takeShared(ctx)
			if err != nil && ctx.Err() == nil {
				retry = min(max(2*retry, snapshotRetryMin, 10*time.Since(start)), snapshotRetryMax)
				failedUntil = time.Now().Add(retry)
				p.s.log.Error("snapshot failed; the older ones stay", "err", err, "tried_again_in", retry.String())
			} else if err == nil {
				retry, failedUntil = 0, time.Time{}
			}
			if elsewhere {
				// Another instance is taking one: asking again at every
				// commit meanwhile would only load the database.
				quiet = time.Now().Add(elsewhereWait)
			}
		}
	}
}

// takeShared takes a snapshot unless, the store being shared, another
// instance took one recently enough or is taking one: one instance
// replays for all, and the others read its snapshot. It reports whether
// another instance is at it.
func (p *snapshotter) takeShared(ctx context.Context) (elsewhere bool, err error) {
	if p.s.sh == nil {
		return false, p.take(ctx)
	}
	ran, err := p.s.sh.Alone(ctx, "snapshots", func() error {
		// Read under the name, so that one just saved by the instance
		// that held it last is seen.
		if snaps, err := p.s.cfg.Store.Snapshots(ctx); err == nil && len(snaps) > 0 && snaps[0].Seq > p.last.Load() {
			p.last.Store(snaps[0].Seq)
			p.size.Store(snaps[0].Size)
			if !p.due() {
				return nil
			}
		}
		return p.take(ctx)
	})
	return err == nil && !ran, err
}

// take stores a snapshot of the state at the last committed record, then
// thins the older ones and prunes for retention.
func (p *snapshotter) take(ctx context.Context) error {
	s := p.s
	start := time.Now()
	s.log.Info("taking a snapshot", "upto", p.committed.Load())
	st, err := s.j.Load(ctx, journal.Options{Before: p.committed.Load() + 1})
	if err != nil {
		s.m.snapshots.WithLabelValues("failed").Inc()
		return err
	}
	if st.Changed > 0 {
		s.log.Warn("replaying the log for a snapshot gave other decisions than were stored", "events", st.Changed)
	}
	if st.Seq <= p.last.Load() {
		return nil
	}
	data, err := st.Engine.Snapshot()
	if err != nil {
		s.m.snapshots.WithLabelValues("failed").Inc()
		return err
	}
	info := store.SnapshotInfo{Seq: st.Seq, RuleSet: st.Rules.Version, Format: engine.SnapshotFormat, Taken: s.cfg.Now().UTC()}
	if err := s.cfg.Store.SaveSnapshot(ctx, info, data); err != nil {
		s.m.snapshots.WithLabelValues("failed").Inc()
		return err
	}
	p.last.Store(st.Seq)
	p.size.Store(int64(len(data)))
	s.m.snapshots.WithLabelValues("taken").Inc()
	s.log.Info("snapshot taken", "record", st.Seq, "bytes", len(data), "replayed", st.Replayed, "took_ms", time.Since(start).Milliseconds())
	if err := p.thin(ctx); err != nil {
		return err
	}
	if err := p.retain(ctx); err != nil {
		return err
	}
	s.finishErasures(ctx)
	return nil
}

// Snapshots are kept densely for recent history, where explanations are
// asked for most: every one within the newest keepRecent intervals; older
// ones thinned to one per keepRecent intervals, so that explaining an old
// event replays at most that much.
const keepRecent = 10

func (p *snapshotter) thin(ctx context.Context) error {
	s := p.s
	snaps, err := s.cfg.Store.Snapshots(ctx)
	if err != nil || len(snaps) == 0 {
		return err
	}
	span := keepRecent * s.cfg.SnapshotEvery
	recent := snaps[0].Seq - span
	for i := 0; i+1 < len(snaps); i++ {
		// Newest first: an old one that shares its bucket with the next
		// older one goes, so each bucket keeps its oldest.
		if snaps[i].Seq < recent && snaps[i].Seq/span == snaps[i+1].Seq/span {
			if err := s.cfg.Store.DeleteSnapshot(ctx, snaps[i].Seq); err != nil {
				return err
			}
		}
	}
	return nil
}

// retain prunes the records older than the retention period, up to the
// newest snapshot that covers them, and the snapshots before it.
func (p *snapshotter) retain(ctx context.Context) error {
	s := p.s
	if s.cfg.Retain <= 0 {
		return nil
	}
	cutoff := s.cfg.Now().Add(-s.cfg.Retain)
	old, err := s.cfg.Store.SeqBefore(ctx, cutoff)
	if err != nil || old == 0 {
		return err
	}
	// The decisions the platform's feed has not reached stay, however old.
	if c, ok := s.disp.FeedCursor(ctx); ok {
		old = min(old, c)
	}
	snaps, err := s.cfg.Store.Snapshots(ctx)
	if err != nil {
		return err
	}
	var through int64
	for _, in := range snaps {
		if in.Seq <= old {
			through = in.Seq
			break
		}
	}
	pruned, err := s.cfg.Store.Pruned(ctx)
	if err != nil || through <= pruned.Through {
		return err
	}
	// The prune is a record in the log, then done.
	r := &request{prune: &store.Pruned{Through: through, Before: cutoff.UTC()}, done: make(chan struct{})}
	if err := s.enqueue(ctx, r); err != nil {
		return err
	}
	if r.err != nil {
		return r.err
	}
	start := time.Now()
	s.log.Info("pruning the log for retention", "through", through)
	if err := s.cfg.Store.Prune(ctx, through); err != nil {
		return err
	}
	for _, in := range snaps {
		if in.Seq < through {
			if err := s.cfg.Store.DeleteSnapshot(ctx, in.Seq); err != nil {
				return err
			}
		}
	}
	s.forgetThrough(through)
	s.log.Info("pruned the log for retention", "through", through, "older_than", cutoff.UTC().Format(time.RFC3339), "took_ms", time.Since(start).Milliseconds())
	return nil
}

// forgetThrough forgets the ids of the events pruned, up to record
// through: posted again, each is a new event.
func (s *Service) forgetThrough(through int64) {
	for _, id := range s.recent.Keys() {
		if k, ok := s.recent.Peek(id); ok && k.seq <= through {
			s.recent.Remove(id)
		}
	}
}
