// Package service runs Switchboard as an HTTP service: the messaging
// platform posts events, the service answers with decisions once they are
// durable, and keeps the live state of agents, conversations and queues.
//
// Every accepted event goes through one commit loop: events are decided in
// order on one engine, on the service's own clock, and the decisions of all
// the requests waiting at that moment are committed to the store in one
// transaction (group commit) before any of them is answered. A commit that
// fails changes nothing: every event in it is refused and the state is
// rebuilt from the store; if it cannot be, the service refuses writes until
// it can. The state is checkpointed in the background (snapshots), so a
// restart is the newest snapshot plus the log after it.
package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/switchboard-dev/switchboard/delivery"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gojson "github.com/goccy/go-json"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Config sets up a service.
type Config struct {
	Rules *dsl.RuleSet
	// Load compiles the rule set again, for reloads; nil disables them.
	Load func() (*dsl.RuleSet, dsl.Diagnostics)
	// Unfinished, when set, is called at start with the rules the log runs
	// (nil: the log is empty), before the files are compared with them. It
	// finishes a change to the files that a stop cut short (a console
	// publish) and says what it did: when it put the files back, they are
	// compiled again (Load), and started on as usual; when it could not,
	// they are not made live at start: the log's rules stay.
	Unfinished func(running *dsl.RuleSet) Settled
	Store      store.Store
	// Token, when set, must be presented as "Authorization: Bearer TOKEN" on
	// every /v1 call.
	Token string
	Log   *slog.Logger
	Seed  uint64
	// Now is the wall clock. The engine runs on it (never backwards).
	Now func() time.Time
	// MaxBody is the largest request body accepted, in bytes.
	MaxBody int64
	// RecentIDs is how many recent event ids are kept in memory in front of
	// the store, to answer retries without a lookup.
	RecentIDs int
	// SnapshotEvery is how many records may follow the newest snapshot
	// before another is taken (default 10,000); SnapshotInterval how long
	// (default 1 minute) when any came at all.
	SnapshotEvery    int64
	SnapshotInterval time.Duration
	// Retain, when set, prunes the events older than that once a snapshot
	// covers them.
	Retain time.Duration
	// CheckInterval is how often the store's file is checked (default
	// 250 ms).
	CheckInterval time.Duration
	// Explains is how many explanations may be computed at once (default 2).
	Explains int
	// Delivery says where actions go (webhooks, email); nil: nowhere yet,
	// and notifications are recorded dead with the reason.
	Delivery *delivery.Config
	// DeliveryOptions tune the dispatcher (tests shorten its retries).
	DeliveryOptions delivery.Options
}

// Service is a running Switchboard.
type Service struct {
	// failLogged is when each rule's failing condition was last logged.
	failLogged map[string]time.Time
	cfg        Config
	log        *slog.Logger

	mu sync.Mutex // guards eng, seq, next, rs, inflight, pending: the commit loop and the readers
	// reloadMu makes reloads one at a time, a publish's file writes
	// included.
	reloadMu sync.Mutex
	eng      *engine.Engine
	seq      int64        // the last record committed
	rs       *dsl.RuleSet // the rule set running
	// The commit loop decides the next group while the one before is
	// being written: the engine may hold decisions not yet durable. next
	// is the last record decided; inflight counts the groups decided and
	// not yet committed, whose ids are in pending. Readers wait (idle)
	// until inflight is 0, so they never see what is not on disk.
	next     int64
	inflight int
	pending  map[string]known
	poisoned bool // a group failed: those decided after it are refused too
	// tickPause is when a tick that could not be stored is tried again;
	// tickBackoff how long the last pause was.
	tickPause   time.Time
	tickBackoff time.Duration
	// commitPause is when events are tried again after commits failed
	// twice or more in a row (a full disk): groups that come before are refused without being
	// decided, rather than each deciding, failing, and rebuilding the
	// state. commitBackoff is how long the last pause was.
	commitPause   time.Time
	commitBackoff time.Duration
	commitFailed  bool          // the last commit failed
	rebuildTook   time.Duration // how long the last rebuild took
	idle          *sync.Cond
	readers       atomic.Int32 // readers waiting for the state

	recent *lru.Cache[string, known] // event id → what the store holds
	// complete is true while recent holds every stored id, so that a miss
	// means the event is new without asking the store.
	complete atomic.Bool

	// Refusals for a wrong token since the last said in the log.
	wrongMu     sync.Mutex
	wrongLogged time.Time
	wrongSince  int

	reqs    chan *request
	stopped chan struct{} // closed once the commit loop has ended

	// fault is why the service refuses writes: the store failed and the
	// state could not be rebuilt, or the database file is gone. Nil when
	// healthy.
	fault atomic.Pointer[string]
	// failed is the last commit that failed, while none has succeeded
	// since: the state was rebuilt, but the store refuses (a full disk).
	failed   atomic.Pointer[commitFailure]
	version  atomic.Pointer[string] // the rules running, for /healthz
	stopping atomic.Bool

	j *journal.Journal // the log, read back into engines
	// sh is the store when several instances share it (PostgreSQL): the
	// log is then appended under its lock, after catching up.
	sh       store.Shared
	reach    atomic.Int64           // when the shared store last answered (Unix ns)
	unreach  atomic.Pointer[string] // why it does not, while it does not
	catching atomic.Bool            // catching up with a long tail
	tailRead atomic.Int64           // when an append of this instance last read the log's tail under its lock (Unix ns)
	explains chan struct{}          // explanation slots
	snap     *snapshotter
	eraseMu  sync.Mutex // one erasure at a time
	m        *metrics

	plan    *delivery.Planner    // a decision's deliveries, made with it
	disp    *delivery.Dispatcher // works the outbox
	retryMu sync.Mutex           // one retry of a delivery at a time
	// lastRequest is when a request last came (Unix ns), and cpu whether
	// the process is short of CPU: deliveries yield to a burst of events.
	lastRequest atomic.Int64
	cpu         cpuGauge

	bcast        sync.Mutex
	committed    chan struct{} // closed at a commit: streams wait on it
	tail         []frame       // the last records committed, while streams are open
	streams      atomic.Int64  // decision streams open
	streamsDone  chan struct{} // closed to end the decision streams
	closeStreams sync.Once
}

// known is what the service knows of a stored event id.
type known struct {
	hash  [hashSize]byte
	seq   int64
	rules string
}

const hashSize = 16

// request is work for the commit loop, and where to answer.
type request struct {
	events  []*incoming
	reload  *dsl.RuleSet // a reload instead of events
	note    ReloadNote   // who reloaded and why
	erase   string       // a contact to erase instead of events
	eraseID string       // the id of the erasure's record
	convs   []string     // the erased contact's open conversations
	prune   *store.Pruned
	results []result
	done    chan struct{}
	start   time.Time
	err     error  // a reload's, erasure's or prune's outcome
	seq     int64  // the seq of the record it made
	letGo   []byte // a reload's decision: the work it let go; nil for none
}

// incoming is an event as a client sent it.
type incoming struct {
	ev   *triggers.Event
	raw  []byte
	hash [hashSize]byte
}

// result is what became of one event.
type result struct {
	decision []byte // the decision as JSON; nil for a replay or an error
	err      error
	dup      bool   // an event with this id was decided before
	seq      int64  // its place in the log
	rules    string // the version of the rule set that decided it
}

var (
	// errNotStored is answered when the store failed: nothing changed.
	errNotStored = errors.New("the event could not be stored; nothing changed, send it again")
	// errUnconfirmed is answered when a commit's answer was lost and the
	// database could not be asked whether it went through: the events may
	// be stored. It is errNotStored to every check but its words.
	errUnconfirmed error = unconfirmed{}
	// errStopping is answered once the service is shutting down.
	errStopping = errors.New("the service is stopping; nothing changed, send it again")
	// errConflict: an id used before for another event.
	errConflict = errors.New("id used before for a different event")
)

// refusal is the answer while the service refuses writes.
type refusal struct{ reason string }

func (r *refusal) Error() string {
	return "the service is not accepting events: " + r.reason + "; nothing changed, send it again later"
}

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
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 10_000
	}
	if cfg.SnapshotInterval == 0 {
		cfg.SnapshotInterval = time.Minute
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 250 * time.Millisecond
	}
	if cfg.Explains == 0 {
		cfg.Explains = 2
	}
	s := &Service{cfg: cfg, log: cfg.Log, reqs: make(chan *request, 1024), stopped: make(chan struct{}),
		explains: make(chan struct{}, cfg.Explains), pending: map[string]known{}}
	s.idle = sync.NewCond(&s.mu)
	s.sh, _ = cfg.Store.(store.Shared)
	s.m = newMetrics(s)
	s.committed, s.streamsDone = make(chan struct{}), make(chan struct{})
	s.plan = delivery.NewPlanner(cfg.Delivery)
	opts := cfg.DeliveryOptions
	opts.Registerer = s.m.reg
	if opts.Now == nil {
		opts.Now = cfg.Now
	}
	if opts.Busy == nil {
		opts.Busy = s.busy
	}
	s.disp = delivery.NewDispatcher(cfg.Store, s.plan.Config(), cfg.Log, opts)
	s.recent, _ = lru.NewWithEvict[string, known](cfg.RecentIDs, func(string, known) { s.complete.Store(false) })
	// The log's seed is the one its decisions were made with: a replay
	// needs it, whatever --seed says now. (Of instances starting at once
	// on a shared store, the first to store its seed gives it to all.)
	if s.sh != nil {
		v, err := s.sh.SetMetaOnce(ctx, journal.SeedKey, strconv.FormatUint(cfg.Seed, 10))
		if err != nil {
			return nil, err
		}
		if seed, _ := strconv.ParseUint(v, 10, 64); seed != cfg.Seed {
			s.log.Warn("the log was decided with another seed; it is kept", "seed", seed, "given", cfg.Seed)
			s.cfg.Seed = seed
		}
	} else if meta, err := cfg.Store.Meta(ctx, journal.SeedKey); err != nil {
		return nil, err
	} else if v, ok := meta[journal.SeedKey]; ok {
		seed, _ := strconv.ParseUint(v, 10, 64)
		if seed != cfg.Seed {
			s.log.Warn("the log was decided with another seed; it is kept", "seed", seed, "given", cfg.Seed)
			s.cfg.Seed = seed
		}
	} else if err := cfg.Store.SetMeta(ctx, journal.SeedKey, strconv.FormatUint(cfg.Seed, 10)); err != nil {
		return nil, err
	}
	s.j = journal.New(cfg.Store, cfg.Rules, s.cfg.Seed)
	// The rules started with are kept, so that a replay finds them whatever
	// the files on disk say later.
	if err := cfg.Store.SaveRuleSet(ctx, cfg.Rules.Version, ruleSetFiles(cfg.Rules)); err != nil {
		return nil, err
	}
	st, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	// The recent ids hold every stored id only when the whole log was
	// replayed and none of it evicted (install clears this on eviction).
	// (Never when other instances append too.)
	s.complete.Store(st.FromSnapshot == 0 && st.Pruned == 0 && s.sh == nil)
	s.install(st)
	s.snap = newSnapshotter(s, st.FromSnapshot)
	if snaps, err := cfg.Store.Snapshots(ctx); err == nil && len(snaps) > 0 {
		s.snap.last.Store(snaps[0].Seq)
		s.snap.size.Store(snaps[0].Size)
	}
	s.finishErasures(ctx)
	// The platform is owed the decisions after its feed's cursor, or,
	// the first time, those from now on.
	if err := s.disp.OpenFeed(ctx, cfg.Store, s.seq); err != nil {
		return nil, err
	}
	// A publish cut short (its table written, its reload never recorded)
	// is undone: whoever published got no answer.
	if cfg.Unfinished != nil {
		var running *dsl.RuleSet
		if s.seq > 0 {
			running = s.rs
		}
		switch cfg.Unfinished(running) {
		case PutBack:
			// The files as put back, with whatever else changed on disk
			// meanwhile: starting on them is a reload, as usual.
			if cfg.Load == nil {
				if s.seq > 0 {
					cfg.Rules = s.rs
				}
				break
			}
			switch rs, ds := cfg.Load(); {
			case rs != nil:
				if err := cfg.Store.SaveRuleSet(ctx, rs.Version, ruleSetFiles(rs)); err != nil {
					return nil, err
				}
				cfg.Rules = rs
			case s.seq > 0:
				s.log.Error("the files as put back do not compile; the service runs the rules it last recorded", "problems", ds.Error())
				cfg.Rules = s.rs
			}
		case NotPutBack:
			if s.seq > 0 {
				cfg.Rules = s.rs
			}
		}
	}
	// Starting on other rules than the log's last is a reload; an
	// instance of several follows the log's instead (see startShared).
	if s.sh != nil {
		s.startShared(cfg.Rules)
	} else if s.rs.Version != cfg.Rules.Version {
		if err := s.startReload(ctx, cfg.Rules); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Settled is what Config.Unfinished did at start.
type Settled int

const (
	// Untouched: nothing was cut short; the files are as compiled.
	Untouched Settled = iota
	// PutBack: a change cut short was undone; the files are compiled again.
	PutBack
	// NotPutBack: a change cut short could not be undone; the files on
	// disk hold what was never published, and the log's rules run.
	NotPutBack
)

// install makes a rebuilt state the live one; the caller holds s.mu (or
// owns s).
func (s *Service) install(st *state) {
	s.eng, s.seq, s.next, s.rs = st.Engine, st.Seq, st.Seq, st.Rules
	v := st.Rules.Version
	s.version.Store(&v)
	for _, k := range st.ids {
		s.recent.Add(k.id, k.known)
	}
	if s.sh != nil && s.disp != nil {
		// The state may now be past records other instances appended
		// that were never handed on: the feed and the streams read them
		// from the store.
		s.bcast.Lock()
		s.tail = s.tail[:0]
		s.bcast.Unlock()
		s.disp.Resync(s.seq)
	}
}

// startReload records a reload before the loop runs.
func (s *Service) startReload(ctx context.Context, rs *dsl.RuleSet) error {
	r := &request{reload: rs, note: ReloadNote{By: "serve", Reason: "started on other rules than the log's last"}, done: make(chan struct{})}
	s.commit(ctx, []*request{r})
	return r.err
}

func ruleSetFiles(rs *dsl.RuleSet) []store.RuleSetFile {
	var out []store.RuleSetFile
	for _, f := range rs.Sources.Files() {
		out = append(out, store.RuleSetFile{Name: f.Name, Text: string(f.Text)})
	}
	return out
}

// Version is the version of the rules the service runs.
func (s *Service) Version() string { return *s.version.Load() }

// Ready reports whether the service accepts events, and if not, why.
func (s *Service) Ready() (bool, string) {
	if s.stopping.Load() {
		return false, "stopping"
	}
	if f := s.fault.Load(); f != nil {
		return false, *f
	}
	if c := s.failed.Load(); c != nil && time.Since(c.at) < failedUnready {
		return false, fmt.Sprintf("the last commit failed %s ago (%s); events are refused while commits fail", time.Since(c.at).Round(time.Second), c.why)
	}
	if s.sh != nil {
		return s.sharedReady()
	}
	return true, ""
}

// commitFailure is a commit that failed: when, and why.
type commitFailure struct {
	at  time.Time
	why string
}

// failedUnready is how long a failed commit makes the service say it is
// not ready: a load balancer sends the events elsewhere meanwhile, then
// tries it again. (A commit that succeeds makes it ready at once.)
const failedUnready = 5 * time.Second

// Stopping marks the service as shutting down: /readyz says so, so that a
// load balancer sends no more.
func (s *Service) Stopping() { s.stopping.Store(true) }

// setFault makes the service refuse writes for reason ("" clears it).
func (s *Service) setFault(reason string) {
	if reason == "" {
		if s.fault.Swap(nil) != nil {
			s.log.Info("accepting events again")
		}
		return
	}
	if old := s.fault.Swap(&reason); old == nil || *old != reason {
		s.log.Error("refusing events until this is fixed", "reason", reason)
	}
}

// Submit decides events and makes them durable, in order. It returns when
// every one has been committed or refused.
func (s *Service) Submit(ctx context.Context, events []*incoming) ([]result, error) {
	r := &request{events: events, results: make([]result, len(events)), done: make(chan struct{}), start: time.Now()}
	if err := s.enqueue(ctx, r); err != nil {
		return nil, err
	}
	return r.results, nil
}

// enqueue hands r to the commit loop and waits for its answer.
func (s *Service) enqueue(ctx context.Context, r *request) error {
	s.lastRequest.Store(time.Now().UnixNano())
	select {
	case s.reqs <- r:
	case <-s.stopped:
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-r.done: // once taken, a request is committed or refused
		return nil
	case <-s.stopped:
		select {
		case <-r.done:
			return nil
		default:
			return errStopping // queued after the loop's last look
		}
	}
}

// Run is the commit loop, the wall clock for timers, the watch on the
// store's file and the snapshots. It returns when ctx is done, after
// answering every request it took.
func (s *Service) Run(ctx context.Context) {
	defer close(s.stopped)
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); s.follow(bg) }()
	go func() { defer wg.Done(); s.cpu.run(bg) }()
	go func() { defer wg.Done(); s.watch(bg) }()
	go func() { defer wg.Done(); s.snap.run(bg) }()
	go func() { defer wg.Done(); s.runDeliveries(bg) }()
	defer func() { stopBg(); wg.Wait() }()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	retry := time.Second // between attempts to rebuild a broken state
	// The next attempt's time, set once at a fault: requests refused
	// meanwhile go round the loop and must not push it back.
	var repairAt time.Time
	// One group is written while the next is decided: fl is being
	// written, ready is decided and waits for it.
	var fl, ready *flight
	for {
		if fl == nil && ready != nil {
			fl, ready = ready, nil
			go s.write(ctx, fl)
		}
		var flDone chan error
		if fl != nil {
			flDone = fl.done
		}
		reqs := s.reqs
		wait := s.untilDue()
		if fl != nil {
			// Events decide due timers as they come; a tick waits for the
			// write, whose end wakes the loop anyway.
			wait = time.Hour
		}
		switch {
		case ready != nil && len(ready.recs) >= maxGroup:
			reqs = nil // big enough: wait for the write before
		case s.readers.Load() > 0:
			reqs, wait = nil, time.Millisecond // let the readers in first
		}
		if s.fault.Load() != nil {
			// Repairing: due timers wait for it, no spinning.
			if repairAt.IsZero() {
				repairAt = time.Now().Add(retry)
			}
			if fl == nil {
				wait = max(time.Until(repairAt), 0)
			}
		} else {
			repairAt = time.Time{}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			s.stopping.Store(true)
			if fl != nil {
				s.finish(fl, <-fl.done)
			}
			if ready != nil {
				s.mu.Lock()
				poisoned := s.poisoned
				s.mu.Unlock()
				if poisoned {
					s.finish(ready, errPoisoned)
				} else {
					s.finish(ready, s.append(context.WithoutCancel(ctx), ready))
				}
			}
			s.drainRefuse()
			return
		case err := <-flDone:
			s.finish(fl, err)
			fl = nil
			if err != nil && ready != nil {
				s.finish(ready, errPoisoned) // decided on what was not stored
				ready = nil
			}
		case r := <-reqs:
			batch := []*request{r}
			n := len(r.events)
		more:
			for len(batch) < 1024 && n < 10_000 {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					n += len(r.events)
				default:
					break more
				}
			}
			if s.sh != nil {
				// One group at a time: the next is decided after what
				// the other instances append meanwhile.
				s.commitShared(ctx, batch)
				continue
			}
			if s.pausedCommits(ctx, batch) {
				continue
			}
			if f := s.prepare(ctx, batch); f != nil {
				switch {
				case fl == nil:
					fl = f
					go s.write(ctx, fl)
				case ready == nil:
					ready = f
				default:
					// What comes while a group is written joins the next
					// one: one fsync for all of it.
					s.merge(ready, f)
				}
			}
		case <-timer.C:
			if fl != nil || ready != nil {
				continue
			}
			if s.fault.Load() != nil {
				s.repair(ctx)
				repairAt = time.Now().Add(retry)
				continue
			}
			s.tick(ctx)
		}
	}
}

// untilDue is how long until the next timer is due, looking again at
// least twice a second in case the wall clock jumped.
func (s *Service) untilDue() time.Duration {
	const poll = 500 * time.Millisecond
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eng == nil {
		return poll
	}
	due, ok := s.eng.NextDue()
	if !ok {
		return poll
	}
	// After a tick that could not be stored, the next try waits a while.
	return min(max(due.Sub(s.cfg.Now()), time.Until(s.tickPause), 0), poll)
}

// drainRefuse answers requests still queued when the loop stops.
func (s *Service) drainRefuse() {
	for {
		select {
		case r := <-s.reqs:
			for i := range r.results {
				r.results[i] = result{err: errStopping}
			}
			r.err = errStopping
			close(r.done)
		default:
			return
		}
	}
}

// lockState locks the live state once no group is in flight: what it
// shows is on disk. The caller unlocks s.mu.
func (s *Service) lockState() {
	s.readers.Add(1)
	s.mu.Lock()
	for s.inflight > 0 {
		s.idle.Wait()
	}
	s.readers.Add(-1)
}

// now is the engine's time for the next decision: the wall clock, never
// before the last decision's; the caller holds s.mu.
func (s *Service) now() time.Time {
	t := s.cfg.Now().UTC()
	if c := s.eng.Clock(); t.Before(c) {
		return c
	}
	return t
}

// watch checks the store's file, so that a deleted or replaced database
// stops acknowledgements within a second even when nothing is posted.
func (s *Service) watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.cfg.Store.Check(); err != nil {
			s.setFault("the database file is gone: " + err.Error() + "; restart switchboard once it is restored")
		}
	}
}

// hashEvent is the idempotency hash of an event: its canonical JSON, so
// that a retry with other spacing or key order is the same event. The
// event's at counts only when the client gave one.
func hashEvent(ev *triggers.Event) [hashSize]byte {
	b, err := gojson.Marshal(ev)
	if err != nil {
		b = []byte(ev.ID)
	}
	sum := sha256.Sum256(b)
	var h [hashSize]byte
	copy(h[:], sum[:])
	return h
}

// flight is a group of requests decided on the live engine, on its way
// to the store.
type flight struct {
	batch []*request
	recs  []store.Record
	acts  []engine.Action
	seq   int64 // its last record
	rules string
	done  chan error
	// deliveries counts the records' outbox deliveries, to wake the
	// dispatcher.
	deliveries int
	// feed are the decisions owed to the platform, for its feed.
	feed []delivery.Item
}

// maxCommitPause is the longest pause after failed commits, unless the
// rebuild each costs takes longer (commitPauseMax): while they fail, the
// store is tried again at least this often.
const maxCommitPause = time.Second

// commitPauseMax is the longest pause after failed commits: maxCommitPause,
// or four times the last rebuild, up to a minute, so that rebuilding after
// failed commits takes a fifth of the time at most, however long the log
// since the last snapshot. The caller holds s.mu.
func (s *Service) commitPauseMax() time.Duration {
	return max(maxCommitPause, min(4*s.rebuildTook, time.Minute))
}

// pauseCommits starts a pause after failed commits, twice the last one
// (100 ms at first) up to commitPauseMax. The caller holds s.mu.
func (s *Service) pauseCommits() {
	s.commitBackoff = min(max(2*s.commitBackoff, 100*time.Millisecond), s.commitPauseMax())
	s.commitPause = time.Now().Add(s.commitBackoff)
}

// pausedCommits refuses a group that comes while commits are paused after
// failures, and says whether it did. One group is tried per pause, which
// grows from 100 ms to commitPauseMax while they fail, and only once a
// small write to the store (a probe) succeeds: a full disk costs a
// refusal per request, not a decision, a failed write and a rebuild of the
// state each.
func (s *Service) pausedCommits(ctx context.Context, batch []*request) bool {
	s.mu.Lock()
	paused := time.Now().Before(s.commitPause)
	failed := s.commitFailed
	s.mu.Unlock()
	if !paused && failed {
		// The store has not taken a commit since: a probe first, which
		// costs no decision and no rebuild when it fails.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.cfg.Store.SetMeta(pctx, probeKey, s.cfg.Now().UTC().Format(time.RFC3339Nano))
		cancel()
		if err != nil {
			s.mu.Lock()
			s.pauseCommits()
			s.failed.Store(&commitFailure{at: time.Now(), why: err.Error()})
			s.mu.Unlock()
			s.log.Error("the store still refuses writes: refusing events", "err", err, "events_refused_for", s.commitBackoff.String())
			paused = true
		}
	}
	if !paused {
		return false
	}
	var why string
	if c := s.failed.Load(); c != nil {
		why = c.why
	}
	s.refuseAll(batch, &refusal{reason: "the last commit failed (" + why + "); the store is tried again shortly"})
	s.answer(batch)
	return true
}

// probeKey is the meta key a paused service writes to learn whether the
// store takes writes again.
const probeKey = "write-probe"

// maxGroup is how many records the next group gathers while one is
// written, at most.
const maxGroup = 10_000

// merge adds a group decided after into to it, to be written together.
func (s *Service) merge(into, f *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	into.batch = append(into.batch, f.batch...)
	into.recs = append(into.recs, f.recs...)
	into.acts = append(into.acts, f.acts...)
	into.deliveries += f.deliveries
	into.feed = append(into.feed, f.feed...)
	into.seq, into.rules = f.seq, f.rules
	s.inflight--
}

// errPoisoned refuses a group decided after one that failed to commit.
var errPoisoned = errors.New("decided after a group that could not be stored")

// commit decides a group of requests and stores them in one transaction,
// with no other group in flight. If the store fails, every request of the
// group is refused and the state rebuilt; nothing of the group is kept.
func (s *Service) commit(ctx context.Context, batch []*request) {
	if s.sh != nil {
		s.commitShared(ctx, batch)
		return
	}
	if f := s.prepare(ctx, batch); f != nil {
		s.finish(f, s.append(ctx, f))
	}
}

// write stores a decided group.
func (s *Service) write(ctx context.Context, f *flight) {
	f.done <- s.append(context.WithoutCancel(ctx), f)
}

// append stores a decided group in one transaction, and measures it.
func (s *Service) append(ctx context.Context, f *flight) error {
	start := time.Now()
	err := s.cfg.Store.Append(ctx, f.recs)
	if err == nil && len(f.recs) > 0 {
		s.m.stored(len(f.recs), time.Since(start))
	}
	return err
}

// prepare decides a group of requests on the live engine, after any group
// still in flight. It returns the group to write, or nil when it answered
// every request itself (the service refusing events).
func (s *Service) prepare(ctx context.Context, batch []*request) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.fault.Load(); f != nil {
		s.refuseAll(batch, &refusal{reason: *f})
		s.answer(batch)
		return nil
	}
	stored, err := s.lookup(ctx, batch)
	if err != nil {
		s.log.Error("cannot look up event ids", "err", err)
		s.refuseAll(batch, errNotStored)
		s.answer(batch)
		return nil
	}
	return s.decide(batch, stored)
}

// decide decides a group of requests whose stored ids are known; the
// caller holds s.mu.
func (s *Service) decide(batch []*request, stored map[string]known) *flight {
	f := &flight{batch: batch, done: make(chan error, 1)}
	seq := s.next
	eng, rs := s.eng, s.rs
	eng.TakeFailures() // a replay's: reported when they were decided
	now := s.now()
	inBatch := map[string]int64{}
	for _, r := range batch {
		switch {
		case r.reload != nil:
			seq++
			body, _ := gojson.Marshal(reloadBody{Version: r.reload.Version, Previous: rs.Version, ReloadNote: r.note})
			rec := internalRecord(seq, store.TypeReload, body, now, r.reload.Version)
			var letGo []engine.Action
			eng, letGo = eng.Reload(r.reload)
			rs = r.reload
			if len(letGo) > 0 {
				// The platform is told what the agents and groups removed
				// leave behind.
				d := journal.ReloadDecision(rec.ID, rs.Version, letGo)
				rec.Contacts = eng.Contacts(&triggers.Event{}, "", &d) // filed under them, as any decision
				s.planRecord(f, eng, rs, &rec, &d)
				r.letGo = rec.Decision
			}
			f.recs = append(f.recs, rec)
			r.seq = seq
			continue
		case r.erase != "":
			r.convs = eng.ContactConversations(r.erase)
			if !eng.EraseContact(r.erase) {
				r.err = errNoContact
				continue
			}
			seq++
			body, _ := gojson.Marshal(map[string]string{"contact": r.erase})
			rec := internalRecord(seq, store.TypeErase, body, now, rs.Version)
			rec.ID = r.eraseID
			rec.Contacts = []string{r.erase}
			f.recs = append(f.recs, rec)
			r.seq = seq
			continue
		case r.prune != nil:
			seq++
			body, _ := gojson.Marshal(map[string]any{"through": r.prune.Through, "before": r.prune.Before})
			f.recs = append(f.recs, internalRecord(seq, store.TypePrune, body, now, rs.Version))
			r.seq = seq
			continue
		}
		for i, in := range r.events {
			id := in.ev.ID
			if k, ok := stored[id]; ok {
				if k.hash != in.hash && k.seq > 0 {
					r.results[i] = result{err: errConflict, seq: k.seq}
				} else {
					r.results[i] = result{dup: true, seq: k.seq, rules: k.rules}
				}
				continue
			}
			if at, ok := inBatch[id]; ok {
				for _, rec := range f.recs {
					if rec.Seq != at {
						continue
					}
					r.results[i] = result{dup: true, seq: at, rules: rec.RuleSet}
					if string(rec.Hash) != string(in.hash[:]) {
						r.results[i] = result{err: errConflict, seq: at}
					}
				}
				continue
			}
			if in.ev.Type == triggers.TypeTick && s.sh != nil {
				// Another instance may have fired it: it is due no more.
				if due, ok := eng.NextDue(); !ok || due.After(now) {
					r.results[i] = result{dup: true}
					continue
				}
			}
			// An answer is checked against the offer as it stands once the
			// unanswered rules due have run (one may have moved the
			// conversation on): what is due fires first, as a tick of its
			// own, as simulate does.
			if due := eng.DueBefore(in.ev, now); due != nil {
				tick := tickEvent(due.ID)
				if _, done := stored[tick.ev.ID]; !done && inBatch[tick.ev.ID] == 0 {
					if d, err := eng.DecideAt(tick.ev, now); err == nil {
						seq++
						f.recs = append(f.recs, s.record(f, eng, rs, tick, &d, seq, now, ""))
						inBatch[tick.ev.ID] = seq
					}
				}
			}
			var own string
			if in.ev.Conversation != "" {
				own = eng.ConversationContact(in.ev.Conversation)
			}
			d, err := eng.DecideAt(in.ev, now)
			if err != nil {
				r.results[i] = result{err: err}
				continue
			}
			seq++
			rec := s.record(f, eng, rs, in, &d, seq, now, own)
			f.recs = append(f.recs, rec)
			inBatch[id] = seq
			r.results[i] = result{decision: rec.Decision, seq: seq, rules: rs.Version}
		}
	}
	s.eng, s.rs, s.next = eng, rs, seq
	f.seq, f.rules = seq, rs.Version
	return s.decided(f)
}

// record makes the stored record of a decided event, with the deliveries
// its decision plans.
func (s *Service) record(f *flight, eng *engine.Engine, rs *dsl.RuleSet, in *incoming, d *engine.Decision, seq int64, now time.Time, own string) store.Record {
	rec := store.Record{Seq: seq, ID: in.ev.ID, Type: in.ev.Type, At: in.ev.At, Clock: now,
		Event: in.raw, Hash: append([]byte(nil), in.hash[:]...), RuleSet: rs.Version, Contacts: eng.Contacts(in.ev, own, d)}
	s.planRecord(f, eng, rs, &rec, d)
	return rec
}

// planRecord gives rec decision d, and the deliveries and the platform's
// feed item d makes.
func (s *Service) planRecord(f *flight, eng *engine.Engine, rs *dsl.RuleSet, rec *store.Record, d *engine.Decision) {
	f.acts = append(f.acts, d.Actions...)
	rec.Decision = d.AppendJSON(nil)
	contact := first(rec.Contacts)
	planned := delivery.Decision{Seq: rec.Seq, At: rec.Clock, Event: rec.ID, Conversation: d.Conversation, Contact: contact, JSON: rec.Decision, Actions: d.Actions}
	rec.Deliveries = s.plan.Plan(planned, rs.Team, func(conv string) engine.AboutView { return eng.About(conv, contact) })
	f.deliveries += len(rec.Deliveries)
	if it, ok := s.plan.Item(planned); ok {
		f.feed = append(f.feed, it)
	}
}

// decided notes a decided group's records as pending until written.
func (s *Service) decided(f *flight) *flight {
	s.reportFailures(s.eng.TakeFailures())
	for _, rec := range f.recs {
		if rec.Hash != nil {
			var k known
			copy(k.hash[:], rec.Hash)
			k.seq, k.rules = rec.Seq, rec.RuleSet
			s.pending[rec.ID] = k
		}
	}
	s.inflight++
	return f
}

// reportFailures counts the rule conditions that failed at run time,
// and says so in the log, once a minute at most for each rule.
func (s *Service) reportFailures(fs []engine.CondFailure) {
	for _, f := range fs {
		s.m.condFailures.WithLabelValues(f.Rule).Add(float64(f.Count))
		now := time.Now()
		if last, ok := s.failLogged[f.Rule]; ok && now.Sub(last) < time.Minute {
			continue
		}
		if s.failLogged == nil {
			s.failLogged = map[string]time.Time{}
		}
		s.failLogged[f.Rule] = now
		s.log.Warn("a rule's condition failed at run time, so the rule did not match; GET /v1/events/{id}/explain shows why",
			"rule", f.Rule, "at", f.Pos.String(), "event", f.Event, "events", f.Count, "err", f.Err)
	}
}

// finish makes a written group committed, or refused when err is set,
// and answers its requests. When the last group in flight is done after
// a failure, the state is rebuilt from the store.
func (s *Service) finish(f *flight, err error) {
	s.mu.Lock()
	if err == nil && s.poisoned {
		err = errPoisoned
	}
	for _, rec := range f.recs {
		delete(s.pending, rec.ID)
	}
	s.inflight--
	if err != nil {
		if len(f.recs) > 0 && !errors.Is(err, errPoisoned) {
			// The first failure pauses nothing (a passing fault costs no
			// refusals); from the second in a row, commits pause.
			if s.commitFailed {
				s.pauseCommits()
			}
			s.commitFailed = true
			s.log.Error("commit failed: refusing its events and rebuilding the state from the store", "records", len(f.recs), "err", err,
				"events_refused_for", s.commitBackoff.String())
			s.failed.Store(&commitFailure{at: time.Now(), why: err.Error()})
		}
		why := errNotStored
		if errors.Is(err, errUnconfirmed) {
			why = errUnconfirmed
		}
		s.refuseAll(f.batch, why)
		s.poisoned = true
	} else {
		if len(f.recs) > 0 {
			s.failed.Store(nil)
			s.commitBackoff, s.commitPause, s.commitFailed = 0, time.Time{}, false
		}
		s.seq = f.seq
		for _, rec := range f.recs {
			if rec.Hash == nil {
				continue // not an event
			}
			var k known
			copy(k.hash[:], rec.Hash)
			k.seq, k.rules = rec.Seq, rec.RuleSet
			s.recent.Add(rec.ID, k)
		}
		v := f.rules
		s.version.Store(&v)
		s.m.count(f.acts)
		s.snap.committedTo(f.seq)
	}
	if err == nil && len(f.recs) > 0 {
		s.signalCommit(f.recs)
		s.disp.Committed(f.feed, f.seq)
		if f.deliveries > 0 {
			s.disp.Wake()
		}
	}
	if s.inflight == 0 && s.poisoned {
		s.poisoned = false
		s.rebuild(context.Background())
	}
	s.idle.Broadcast()
	s.mu.Unlock()
	s.answer(f.batch)
}

func first(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return list[0]
}

// internalRecord is a record the service makes itself.
func internalRecord(seq int64, typ string, body []byte, now time.Time, rules string) store.Record {
	return store.Record{Seq: seq, ID: store.IDPrefix + typ + ":" + strconv.FormatInt(seq, 10), Type: typ, Clock: now,
		Event: body, Decision: []byte("{}"), RuleSet: rules}
}

// lookup finds which of the batch's event ids are stored: in the recent
// cache, else (unless it holds every id) in the store, in one query.
func (s *Service) lookup(ctx context.Context, batch []*request) (map[string]known, error) {
	out := map[string]known{}
	var ask []string
	for _, r := range batch {
		for _, in := range r.events {
			if k, ok := s.pending[in.ev.ID]; ok {
				out[in.ev.ID] = k
			} else if k, ok := s.recent.Get(in.ev.ID); ok {
				out[in.ev.ID] = k
			} else if !s.complete.Load() {
				ask = append(ask, in.ev.ID)
			}
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	found, err := s.cfg.Store.Lookup(ctx, ask)
	if err != nil {
		return nil, err
	}
	for id, f := range found {
		out[id] = knownOf(f.Seq, f.Hash, f.RuleSet)
	}
	return out, nil
}

// refuseAll answers every request of a group with err.
func (s *Service) refuseAll(batch []*request, err error) {
	for _, r := range batch {
		for i := range r.results {
			r.results[i] = result{err: err}
		}
		r.err = err
		r.seq = 0
	}
}

// answer wakes the requests of a group and counts the outcomes.
func (s *Service) answer(batch []*request) {
	for _, r := range batch {
		for _, res := range r.results {
			switch {
			case errors.Is(res.err, errNotStored), isRefusal(res.err):
				s.m.refused.WithLabelValues("store").Inc()
			case res.err != nil:
				s.m.refused.WithLabelValues("does not fit the state").Inc()
			default:
				s.m.latency.Observe(time.Since(r.start).Seconds())
			}
		}
		close(r.done)
	}
}

func isRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}

// rebuild makes the live state the store's again after a failed commit;
// when it cannot, the service refuses writes (and reads) until repair
// succeeds. The caller holds s.mu.
func (s *Service) rebuild(ctx context.Context) {
	start := time.Now()
	defer func() { s.rebuildTook = time.Since(start) }()
	st, err := s.load(context.WithoutCancel(ctx))
	if err != nil {
		s.eng = nil
		s.setFault("the state could not be rebuilt from the store: " + err.Error())
		return
	}
	s.install(st)
	s.complete.Store(false)
}

// repair tries again to rebuild a state that could not be.
func (s *Service) repair(ctx context.Context) {
	if err := s.cfg.Store.Check(); err != nil {
		return // the file is gone: only a restart helps
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault.Load() == nil {
		return
	}
	st, err := s.load(context.WithoutCancel(ctx))
	if err != nil {
		s.setFault("the state could not be rebuilt from the store: " + err.Error())
		return
	}
	s.install(st)
	s.complete.Store(false)
	s.setFault("")
}

// tickEvent is the tick the service makes, id triggers.TickID of what is
// due: its id follows from the time, so that a tick is stored once.
func tickEvent(id string) *incoming {
	ev := &triggers.Event{ID: id, Type: triggers.TypeTick}
	raw, _ := gojson.Marshal(map[string]string{"id": id, "type": triggers.TypeTick})
	in := &incoming{ev: ev, raw: raw}
	in.hash = hashEvent(ev)
	return in
}

// tick fires the timers that are due, as an event the service makes.
func (s *Service) tick(ctx context.Context) {
	s.mu.Lock()
	if s.eng == nil || time.Now().Before(s.tickPause) {
		// (The loop looks twice a second; a paused tick waits its pause.)
		s.mu.Unlock()
		return
	}
	due, ok := s.eng.NextDue()
	now := s.now()
	s.mu.Unlock()
	if !ok || due.After(now) {
		return
	}
	in := tickEvent(triggers.TickID(due))
	id := in.ev.ID
	r := &request{events: []*incoming{in}, results: make([]result, 1), done: make(chan struct{}), start: time.Now()}
	s.commit(ctx, []*request{r})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.results[0].err; err != nil {
		// Tried again after a pause, growing while it fails: a database
		// that is down is not hammered, nor the log flooded.
		s.tickBackoff = min(max(2*s.tickBackoff, 100*time.Millisecond), 10*time.Second)
		s.tickPause = time.Now().Add(s.tickBackoff)
		s.log.Error("a due timer could not be fired; trying again", "tick", id, "in", s.tickBackoff.String(), "err", err)
		return
	}
	s.tickBackoff, s.tickPause = 0, time.Time{}
}

type unconfirmed struct{}

func (unconfirmed) Error() string {
	return "the database did not confirm whether the event was stored; send it again with the same id: it is never stored twice"
}

func (unconfirmed) Is(target error) bool { return target == errNotStored }
