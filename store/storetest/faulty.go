// Package storetest has what tests of code built on a store need: a store
// that fails on command.
package storetest

import (
	"context"
	"errors"
	"sync"

	"github.com/switchboard-dev/switchboard/store"
)

// ErrInjected is the error a Faulty store fails with.
var ErrInjected = errors.New("injected fault: disk full")

// Faulty wraps a store and fails its appends, replays and snapshot writes
// on command, or holds appends until released.
type Faulty struct {
	store.Store

	mu       sync.Mutex
	appends  int // fail the next n appends; -1: every one
	replays  int
	snaps    int
	metas    int
	checks   error
	failIf   func([]store.Record) bool
	hold     chan struct{}
	held     chan struct{}
	Appended int // successful appends
	// Tries counts the calls to each of Append, SaveSnapshot and
	// SetMeta, failed or not.
	Tries map[string]int
}

// Wrap returns a Faulty around s that fails nothing yet.
func Wrap(s store.Store) *Faulty { return &Faulty{Store: s} }

func take(n *int) bool {
	switch {
	case *n < 0:
		return true
	case *n > 0:
		*n--
		return true
	}
	return false
}

// FailAppends makes the next n appends fail (n < 0: all until told
// otherwise; 0: none).
func (f *Faulty) FailAppends(n int) { f.mu.Lock(); f.appends = n; f.mu.Unlock() }

// FailAppendsIf makes every append for which fail is true fail (nil: none).
func (f *Faulty) FailAppendsIf(fail func([]store.Record) bool) {
	f.mu.Lock()
	f.failIf = fail
	f.mu.Unlock()
}

// FailReplays makes the next n replays fail as they start.
func (f *Faulty) FailReplays(n int) { f.mu.Lock(); f.replays = n; f.mu.Unlock() }

// FailSnapshots makes the next n snapshot writes fail.
func (f *Faulty) FailSnapshots(n int) { f.mu.Lock(); f.snaps = n; f.mu.Unlock() }

// FailMeta makes the next n writes of meta data fail.
func (f *Faulty) FailMeta(n int) { f.mu.Lock(); f.metas = n; f.mu.Unlock() }

// Tried is how many times the store's method name was called.
func (f *Faulty) Tried(name string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.Tries[name] }

func (f *Faulty) tried(name string) {
	if f.Tries == nil {
		f.Tries = map[string]int{}
	}
	f.Tries[name]++
}

func (f *Faulty) SetMeta(ctx context.Context, key, value string) error {
	f.mu.Lock()
	f.tried("SetMeta")
	fail := take(&f.metas)
	f.mu.Unlock()
	if fail {
		return ErrInjected
	}
	return f.Store.SetMeta(ctx, key, value)
}

// FailChecks makes Check report err (nil: the wrapped store's answer).
func (f *Faulty) FailChecks(err error) { f.mu.Lock(); f.checks = err; f.mu.Unlock() }

// HoldAppends makes appends wait until Release; Held is closed once one
// waits.
func (f *Faulty) HoldAppends() (held <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.held = make(chan struct{}), make(chan struct{})
	return f.held
}

// Release lets held appends go on.
func (f *Faulty) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
}

func (f *Faulty) Append(ctx context.Context, recs []store.Record) error {
	f.mu.Lock()
	hold, held := f.hold, f.held
	f.tried("Append")
	fail := take(&f.appends)
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-held:
		default:
			close(held)
		}
		<-hold
	}
	f.mu.Lock()
	fail = fail || f.failIf != nil && f.failIf(recs)
	f.mu.Unlock()
	if fail {
		return ErrInjected
	}
	err := f.Store.Append(ctx, recs)
	if err == nil {
		f.mu.Lock()
		f.Appended++
		f.mu.Unlock()
	}
	return err
}

func (f *Faulty) Replay(ctx context.Context, after, upto int64, fn func(store.Record) error) error {
	f.mu.Lock()
	fail := take(&f.replays)
	f.mu.Unlock()
	if fail {
		return ErrInjected
	}
	return f.Store.Replay(ctx, after, upto, fn)
}

func (f *Faulty) SaveSnapshot(ctx context.Context, info store.SnapshotInfo, state []byte) error {
	f.mu.Lock()
	f.tried("SaveSnapshot")
	fail := take(&f.snaps)
	f.mu.Unlock()
	if fail {
		return ErrInjected
	}
	return f.Store.SaveSnapshot(ctx, info, state)
}

func (f *Faulty) Check() error {
	f.mu.Lock()
	err := f.checks
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Store.Check()
}
