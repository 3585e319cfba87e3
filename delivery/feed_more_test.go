package delivery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
)

func slowConfig(t *testing.T, url string) *delivery.Config {
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf(`
source: https://switchboard.test
platform: {url: %s/hooks, secret_env: PLATFORM_SECRET, timeout: 5s}
`, url)), func(string) string { return secret(1) })
	if cfg == nil || ds.HasErrors() {
		t.Fatal(ds)
	}
	return cfg
}

// runFeed runs a dispatcher with the platform's feed opened at head until
// the test ends.
func runFeed(t *testing.T, o *outbox, cfg *delivery.Config, head int64, opts delivery.Options) *delivery.Dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := delivery.NewDispatcher(o.st, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	if err := d.OpenFeed(ctx, o.st, head); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// TestFeedNotifyRows: a `notify … via webhook` to the platform is an
// outbox row of the conversation's line, but not one of the feed's
// decisions: delivered while a failed decision of the line waits in the
// outbox, it does not let the next decision overtake that one.
func TestFeedNotifyRows(t *testing.T) {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	first := true
	platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		switch {
		case h.ID == "sb-1-0" && first:
			first = false
			return deliverytest.Reply{Status: 503, RetryAfter: "3", Delay: 200 * time.Millisecond}, true
		case h.ID == "sb-1-1": // the notice, slower than the decision's failure
			return deliverytest.Reply{Delay: time.Second}, true
		}
		return deliverytest.Reply{}, true
	})
	cfg := slowConfig(t, platform.URL)
	o := newOutbox(t, cfg)
	plan := delivery.NewPlanner(cfg)
	d := runFeed(t, o, cfg, o.seq, delivery.Options{})
	// Decision 1 of c1, with a notice to the platform, committed as the
	// service does: rows in Append, then Committed.
	acts := []engine.Action{{Type: engine.ActNotify, Rule: "tell", Conversation: "c1", Target: "ana", Via: "webhook"}}
	o.decide("c1", acts...)
	it1, _ := plan.Item(delivery.Decision{Seq: o.seq, At: time.Now(), Event: "e1", Conversation: "c1", Contact: "k1",
		JSON: []byte(`{"event":"e1","conversation":"c1","actions":[]}`), Actions: acts})
	d.Committed([]delivery.Item{it1}, o.seq)
	d.Wake()

	// Wait for the notice to be delivered (sb-1-0 failed and sits in the
	// outbox, due in 3s).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if len(platform.Accepted()) > 0 || time.Now().After(deadline) {
			break
		}
	}
	time.Sleep(100 * time.Millisecond)
	// A second decision of c1, committed as the service does.
	o.decide("c1")
	it, _ := plan.Item(delivery.Decision{Seq: o.seq, At: time.Now(), Event: "e2", Conversation: "c1", Contact: "k1",
		JSON: []byte(`{"event":"e2","conversation":"c1","actions":[]}`)})
	d.Committed([]delivery.Item{it}, o.seq)

	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st, _ := o.st.DeliveryStats(context.Background()); st.Open == 0 {
			break
		}
	}
	var order []string
	for _, h := range platform.Accepted() {
		if strings.HasSuffix(h.ID, "-0") {
			order = append(order, h.ID)
		}
	}
	if strings.Join(order, " ") != "sb-1-0 sb-2-0" {
		t.Errorf("c1's decisions reached the platform as %v, want sb-1-0 sb-2-0", order)
	}
}

// TestFeedSlowLine: one slow delivery holds up its conversation only,
// however many decisions of others come behind it.
func TestFeedSlowLine(t *testing.T) {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		if h.ID == "sb-1-0" {
			return deliverytest.Reply{Delay: 4 * time.Second}, true
		}
		return deliverytest.Reply{}, true
	})
	cfg := slowConfig(t, platform.URL)
	o := newOutbox(t, cfg)
	d := runFeed(t, o, cfg, 0, delivery.Options{})

	const n = 5000
	var recs []store.Record
	var items []delivery.Item
	now := time.Now()
	for i := 1; i <= n; i++ {
		conv := fmt.Sprintf("c%d", i)
		dec := []byte(fmt.Sprintf(`{"event":"e%d","conversation":%q,"actions":[]}`, i, conv))
		recs = append(recs, store.Record{Seq: int64(i), ID: fmt.Sprintf("e%d", i), Type: "message.received", Clock: now, Event: []byte(`{}`), Decision: dec, RuleSet: "v"})
		items = append(items, delivery.Item{Seq: int64(i), Line: conv, Contact: "k1", Clock: now, Decision: dec})
	}
	if err := o.st.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Committed(items, n)
	time.Sleep(2500 * time.Millisecond)
	got := len(platform.Accepted())
	t.Logf("after 2.5s: %d of %d other conversations' decisions delivered (loopback, 204 at once)", got, n-1)
	if got < n-1 {
		t.Errorf("one conversation's slow delivery held up %d others for %v", n-1-got, time.Since(start).Round(time.Millisecond))
	}
}

// TestFeedBusyOutbox: while the service is busy, a line that once failed
// still drains through the outbox at the receiver's pace, if fewer at
// once.
func TestFeedBusyOutbox(t *testing.T) {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	platform.Then(deliverytest.Reply{Status: 503, RetryAfter: "0"})
	cfg := slowConfig(t, platform.URL)
	o := newOutbox(t, cfg)
	d := runFeed(t, o, cfg, 0, delivery.Options{Busy: func() bool { return true }, RetryBase: time.Millisecond})
	const n = 100
	var recs []store.Record
	var items []delivery.Item
	now := time.Now()
	for i := 1; i <= n; i++ {
		dec := []byte(fmt.Sprintf(`{"event":"e%d","conversation":"hot","actions":[]}`, i))
		recs = append(recs, store.Record{Seq: int64(i), ID: fmt.Sprintf("e%d", i), Type: "message.received", Clock: now, Event: []byte(`{}`), Decision: dec, RuleSet: "v"})
		items = append(items, delivery.Item{Seq: int64(i), Line: "hot", Contact: "k1", Clock: now, Decision: dec})
	}
	if err := o.st.Append(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.Committed(items, n)
	for time.Since(start) < 20*time.Second {
		if len(platform.Accepted()) >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(platform.Accepted()); got < n {
		t.Errorf("%d of %d decisions of one line delivered after one 503, while busy, in %v", got, n, time.Since(start).Round(time.Millisecond))
	}
}

// TestFeedReopened: a dead decision retried by hand while the feed holds
// later decisions of its line does not let the next decision overtake
// them.
func TestFeedReopened(t *testing.T) {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	refused := false
	platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		switch {
		case h.ID == "sb-1-0" && !refused:
			refused = true
			return deliverytest.Reply{Status: 400, Body: "unknown conversation"}, true
		case h.ID == "sb-2-0":
			return deliverytest.Reply{Delay: 2 * time.Second}, true
		}
		return deliverytest.Reply{}, true
	})
	cfg := slowConfig(t, platform.URL)
	o := newOutbox(t, cfg)
	d := runFeed(t, o, cfg, 0, delivery.Options{})
	commit := func() {
		o.decide("c1")
		dec := []byte(fmt.Sprintf(`{"event":"e%d","conversation":"c1","actions":[]}`, o.seq))
		d.Committed([]delivery.Item{{Seq: o.seq, Line: "c1", Contact: "k1", Clock: time.Now(), Decision: dec}}, o.seq)
	}
	commit() // 1: refused, dead
	waitDead := time.Now().Add(5 * time.Second)
	for {
		if del, _, ok, _ := o.st.Delivery(context.Background(), "sb-1-0"); ok && del.Status == store.Dead {
			break
		}
		if time.Now().After(waitDead) {
			t.Fatal("sb-1-0 never dead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	commit() // 2: slow, in flight from the feed
	commit() // 3: behind 2 in the feed's chain
	time.Sleep(300 * time.Millisecond)
	// The operator retries sb-1-0, as POST /v1/deliveries/sb-1-0/retry does.
	del, _, _, _ := o.st.Delivery(context.Background(), "sb-1-0")
	if ok, err := o.st.RetryDelivery(context.Background(), "sb-1-0", time.Now(), time.Now().Add(time.Hour)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	d.Reopened(del)
	d.Wake()
	commit() // 4
	time.Sleep(4 * time.Second)
	var order []string
	for _, h := range platform.Accepted() {
		order = append(order, h.ID)
	}
	pos := map[string]int{}
	for i, id := range order {
		pos[id] = i
	}
	if pos["sb-4-0"] < pos["sb-2-0"] || pos["sb-4-0"] < pos["sb-3-0"] {
		t.Errorf("c1's decision 4 reached the platform before 2 and 3: %v", order)
	}
}

// TestFeedStress: bursts that overflow what the feed keeps in memory,
// between small commits, and a receiver failing now and then: every
// decision arrives, in order per line.
func TestFeedStress(t *testing.T) {
	t.Run("overflow", func(t *testing.T) { stressFeed(t, 0, []int{1, 3, 17000, 2, 5, 900, 20000, 1, 1, 1, 4000, 13000, 7}) })
	t.Run("failures", func(t *testing.T) {
		stressFeed(t, 97, []int{1, 3, 700, 2, 5, 900, 1, 1, 1, 400, 1300, 7, 1, 1, 1, 1, 1, 1, 50, 1, 1})
	})
}

func stressFeed(t *testing.T, every int, sizes []int) {
	platform, err := deliverytest.NewReceiver(secret(1))
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	var mu = make(chan struct{}, 1)
	k := 0
	platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		mu <- struct{}{}
		k++
		fail := every > 0 && k%every == 0
		<-mu
		if fail {
			return deliverytest.Reply{Status: 503}, true
		}
		return deliverytest.Reply{}, true
	})
	cfg := slowConfig(t, platform.URL)
	o := newOutbox(t, cfg)
	d := runFeed(t, o, cfg, 0, delivery.Options{RetryBase: 20 * time.Millisecond})
	seq := int64(0)
	for _, n := range sizes {
		var recs []store.Record
		var items []delivery.Item
		now := time.Now()
		for range n {
			seq++
			conv := fmt.Sprintf("c%d", seq%53)
			if seq%11 == 0 {
				conv = ""
			}
			dec := []byte(fmt.Sprintf(`{"event":"e%d","conversation":%q,"actions":[]}`, seq, conv))
			recs = append(recs, store.Record{Seq: seq, ID: fmt.Sprintf("e%d", seq), Type: "message.received", Clock: now, Event: []byte(`{}`), Decision: dec, RuleSet: "v"})
			items = append(items, delivery.Item{Seq: seq, Line: conv, Contact: "k1", Clock: now, Decision: dec})
		}
		if err := o.st.Append(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
		d.Committed(items, seq)
		time.Sleep(time.Duration(n%7) * 10 * time.Millisecond)
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		st, _ := o.st.DeliveryStats(context.Background())
		if st.Open == 0 {
			break
		}
		c, _ := d.FeedCursor(context.Background())
		t.Logf("open %d cursor %d accepted %d", st.Open, c, len(platform.Accepted()))
		time.Sleep(5 * time.Second)
	}
	got := map[string]bool{}
	last := map[int64]int64{}
	for _, h := range platform.Accepted() {
		if got[h.ID] {
			continue
		}
		got[h.ID] = true
		var s int64
		fmt.Sscanf(h.ID, "sb-%d-0", &s)
		if s%11 != 0 {
			line := s % 53
			if last[line] > s {
				t.Errorf("line c%d: %d after %d", line, s, last[line])
			}
			last[line] = s
		}
	}
	missing := 0
	for i := int64(1); i <= seq; i++ {
		if !got[fmt.Sprintf("sb-%d-0", i)] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d decisions never delivered", missing, seq)
	}
}
