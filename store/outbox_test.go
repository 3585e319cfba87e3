package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// deliv is a delivery of record seq for the outbox tests.
func deliv(seq int64, n int, dest, line string, at time.Time) Delivery {
	return Delivery{ID: DeliveryID(seq, n), Seq: seq, N: n, Destination: dest, Line: line, Kind: "decision",
		Contact: "k1", Body: []byte(fmt.Sprintf(`{"seq":%d,"text":"secret"}`, seq)), Created: at, Due: at, Expires: at.Add(24 * time.Hour)}
}

func ids(ds []Delivery) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return strings.Join(out, " ")
}

func TestOutbox(t *testing.T) { eachBackend(t, testOutbox) }

func testOutbox(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	r1, r2, r3 := rec(1, "e1", "k1"), rec(2, "e2", "k1"), rec(3, "e3", "k2")
	r1.Deliveries = []Delivery{deliv(1, 0, "platform", "c1", t0), deliv(1, 1, "email", "c1", t0)}
	r2.Deliveries = []Delivery{deliv(2, 0, "platform", "c1", t0), deliv(2, 1, "platform", "c2", t0)}
	dead := deliv(3, 0, "webhook:crm", "c3", t0)
	dead.Status, dead.Error, dead.Done = Dead, "no endpoint crm configured", t0
	r3.Deliveries = []Delivery{dead, deliv(3, 1, "platform", "", t0)}
	if err := s.Append(ctx, []Record{r1, r2, r3}); err != nil {
		t.Fatal(err)
	}
	// A refused batch stores none of its deliveries.
	bad := rec(4, "e1")
	bad.Deliveries = []Delivery{deliv(4, 0, "platform", "", t0)}
	if err := s.Append(ctx, []Record{bad}); err == nil {
		t.Fatal("a duplicate id was stored")
	}
	if _, _, ok, _ := s.Delivery(ctx, "sb-4-0"); ok {
		t.Fatal("a delivery of a refused record was stored")
	}

	// Only the head of each line is claimed: sb-2-0 waits behind sb-1-0.
	got, err := s.ClaimDeliveries(ctx, "a", t0, time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "sb-1-0 sb-1-1 sb-2-1 sb-3-1" {
		t.Fatalf("claimed %q", ids(got))
	}
	// Claimed deliveries are not claimed again while leased.
	if again, _ := s.ClaimDeliveries(ctx, "b", t0, time.Minute, 10); len(again) != 0 {
		t.Fatalf("claimed twice: %q", ids(again))
	}
	at := t0.Add(time.Second)
	err = s.FinishDeliveries(ctx, "a", []Outcome{
		{ID: "sb-1-0", Status: Delivered, Attempt: Attempt{At: at, Code: 204, Took: 5 * time.Millisecond}},
		{ID: "sb-1-1", Status: Failed, Due: t0.Add(time.Hour), Attempt: Attempt{At: at, Code: 0, Error: "connection refused"}},
		{ID: "sb-2-1", Status: Dead, Attempt: Attempt{At: at, Code: 400, Error: "refused"}, Answer: `{"error":"bad"}`},
		{ID: "sb-3-1", Status: Delivered, Attempt: Attempt{At: at, Code: 200}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's outcome is ignored.
	if err := s.FinishDeliveries(ctx, "b", []Outcome{{ID: "sb-2-0", Status: Delivered, Attempt: Attempt{At: at}}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.ClaimDeliveries(ctx, "a", at, time.Minute, 10)
	if ids(got) != "sb-2-0" {
		t.Fatalf("after the first round, claimed %q", ids(got))
	}
	d, attempts, ok, err := s.Delivery(ctx, "sb-2-1")
	if err != nil || !ok || d.Status != Dead || d.Code != 400 || d.Answer != `{"error":"bad"}` || len(attempts) != 1 || attempts[0].Error != "refused" {
		t.Fatalf("dead delivery: %+v %+v %v %v", d, attempts, ok, err)
	}
	// A lease that ran out lets another owner take the delivery; the first
	// owner's late outcome is then ignored.
	later := at.Add(2 * time.Minute)
	got, _ = s.ClaimDeliveries(ctx, "b", later, time.Minute, 10)
	if ids(got) != "sb-2-0" {
		t.Fatalf("after the lease ran out, claimed %q", ids(got))
	}
	s.FinishDeliveries(ctx, "a", []Outcome{{ID: "sb-2-0", Status: Dead, Attempt: Attempt{At: later}}})
	if d, _, _, _ := s.Delivery(ctx, "sb-2-0"); d.Status != Pending {
		t.Fatalf("a stale owner's outcome counted: %+v", d)
	}
	s.FinishDeliveries(ctx, "b", []Outcome{{ID: "sb-2-0", Status: Delivered, Attempt: Attempt{At: later, Code: 200}}})

	// Listing and stats.
	list, err := s.Deliveries(ctx, DeliveryFilter{Status: Dead})
	if err != nil || ids(list) != "sb-2-1 sb-3-0" {
		t.Fatalf("dead: %q %v", ids(list), err)
	}
	if list, _ := s.Deliveries(ctx, DeliveryFilter{Destination: "platform", After: 1}); ids(list) != "sb-2-0 sb-2-1 sb-3-1" {
		t.Fatalf("platform after 1: %q", ids(list))
	}
	st, err := s.DeliveryStats(ctx)
	if err != nil || st.Open != 1 || !st.Oldest.Equal(t0) {
		t.Fatalf("stats: %+v %v", st, err)
	}
	// A retry makes a dead delivery due again; a delivered one cannot be.
	if ok, err := s.RetryDelivery(ctx, "sb-3-0", later, later.Add(24*time.Hour)); !ok || err != nil {
		t.Fatalf("retry dead: %v %v", ok, err)
	}
	if ok, _ := s.RetryDelivery(ctx, "sb-1-0", later, later); ok {
		t.Fatal("a delivered delivery was retried")
	}
	// Reopening keeps everything. A file owned by one process lets every
	// claim go; a shared database keeps them until their leases end, as
	// their owners may still be at work.
	if got, _ := s.ClaimDeliveries(ctx, "a", later, time.Hour, 10); ids(got) != "sb-3-0" {
		t.Fatalf("after the retry, claimed %q", ids(got))
	}
	s.Close()
	s = b.open()
	defer s.Close()
	if !b.owned {
		if got, _ := s.ClaimDeliveries(ctx, "c", later, time.Hour, 10); len(got) != 0 {
			t.Fatalf("a claim still leased was taken: %q", ids(got))
		}
		later = later.Add(time.Hour)
	}
	want := "sb-3-0"
	if !b.owned {
		want = "sb-1-1 sb-3-0" // due by then too
	}
	if got, _ := s.ClaimDeliveries(ctx, "c", later, time.Hour, 10); ids(got) != want {
		t.Fatalf("after a restart, claimed %q, want %q", ids(got), want)
	}
	// Erasure rewrites the contact's bodies; pruning keeps what is owed.
	if err := s.Erase(ctx, "k1", 3, &testEraser{}); err != nil {
		t.Fatal(err)
	}
	if d, _, _, _ := s.Delivery(ctx, "sb-1-1"); strings.Contains(string(d.Body), "secret") {
		t.Fatalf("an erased contact's delivery kept its data: %s", d.Body)
	}
	if err := s.Prune(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if kept := b.count(`SELECT COUNT(*) FROM delivery_attempts WHERE delivery = 'sb-1-0'`); kept != 0 {
		t.Fatal("a pruned delivery's attempts stayed")
	}
	left, _ := s.Deliveries(ctx, DeliveryFilter{})
	if ids(left) != "sb-1-1 sb-3-0" {
		t.Fatalf("after pruning, left %q", ids(left))
	}
	// The records of deliveries still owed stay, the others go.
	recs, err := s.Records(ctx, 0, 10)
	if err != nil || len(recs) != 2 || recs[0].Seq != 1 || recs[1].Seq != 3 {
		t.Fatalf("records after pruning: %d %v", len(recs), err)
	}
}

// A decision sent as the log holds it is not stored twice: the delivery
// comes back with its record's decision and clock.
func TestOutboxBodyFromLog(t *testing.T) { eachBackend(t, testOutboxBodyFromLog) }

func testOutboxBodyFromLog(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	r := rec(1, "e1", "k1")
	d := deliv(1, 0, "platform", "c1", t0)
	d.Body = nil
	r.Deliveries = []Delivery{d}
	if err := s.Append(ctx, []Record{r}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ClaimDeliveries(ctx, "a", t0, time.Minute, 1)
	if err != nil || len(got) != 1 || string(got[0].Decision) != string(r.Decision) || !got[0].Clock.Equal(r.Clock) || len(got[0].Body) != 0 {
		t.Fatalf("claimed %+v %v", got, err)
	}
	one, _, _, _ := s.Delivery(ctx, "sb-1-0")
	if string(one.Decision) != string(r.Decision) {
		t.Fatalf("Delivery: %+v", one)
	}
}

// TestOutboxHeads: only the first open delivery of a line is claimed,
// however deep the line; a dead one retried takes its place back at the
// front, and one handed over by a feed joins the line in order.
func TestOutboxHeads(t *testing.T) { eachBackend(t, testOutboxHeads) }

func testOutboxHeads(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	var recs []Record
	for i := int64(1); i <= 500; i++ {
		r := rec(i, fmt.Sprintf("e%d", i), "k1")
		r.Deliveries = []Delivery{deliv(i, 0, "platform", "c1", t0)}
		recs = append(recs, r)
	}
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	claim := func(want string) {
		t.Helper()
		got, err := s.ClaimDeliveries(ctx, "a", t0, time.Minute, 10)
		if err != nil || ids(got) != want {
			t.Fatalf("claimed %q (%v), want %q", ids(got), err, want)
		}
	}
	finish := func(id, status string) {
		t.Helper()
		if err := s.FinishDeliveries(ctx, "a", []Outcome{{ID: id, Status: status, Attempt: Attempt{At: t0}}}); err != nil {
			t.Fatal(err)
		}
	}
	claim("sb-1-0")
	finish("sb-1-0", Dead)
	claim("sb-2-0")
	finish("sb-2-0", Delivered)
	claim("sb-3-0")
	finish("sb-3-0", Failed) // due again at once: it stays the head
	// sb-1-0, retried by hand, goes back to the front of its line.
	if ok, err := s.RetryDelivery(ctx, "sb-1-0", t0, t0.Add(time.Hour)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	claim("sb-1-0")
	// A feed hands over a decision of another line, and one of this line.
	if _, err := s.OpenFeed(ctx, "platform", 500); err != nil {
		t.Fatal(err)
	}
	more := []Delivery{deliv(501, 0, "platform", "c2", t0), deliv(502, 0, "platform", "c1", t0)}
	if err := s.AdvanceFeed(ctx, "platform", 502, more, []Outcome{{}, {}}); err != nil {
		t.Fatal(err)
	}
	claim("sb-501-0")
	finish("sb-1-0", Delivered)
	claim("sb-3-0")
	if st, _ := s.DeliveryStats(ctx); st.Open != 500 {
		t.Errorf("open: %d, want the 498 left of c1 and the 2 handed over", st.Open)
	}
}
