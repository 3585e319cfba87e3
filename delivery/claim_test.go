package delivery_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
)

// stalled is an outbox whose first claim stands still until stall returns,
// as a process stopped (SIGSTOP, a paused VM) right after it claimed.
type stalled struct {
	store.Outbox
	once  sync.Once
	stall func()
}

func (s *stalled) ClaimDeliveries(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]store.Delivery, error) {
	got, err := s.Outbox.ClaimDeliveries(ctx, owner, now, lease, limit)
	if len(got) > 0 {
		s.once.Do(s.stall)
	}
	return got, err
}

// TestStalledClaimer: a process that stood still after claiming the head
// of a line, past its lease, while another process claimed it and sent it
// and the rest of the line, does not send it again when it wakes: the
// receiver gets each delivery once, in the line's order.
func TestStalledClaimer(t *testing.T) {
	crm, err := deliverytest.NewReceiver(secret(3))
	if err != nil {
		t.Fatal(err)
	}
	defer crm.Close()
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf("endpoints:\n  crm: {url: %s/crm, secret_env: CRM_SECRET}\n", crm.URL)),
		func(string) string { return secret(3) })
	if cfg == nil || ds.HasErrors() {
		t.Fatal(ds)
	}
	o := newOutbox(t, cfg)
	var want []string
	for i := range 3 {
		d := o.decide("c1", engine.Action{Type: engine.ActNotify, Rule: "escalate", Conversation: "c1", Endpoint: "crm", Via: "webhook", Text: fmt.Sprint("Kim waits ", i)})
		want = append(want, d[0].ID)
	}
	// Both processes' clocks; the stall moves it past the first's lease.
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var running sync.WaitGroup
	defer running.Wait()
	defer cancel()
	run := func(d *delivery.Dispatcher) {
		running.Add(1)
		go func() { defer running.Done(); d.Run(ctx) }()
	}
	accepted := func() []string {
		var ids []string
		for _, h := range crm.Accepted() {
			ids = append(ids, h.ID)
		}
		return ids
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; the receiver got %v", what, accepted())
			}
		}
	}
	first := &stalled{Outbox: o.st}
	first.stall = func() {
		skew.Add(int64(time.Hour)) // longer than any lease
		run(delivery.NewDispatcher(o.st, cfg, quiet, delivery.Options{Now: now}))
		until("the other process sends the line", func() bool { return len(accepted()) == len(want) })
	}
	run(delivery.NewDispatcher(first, cfg, quiet, delivery.Options{Now: now}))
	until("every delivery recorded", func() bool {
		st, err := o.st.DeliveryStats(context.Background())
		return err == nil && st.Open == 0
	})
	time.Sleep(300 * time.Millisecond) // the woken process's attempt, were it made
	if got := accepted(); strings.Join(got, " ") != strings.Join(want, " ") || len(crm.Hits()) != len(want) {
		t.Fatalf("the receiver got %v (%d requests), want %v once each", got, len(crm.Hits()), want)
	}
}
