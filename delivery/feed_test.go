package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/store"
)

// feedRig is a platform receiver, an outbox and a running dispatcher that
// is handed each decision as it is committed, as the service does.
type feedRig struct {
	t        *testing.T
	o        *outbox
	cfg      *delivery.Config
	platform *deliverytest.Receiver
	d        *delivery.Dispatcher
	stop     func()
	// out is the outbox the dispatcher works: the store, or one made
	// from it.
	out store.Outbox
}

func newFeedRig(t *testing.T) *feedRig { return newFeedRigOn(t, nil) }

// newFeedRigOn runs the dispatcher on the outbox wrap makes of the store.
func newFeedRigOn(t *testing.T, wrap func(*store.SQLite) store.Outbox) *feedRig {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(platform.Close)
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf("platform: {url: %s, secret_env: S, timeout: 500ms}\n", platform.URL)),
		func(string) string { return secret(1) })
	if cfg == nil || ds.HasErrors() {
		t.Fatal(ds)
	}
	r := &feedRig{t: t, o: newOutbox(t, cfg), cfg: cfg, platform: platform}
	r.out = r.o.st
	if wrap != nil {
		r.out = wrap(r.o.st)
	}
	r.start()
	t.Cleanup(func() { r.stop() })
	return r
}

// start runs a dispatcher, as serve does after a restart.
func (r *feedRig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.d = delivery.NewDispatcher(r.out, r.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), delivery.Options{RetryBase: 50 * time.Millisecond})
	if err := r.d.OpenFeed(ctx, r.o.st, r.o.seq); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.d.Run(ctx); close(done) }()
	var once bool
	r.stop = func() {
		if !once {
			once = true
			cancel()
			<-done
		}
	}
}

// commit stores a decision for each conversation named, in one group, and
// hands them to the feed; live false stores them only, as a commit whose
// hand-over a crash cut off.
func (r *feedRig) commit(live bool, convs ...string) {
	var items []delivery.Item
	for _, c := range convs {
		r.o.decide(c)
		it, ok := r.o.plan.Item(delivery.Decision{Seq: r.o.seq, At: time.Now(), Event: fmt.Sprintf("e%d", r.o.seq), Conversation: c,
			JSON: []byte(fmt.Sprintf(`{"event":"e%d","conversation":%q,"actions":[]}`, r.o.seq, c))})
		if !ok {
			r.t.Fatal("no platform configured")
		}
		items = append(items, it)
	}
	if live {
		r.d.Committed(items, r.o.seq)
	}
}

// settle waits until nothing is owed.
func (r *feedRig) settle(within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st, err := r.o.st.DeliveryStats(context.Background())
		if err != nil {
			r.t.Fatal(err)
		}
		if st.Open == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("deliveries still open after %v", within)
}

// check asserts that every decision up to the last reached the platform,
// and that each conversation's decisions were first taken in log order,
// but for those in dead.
func (r *feedRig) check(dead ...string) (first map[string][]int64) {
	r.t.Helper()
	taken := map[string]bool{}
	first = map[string][]int64{}
	for _, h := range r.platform.Accepted() {
		if !h.Verified {
			r.t.Errorf("%s: %s", h.ID, h.VerifyErr)
		}
		if taken[h.ID] {
			continue
		}
		taken[h.ID] = true
		ev, err := h.Event()
		if err != nil {
			r.t.Fatal(err)
		}
		seq, _ := strconv.ParseInt(ev["sequence"].(string), 10, 64)
		subject := ev["subject"].(string)
		first[subject] = append(first[subject], seq)
	}
	for seq := int64(1); seq <= r.o.seq; seq++ {
		id := delivery.DeliveryID(seq, 0)
		if !taken[id] && !slices.Contains(dead, id) {
			r.t.Errorf("%s never reached the platform", id)
		}
	}
	for conv, seqs := range first {
		if !slices.IsSorted(seqs) {
			r.t.Errorf("%s's decisions were first taken as %v", conv, seqs)
		}
	}
	return first
}

// TestFeedLines: a conversation whose decision fails waits for it in the
// outbox, in order, while the others go straight from the log.
func TestFeedLines(t *testing.T) {
	r := newFeedRig(t)
	failed := map[string]int{}
	r.platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		ev, _ := h.Event()
		switch ev["subject"] {
		case "c1": // down for c1's first three attempts
			if failed["c1"]++; failed["c1"] <= 3 {
				return deliverytest.Reply{Status: 503}, true
			}
		case "c3": // c3's first decision is refused for good
			if ev["sequence"] == "3" {
				return deliverytest.Reply{Status: 422, Body: "no such conversation"}, true
			}
		}
		return deliverytest.Reply{}, true
	})
	for range 20 {
		r.commit(true, "c1", "c2", "c3")
	}
	r.settle(20 * time.Second)
	first := r.check("sb-3-0")
	if len(first["c1"]) != 20 || len(first["c2"]) != 20 || len(first["c3"]) != 19 {
		t.Errorf("first receipts per conversation: c1 %d, c2 %d, c3 %d", len(first["c1"]), len(first["c2"]), len(first["c3"]))
	}

	ctx := context.Background()
	// c1's first decision went to the outbox with its failed attempt, and
	// was retried there.
	d, attempts, ok, err := r.o.st.Delivery(ctx, "sb-1-0")
	if err != nil || !ok || d.Status != store.Delivered || len(attempts) != 4 || attempts[0].Code != 503 {
		t.Errorf("c1's first decision: %+v, attempts %+v, %v %v", d, attempts, ok, err)
	}
	// The refused one is dead with the answer kept; it held nothing up.
	d, _, ok, _ = r.o.st.Delivery(ctx, "sb-3-0")
	if !ok || d.Status != store.Dead || d.Code != 422 || d.Answer != "no such conversation" {
		t.Errorf("the refused decision: %+v", d)
	}
	// c2's decisions never needed the outbox.
	rows, err := r.o.st.Deliveries(ctx, store.DeliveryFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, d := range rows {
		lines = append(lines, d.Line)
	}
	if slices.Contains(lines, "c2") || !slices.Contains(lines, "c1") {
		t.Errorf("outbox rows by conversation: %v", lines)
	}
	// The decisions sent straight show as delivered.
	if c, ok := r.d.FeedCursor(context.Background()); !ok || c != r.o.seq {
		t.Errorf("the feed's cursor is %d, want %d", c, r.o.seq)
	}
	d, ok, err = r.d.FeedDelivery(ctx, 2, 0)
	if err != nil || !ok || d.Status != store.Delivered || d.Line != "c2" || d.ID != "sb-2-0" {
		t.Errorf("a decision sent straight: %+v %v %v", d, ok, err)
	}
	if _, ok, _ := r.d.FeedDelivery(ctx, 2, 1); ok {
		t.Error("a record's second delivery found in the feed")
	}
}

// TestFeedRestart: decisions committed while the feed was down, or whose
// hand-over a crash cut off, are read back from the log; a receiver that
// was slow when the feed stopped gets those decisions again, same ids.
func TestFeedRestart(t *testing.T) {
	r := newFeedRig(t)
	r.platform.Then(deliverytest.Reply{Delay: 300 * time.Millisecond})
	r.commit(true, "c1", "c2")
	time.Sleep(100 * time.Millisecond)
	r.stop() // while the first attempt is in flight
	r.commit(false, "c1", "c3", "c4")
	r.start()
	r.commit(true, "c1", "c2")
	r.settle(10 * time.Second)
	r.check()
	// Records that are not decisions owe nothing, and are passed over.
	if err := r.o.st.Append(context.Background(), []store.Record{{Seq: r.o.seq + 1, ID: "sb:rules.reload:8", Type: store.TypeReload, Clock: time.Now(),
		Event: []byte(`{}`), Decision: []byte(`{}`), RuleSet: "v2"}}); err != nil {
		t.Fatal(err)
	}
	r.o.seq++
	r.d.Committed(nil, r.o.seq)
	r.commit(true, "c5")
	r.settle(10 * time.Second)
	if c, _ := r.d.FeedCursor(context.Background()); c != r.o.seq {
		t.Errorf("the cursor stopped at %d of %d", c, r.o.seq)
	}
}

// TestFeedKeepsWhatIsOwed: retention does not prune decisions the feed has
// not delivered; a service started without a platform forgets the feed,
// and one configured again starts from then on.
func TestFeedKeepsWhatIsOwed(t *testing.T) {
	r := newFeedRig(t)
	r.stop()
	r.commit(false, "c1", "c2", "c3", "c4")
	ctx := context.Background()
	if err := r.o.st.Prune(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if recs, _ := r.o.st.Records(ctx, 0, 10); len(recs) != 4 {
		t.Fatalf("pruned decisions still owed: %d of 4 left", len(recs))
	}
	if st, _ := r.o.st.DeliveryStats(ctx); st.Open != 4 || st.Oldest.IsZero() {
		t.Errorf("the feed's backlog: %+v", st)
	}
	// Without a platform, nothing is owed any more.
	bare := delivery.NewDispatcher(r.o.st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), delivery.Options{})
	if err := bare.OpenFeed(ctx, r.o.st, r.o.seq); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.o.st.DeliveryStats(ctx); st.Open != 0 {
		t.Errorf("open without a platform: %+v", st)
	}
	// What was owed shows, dead, saying why; it can be retried.
	if d, _, ok, err := r.o.st.Delivery(ctx, "sb-2-0"); err != nil || !ok || d.Status != store.Dead || d.Line != "c2" ||
		!strings.Contains(d.Error, "no platform endpoint configured") || !strings.Contains(string(d.Decision), `"event":"e2"`) {
		t.Errorf("a decision owed when the platform went: %+v %v %v", d, ok, err)
	}
	r.commit(false, "c5")
	r.start()
	r.commit(true, "c6")
	r.settle(10 * time.Second)
	var got []string
	for _, h := range r.platform.Accepted() {
		got = append(got, h.ID)
	}
	if strings.Join(got, " ") != "sb-6-0" {
		t.Errorf("the platform configured again got %v, want only what was decided since", got)
	}
}

// redactKim erases the name Kim from decisions.
type redactKim struct{}

func (redactKim) Learn(store.Record) error { return nil }
func (redactKim) Redact(r store.Record) ([]byte, []byte, error) {
	return r.Event, []byte(strings.ReplaceAll(string(r.Decision), "Kim", "[erased]")), nil
}
func (redactKim) Rewrite(_ store.SnapshotInfo, b []byte) ([]byte, error) { return b, nil }
func (redactKim) RedactDelivery(d store.Delivery) ([]byte, error)        { return d.Body, nil }

// TestFeedForgets: a decision waiting in the feed's memory when its contact
// is erased is sent as the erasure left it.
func TestFeedForgets(t *testing.T) {
	r := newFeedRig(t)
	r.platform.Then(deliverytest.Reply{Delay: 300 * time.Millisecond}) // c1's first decision is slow to be taken
	var items []delivery.Item
	for range 2 {
		r.o.seq++
		now := time.Now()
		dec := fmt.Sprintf(`{"event":"e%d","conversation":"c1","actions":[{"type":"reply","rule":"hello","conversation":"c1","text":"Hello Kim"}]}`, r.o.seq)
		rec := store.Record{Seq: r.o.seq, ID: fmt.Sprintf("e%d", r.o.seq), Type: "message.received", Clock: now, Event: []byte(`{}`),
			Decision: []byte(dec), RuleSet: "v", Contacts: []string{"k1"}}
		if err := r.o.st.Append(context.Background(), []store.Record{rec}); err != nil {
			t.Fatal(err)
		}
		items = append(items, delivery.Item{Seq: r.o.seq, Line: "c1", Contact: "k1", Clock: now, Decision: []byte(dec)})
	}
	r.d.Committed(items, r.o.seq)
	time.Sleep(100 * time.Millisecond) // the first is being sent, the second waits behind it
	if err := r.o.st.Erase(context.Background(), "k1", r.o.seq, redactKim{}); err != nil {
		t.Fatal(err)
	}
	r.d.Forget()
	r.settle(10 * time.Second)
	for _, h := range r.platform.Accepted() {
		if h.ID == "sb-2-0" && strings.Contains(string(h.Body), "Kim") {
			t.Errorf("sent after the erasure: %s", h.Body)
		}
	}
	r.check()
}

// TestFeedHoldsBack: a platform that is down is not sent every new
// decision at once; once it is up again, everything arrives.
func TestFeedHoldsBack(t *testing.T) {
	r := newFeedRig(t)
	var down atomic.Bool
	down.Store(true)
	r.platform.Decide(func(deliverytest.Hit) (deliverytest.Reply, bool) {
		if down.Load() {
			return deliverytest.Reply{Status: 503}, true
		}
		return deliverytest.Reply{}, true
	})
	for i := range 40 {
		r.commit(true, fmt.Sprintf("c%d", i))
	}
	time.Sleep(500 * time.Millisecond)
	tried := map[string]bool{}
	for _, h := range r.platform.Hits() {
		tried[h.ID] = true
	}
	if len(tried) > 20 {
		t.Errorf("%d of 40 decisions tried while the platform was down", len(tried))
	}
	down.Store(false)
	r.settle(20 * time.Second)
	r.check()
}

// losable is an outbox whose feed can be lost, as a shared one is when
// another process takes it over from one frozen too long.
type losable struct {
	*store.SQLite
	lost chan struct{}
	gone atomic.Bool
	once sync.Once
	asks atomic.Int32
}

func (l *losable) OpenFeed(ctx context.Context, dest string, head int64) (store.Feed, error) {
	f, err := l.SQLite.OpenFeed(ctx, dest, head)
	if l.gone.Load() {
		return f, store.ErrFeedHeld
	}
	f.Lost = l.lost
	f.Held = func(context.Context) error {
		l.asks.Add(1)
		if l.gone.Load() {
			l.once.Do(func() { close(l.lost) })
			return errors.New("lost")
		}
		return nil
	}
	return f, err
}

// TestFeedSendsOnlyWhileHeld: a shared feed asks whether it still holds
// the feed before it sends; once it does not, nothing more is sent, not
// even what it had read already.
func TestFeedSendsOnlyWhileHeld(t *testing.T) {
	l := &losable{lost: make(chan struct{})}
	r := newFeedRigOn(t, func(st *store.SQLite) store.Outbox { l.SQLite = st; return l })
	r.commit(true, "c1")
	deadline := time.Now().Add(10 * time.Second)
	for len(r.platform.Accepted()) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the first decision was not sent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l.asks.Load() == 0 {
		t.Fatal("sent without asking whether the feed is held")
	}
	// Frozen, and taken over meanwhile: it finds out before sending.
	l.gone.Store(true)
	for range 5 {
		r.commit(true, "c1", "c2")
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(r.platform.Hits()); n != 1 {
		t.Fatalf("%d decisions sent, %d of them after the feed was lost", n, n-1)
	}
}
