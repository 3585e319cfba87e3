package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// The platform's feed. Every decision is owed to the platform's endpoint,
// so the log itself is that outbox: the feed reads the decisions after its
// cursor, the freshest from memory as they are committed, older ones from
// the store, and sends each, concurrently across lines and in order within
// one. A decision the endpoint takes at once costs no write at all; the
// cursor is saved a few times a second. One that fails is handed to the
// outbox, with its attempt, and so is every later decision of its line
// until the line is clear again: from then on the dispatcher works them,
// retries and all, in order. A crash forgets at most the cursor's last
// moves, and those decisions are sent again, with the same ids.

// Item is a decision owed to the platform.
type Item struct {
	Seq      int64
	Line     string
	Contact  string
	Clock    time.Time
	Decision []byte
}

func (it Item) delivery(maxAge time.Duration) store.Delivery {
	return store.Delivery{ID: DeliveryID(it.Seq, 0), Seq: it.Seq, Destination: Platform, Line: it.Line, Kind: KindDecision,
		Contact: it.Contact, Decision: it.Decision, Clock: it.Clock, Status: store.Pending,
		Created: it.Clock, Due: it.Clock, Expires: it.Clock.Add(maxAge)}
}

// Feed tuning.
const (
	// liveLimit is how many committed decisions wait in memory for the
	// feed; past it, the feed reads them back from the store.
	liveLimit = 16384
	// window is how many decisions the feed holds at once that are not
	// done: being sent or waiting behind their line.
	window = 4096
	// maxSlots bounds the decisions held from the oldest not done, done
	// ones included: one slow delivery holds the cursor, not the others,
	// until that many are taken in behind it.
	maxSlots = 65536
	// maxLag is how far behind the feed may fall while it yields to a
	// burst of events; further behind, it takes its share.
	maxLag = 10 * time.Second
	// saveEvery is how often the cursor is saved while it moves.
	saveEvery = 200 * time.Millisecond
	// readBatch is how many records a read from the store takes.
	readBatch = 512
)

// feed is the state of the platform's feed.
type feed struct {
	d *Dispatcher

	// Handed over by the commit loop.
	mu   sync.Mutex
	live []Item // committed decisions, in log order
	head int64  // the last record committed
	gap  bool   // live lost decisions: read the store up to live's first
	// forget is set when an erasure rewrote the log: the decisions held
	// are read again from there before they are sent.
	forget bool
	// recovered is set when the outbox delivered to the platform: it is
	// up again, and the feed stops holding back.
	recovered bool
	wake      chan struct{}

	// open counts the outbox's open deliveries to the platform, per
	// line; shared with the dispatcher, under lineMu.
	lineMu sync.Mutex
	open   map[string]int

	// The feed's own, on its goroutine.
	from    int64
	queued  map[int64]bool // records with an outbox row already
	next    int64          // the last record taken in
	slots   []*slot        // taken in, from the oldest not done, in log order
	active  int            // slots not done
	lines   map[string]*slot
	ready   []*slot // free to send, in log order
	sending int
	hand    []*slot // to hand to the outbox
	saved   int64   // the cursor as stored
	savedAt time.Time

	// fails counts the attempts that failed in a row (a refusal does not
	// count: the receiver is up); past tripAfter, the feed holds back
	// until pauseUntil, then tries one decision at a time until one is
	// taken, rather than hammer a receiver that is down.
	fails      int
	pauseUntil time.Time

	cursor atomic.Int64 // the cursor as stored, for views

	lost <-chan struct{}             // closed when a shared feed is no longer this process's
	held func(context.Context) error // whether it still is, before sending
}

// tripAfter is how many attempts in a row may fail before the feed holds
// back; maxPause is the longest it holds back.
const (
	tripAfter = 5
	maxPause  = time.Minute
)

// throttled says the feed yields to a burst of events: the service is
// busy, and the feed not too far behind.
func (f *feed) throttled() bool {
	if f.d.busy == nil || !f.d.busy() {
		return false
	}
	f.trim()
	return len(f.slots) == 0 || time.Since(f.slots[0].it.Clock) < maxLag
}

// room is how many more sends may start now.
func (f *feed) room(throttled bool) int {
	switch {
	case f.fails < tripAfter && throttled:
		return busyWorkers - f.sending
	case f.fails < tripAfter:
		return workers - f.sending
	case time.Now().Before(f.pauseUntil):
		return 0
	default:
		return 1 - f.sending // one at a time, until one is taken
	}
}

type slot struct {
	it      Item
	stale   bool // read again from the log before sending: an erasure came
	state   int
	outcome store.Outcome // the feed's attempt, when handed over after one
	behind  *slot         // the next of its line, waiting for this one
}

const (
	waiting = iota // queued behind its line, or ready
	inFlight
	handing // to the outbox, not yet written
	done
)

// Records reads the log.
type Records interface {
	Records(ctx context.Context, after int64, limit int) ([]store.Record, error)
}

// OpenFeed starts the platform's feed where it left off, or, the first
// time, at head: the decisions after it are owed to the platform. Without
// a platform endpoint, it forgets any feed, so that the decisions made
// meanwhile are not sent when one is configured again.
//
// When several processes share the store, one works the feed at a time:
// if another holds it, this one takes it over (in Run) once it is free.
func (d *Dispatcher) OpenFeed(ctx context.Context, log Records, head int64) error {
	if d.cfg.Platform == nil {
		err := d.out.CloseFeed(ctx, Platform, "no platform endpoint configured: the service was started without one before this decision was sent")
		if errors.Is(err, store.ErrFeedInUse) {
			d.log.Warn("no platform endpoint is configured here, but other instances send the platform its decisions: they go on doing so")
			return nil
		}
		return err
	}
	d.records = log
	d.head.Store(head)
	f, err := d.openFeed(ctx, head)
	switch {
	case errors.Is(err, store.ErrFeedHeld):
		d.contend = true
		return nil
	case err != nil:
		return err
	}
	d.contend = f.lost != nil
	d.feed.Store(f)
	return nil
}

func (d *Dispatcher) openFeed(ctx context.Context, head int64) (*feed, error) {
	st, err := d.out.OpenFeed(ctx, Platform, head)
	if errors.Is(err, store.ErrFeedHeld) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("the platform's feed: %w", err)
	}
	// A shared feed reads the store first: what was committed while it
	// was being taken was handed to no feed.
	f := &feed{d: d, wake: make(chan struct{}, 1), open: st.Open, from: st.From, queued: st.Queued, lost: st.Lost, held: st.Held,
		next: st.Cursor, saved: st.Cursor, head: head, gap: st.Cursor < head || st.Lost != nil, lines: map[string]*slot{}}
	f.cursor.Store(st.Cursor)
	return f, nil
}

// takeEvery is how often a process that does not work a shared feed
// tries to take it.
const takeEvery = 2 * time.Second

// runFeed works the feed until ctx ends. A shared one is worked while
// this process holds it, and taken again whenever it is free.
func (d *Dispatcher) runFeed(ctx context.Context, f *feed) {
	for ctx.Err() == nil {
		if f == nil {
			var err error
			f, err = d.openFeed(ctx, d.head.Load())
			if err != nil && !errors.Is(err, store.ErrFeedHeld) && ctx.Err() == nil {
				d.log.Error("cannot take the platform's feed; trying again", "err", err)
			}
			if f == nil {
				select {
				case <-ctx.Done():
				case <-time.After(takeEvery):
				}
				continue
			}
			d.log.Info("working the platform's feed", "cursor", f.cursor.Load())
			d.feed.Store(f)
			d.Resync(d.head.Load()) // the head it missed while being taken
		}
		fctx, stop := context.WithCancel(ctx)
		if f.lost != nil {
			go func() {
				select {
				case <-f.lost:
				case <-fctx.Done():
				}
				stop()
			}()
		}
		f.run(fctx)
		stop()
		d.feed.Store(nil)
		if !d.contend || ctx.Err() != nil {
			return
		}
		d.log.Warn("the platform's feed was lost (its database session ended); another process may work it now")
		f = nil
	}
}

// Committed hands the feed the decisions of a commit, and the last record
// committed. It never blocks: past liveLimit, the feed reads the store.
func (d *Dispatcher) Committed(items []Item, head int64) {
	if head > d.head.Load() {
		d.head.Store(head)
	}
	f := d.feed.Load()
	if f == nil {
		return
	}
	f.mu.Lock()
	if len(f.live)+len(items) > liveLimit {
		f.live, f.gap = f.live[:0], true
	} else {
		f.live = append(f.live, items...)
	}
	f.head = max(f.head, head)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Feeding says whether this process works the platform's feed now: only
// then do the decisions it did not make itself need handing to Committed
// as items (a feed taken later reads the store from its cursor).
func (d *Dispatcher) Feeding() bool { return d.feed.Load() != nil }

// Resync says the log reached head without handing the feed every
// decision on the way (the service rebuilt its state from the store): the
// feed reads what it has not taken in from the store.
func (d *Dispatcher) Resync(head int64) {
	if head > d.head.Load() {
		d.head.Store(head)
	}
	if f := d.feed.Load(); f != nil {
		f.readStore(head, false)
	}
}

// readStore drops the decisions held in memory, so that the feed reads
// the store from where it is up to head; forget also has it read again
// those it holds and has not sent.
func (f *feed) readStore(head int64, forget bool) {
	f.mu.Lock()
	f.live, f.gap, f.head = f.live[:0], true, max(f.head, head)
	f.forget = f.forget || forget
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Forget drops the decisions the feed holds in memory: an erasure has
// rewritten them in the log, and they are read again from there. (One
// being sent at that moment is sent as it was: it left before the erasure.)
func (d *Dispatcher) Forget() {
	if f := d.feed.Load(); f != nil {
		f.readStore(0, true)
	}
}

// Reopened says a dead delivery was made open again (retried by hand): its
// line waits for it again.
func (d *Dispatcher) Reopened(del store.Delivery) {
	if f := d.feed.Load(); f != nil && del.Destination == Platform && del.Kind == KindDecision {
		f.block(del.Line, 1)
	}
}

// closed says an outbox delivery to the platform is delivered or dead.
func (f *feed) closed(line string, delivered bool) {
	if delivered {
		f.mu.Lock()
		f.recovered = true
		f.mu.Unlock()
	}
	if line == "" {
		return
	}
	f.block(line, -1)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *feed) blocked(line string) bool {
	if line == "" {
		return false
	}
	f.lineMu.Lock()
	defer f.lineMu.Unlock()
	return f.open[line] > 0
}

func (f *feed) block(line string, n int) {
	if line == "" {
		return
	}
	// The count may go below zero for a moment: a delivery retried by
	// hand can be delivered before it is counted open again.
	f.lineMu.Lock()
	if f.open[line] += n; f.open[line] == 0 {
		delete(f.open, line)
	}
	f.lineMu.Unlock()
}

// FeedDelivery is the platform's delivery of record seq as the feed sees
// it, when it has no outbox row: delivered once the feed is past it,
// pending before. ok is false when the record owes the platform nothing.
func (d *Dispatcher) FeedDelivery(ctx context.Context, seq int64, n int) (store.Delivery, bool, error) {
	from, cursor, ok := d.feedPlace(ctx)
	if !ok || n != 0 || seq <= from {
		return store.Delivery{}, false, nil
	}
	recs, err := d.records.Records(ctx, seq-1, 1)
	if err != nil || len(recs) == 0 || recs[0].Seq != seq {
		return store.Delivery{}, false, err
	}
	it, ok := ItemOf(recs[0])
	if !ok {
		return store.Delivery{}, false, nil
	}
	del := it.delivery(d.cfg.MaxAge)
	if seq <= cursor {
		// Delivered at once: only the outbox keeps attempts.
		del.Status, del.Attempts, del.Due = store.Delivered, 1, time.Time{}
	}
	return del, true, nil
}

// ItemOf is the platform's delivery of a stored record; ok is false for
// records that are not decisions.
func ItemOf(r store.Record) (Item, bool) {
	if !r.Decides() {
		return Item{}, false
	}
	var dec struct {
		Conversation string `json:"conversation"`
		Actions      []struct {
			Conversation string `json:"conversation"`
		} `json:"actions"`
	}
	json.Unmarshal(r.Decision, &dec) // an unreadable decision is in no line
	line := dec.Conversation
	for i := 0; line == "" && i < len(dec.Actions); i++ {
		line = dec.Actions[i].Conversation
	}
	var contact string
	if len(r.Contacts) > 0 {
		contact = r.Contacts[0]
	}
	return Item{Seq: r.Seq, Line: line, Contact: contact, Clock: r.Clock, Decision: r.Decision}, true
}

// sent is how a send of the feed went.
type sent struct {
	s *slot
	o store.Outcome
}

// run works the feed until ctx ends; sends in flight then are cut off,
// and made again after a restart.
func (f *feed) run(ctx context.Context) {
	results := make(chan sent, workers)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(results)
		for r := range results {
			f.result(r)
		}
		// The outcomes must be kept even when the service stops.
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		f.save(bg, true)
		cancel()
	}()
	poll := time.NewTicker(saveEvery)
	defer poll.Stop()
	for {
		if err := f.fill(ctx); err != nil && ctx.Err() == nil {
			f.d.log.Error("the platform's feed cannot read the log", "err", err)
		}
		f.mu.Lock()
		forget, recovered := f.forget, f.recovered
		f.forget, f.recovered = false, false
		f.mu.Unlock()
		if recovered {
			f.fails = 0
		}
		if forget {
			for _, s := range f.slots {
				s.stale = s.state == waiting
			}
		}
		throttled := f.throttled()
		// A shared feed is sent only while this process holds it: one
		// frozen long enough may have lost it to another, which is
		// sending the same decisions.
		held := f.held == nil || len(f.ready) == 0 || f.held(ctx) == nil
		for held && len(f.ready) > 0 && f.room(throttled) > 0 {
			s := f.ready[0]
			if s.stale && !f.reread(ctx, s) {
				break // tried again at the next turn
			}
			f.ready = f.ready[1:]
			s.state = inFlight
			f.sending++
			wg.Add(1)
			go func() {
				defer wg.Done()
				if f.held != nil && f.held(ctx) != nil {
					results <- sent{s, store.Outcome{}} // not sent: the holder sends it
					return
				}
				o := f.d.attempt(ctx, s.it.delivery(f.d.cfg.MaxAge))
				if throttled {
					f.d.pause(ctx)
				}
				if ctx.Err() != nil {
					o.Status = "" // cut off: sent again after a restart
				}
				results <- sent{s, o}
			}()
		}
		f.save(ctx, false)
		select {
		case <-ctx.Done():
			return
		case r := <-results:
			f.result(r)
		drain:
			for {
				select {
				case r := <-results:
					f.result(r)
				default:
					break drain
				}
			}
		case <-f.wake:
		case <-poll.C:
		}
	}
}

// reread takes a decision again from the log, as an erasure left it.
func (f *feed) reread(ctx context.Context, s *slot) bool {
	recs, err := f.d.records.Records(ctx, s.it.Seq-1, 1)
	if err != nil {
		if ctx.Err() == nil {
			f.d.log.Error("the platform's feed cannot read the log", "err", err)
		}
		return false
	}
	if len(recs) == 1 && recs[0].Seq == s.it.Seq {
		s.it.Decision = recs[0].Decision
	}
	s.stale = false
	return true
}

// fill takes in the decisions after next, up to the window.
func (f *feed) fill(ctx context.Context) error {
	for f.active < window && len(f.slots) < maxSlots {
		f.mu.Lock()
		// Decisions the feed has taken in already are dropped.
		i := 0
		for i < len(f.live) && f.live[i].Seq <= f.next {
			i++
		}
		f.live = f.live[i:]
		head, gap := f.head, f.gap
		var take []Item
		if !gap && len(f.live) > 0 {
			take = f.live[:min(len(f.live), window-f.active)]
			f.live = f.live[len(take):]
		}
		f.mu.Unlock()
		if len(take) > 0 {
			for _, it := range take {
				f.take(it)
			}
			// The records between are not decisions.
			continue
		}
		if f.next >= head {
			return nil
		}
		if !gap {
			// Records committed without decisions: nothing is owed.
			f.mu.Lock()
			if len(f.live) == 0 {
				f.next = max(f.next, head)
			}
			f.mu.Unlock()
			continue
		}
		recs, err := f.d.records.Records(ctx, f.next, min(readBatch, window-f.active))
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			f.mu.Lock()
			f.gap = false // the store has no more: memory goes on from here
			f.mu.Unlock()
			f.next = head
			continue
		}
		for _, r := range recs {
			if it, ok := ItemOf(r); ok {
				f.take(it)
			}
			f.next = r.Seq
		}
		f.mu.Lock()
		if len(f.live) > 0 && f.live[0].Seq <= f.next+1 {
			f.gap = false // memory holds the rest
		}
		f.mu.Unlock()
	}
	return nil
}

// take places a decision: sent, queued behind its line, or handed to the
// outbox behind an open delivery of its line.
func (f *feed) take(it Item) {
	f.next = max(f.next, it.Seq)
	if it.Seq <= f.saved || f.queued[it.Seq] {
		delete(f.queued, it.Seq)
		return // in the outbox already
	}
	s := &slot{it: it}
	f.slots = append(f.slots, s)
	f.active++
	switch {
	case it.Line == "":
		f.ready = append(f.ready, s)
	case f.lines[it.Line] != nil:
		// Behind the feed's own: the line's order is decided there.
		last := f.lines[it.Line]
		for last.behind != nil {
			last = last.behind
		}
		last.behind = s
	case f.blocked(it.Line):
		f.handOver(s, store.Outcome{})
	default:
		f.lines[it.Line] = s
		f.ready = append(f.ready, s)
	}
}

// trim drops the done slots at the front.
func (f *feed) trim() {
	for len(f.slots) > 0 && f.slots[0].state == done {
		f.slots = f.slots[1:]
	}
}

// done marks a slot done.
func (f *feed) done(s *slot) {
	s.state = done
	f.active--
}

func (f *feed) handOver(s *slot, o store.Outcome) {
	s.state, s.outcome = handing, o
	f.hand = append(f.hand, s)
	if o.Status != store.Dead {
		f.block(s.it.Line, 1)
	}
}

// result takes a send's outcome.
func (f *feed) result(r sent) {
	f.sending--
	s := r.s
	line := s.it.Line
	switch r.o.Status {
	case "":
		// Cut off: left undone, so the cursor stays before it.
		return
	case store.Delivered:
		f.done(s)
		f.fails = 0
	case store.Failed:
		f.handOver(s, r.o)
		if f.fails++; f.fails >= tripAfter {
			f.pauseUntil = time.Now().Add(min(maxPause, f.d.backoff(f.fails-tripAfter+1)))
		}
	default:
		f.handOver(s, r.o)
	}
	if line == "" {
		return
	}
	next := s.behind
	switch {
	case next == nil:
		delete(f.lines, line)
	case r.o.Status == store.Failed || f.blocked(line):
		// The line waits for the outbox now (this one failed, or one
		// retried by hand is open there): all of it goes there.
		delete(f.lines, line)
		for ; next != nil; next = next.behind {
			f.handOver(next, store.Outcome{})
		}
	default:
		f.lines[line] = next
		f.ready = append(f.ready, next)
	}
}

// save hands the outbox what it must work, and stores the cursor, when
// there is something to hand over or the cursor moved a while ago.
func (f *feed) save(ctx context.Context, now bool) {
	f.trim()
	// The cursor: every decision up to it done or handed over.
	i := 0
	for i < len(f.slots) && (f.slots[i].state == done || f.slots[i].state == handing) {
		i++
	}
	cursor := f.next
	if i < len(f.slots) {
		cursor = f.slots[i].it.Seq - 1
	}
	if len(f.hand) == 0 && (cursor == f.saved || (!now && time.Since(f.savedAt) < saveEvery)) {
		return
	}
	ds := make([]store.Delivery, len(f.hand))
	outcomes := make([]store.Outcome, len(f.hand))
	for j, s := range f.hand {
		ds[j], outcomes[j] = s.it.delivery(f.d.cfg.MaxAge), s.outcome
		if s.outcome.Status == store.Failed {
			ds[j].Due = s.outcome.Due
		}
	}
	if err := f.d.out.AdvanceFeed(ctx, Platform, cursor, ds, outcomes); err != nil {
		if ctx.Err() == nil {
			f.d.log.Error("the platform's feed cannot save its place; it will try again", "err", err)
		}
		return
	}
	for _, s := range f.hand {
		f.done(s)
	}
	if len(f.hand) > 0 {
		f.d.Wake()
	}
	f.hand = f.hand[:0]
	f.saved, f.savedAt = cursor, time.Now()
	f.cursor.Store(cursor)
	f.slots = f.slots[i:]
}

// FeedCursor is how far the platform's feed got, as stored: every decision
// up to it was delivered or handed to the outbox. ok is false without a
// feed.
func (d *Dispatcher) FeedCursor(ctx context.Context) (cursor int64, ok bool) {
	_, cursor, ok = d.feedPlace(ctx)
	return cursor, ok
}

// feedPlace is where the platform's feed began and how far it got: this
// process's own, or, for a feed another process works, as stored.
func (d *Dispatcher) feedPlace(ctx context.Context) (from, cursor int64, ok bool) {
	if f := d.feed.Load(); f != nil {
		return f.from, f.cursor.Load(), true
	}
	m, isMeta := d.records.(interface {
		Meta(ctx context.Context, prefix string) (map[string]string, error)
	})
	if !d.contend || !isMeta {
		return 0, 0, false
	}
	kv, err := m.Meta(ctx, "feed:"+Platform+":")
	if err != nil {
		return 0, 0, false
	}
	from, errFrom := strconv.ParseInt(kv["feed:"+Platform+":from"], 10, 64)
	cursor, errCursor := strconv.ParseInt(kv["feed:"+Platform+":cursor"], 10, 64)
	return from, cursor, errFrom == nil && errCursor == nil
}
