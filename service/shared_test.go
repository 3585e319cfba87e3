package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/pgtest"
	"github.com/switchboard-dev/switchboard/store"
)

// instance runs a service on the shared database at u, with rules that
// reload to whatever *rules holds, and its configuration changed by tune.
func instance(t *testing.T, u string, rules *atomic.Pointer[string], tune ...func(*Config)) (url string, svc *Service, stop func()) {
	t.Helper()
	load := func() (*dsl.RuleSet, dsl.Diagnostics) {
		return dsl.Build(dsl.Sources{
			Rules: []dsl.Source{{Name: "r.rules", Text: []byte(*rules.Load())}},
			Team:  &dsl.Source{Name: "team.yaml", Text: []byte(team)},
		})
	}
	rs, ds := load()
	if rs == nil {
		t.Fatal(ds)
	}
	ctx := context.Background()
	st, err := store.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Rules: rs, Load: load, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, f := range tune {
		f(&cfg)
	}
	svc, err = New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(runCtx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	return srv.URL, svc, func() { srv.Close(); cancel(); <-done; st.Close() }
}

// assigned is the agent an event's decision assigned.
func assigned(t *testing.T, body string) string {
	t.Helper()
	var d struct {
		Actions []struct {
			Type  string `json:"type"`
			Agent string `json:"agent"`
		} `json:"actions"`
	}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, a := range d.Actions {
		if a.Type == "assign" {
			return a.Agent
		}
	}
	return ""
}

// TestSharedInstances: two instances on one PostgreSQL database decide as
// one engine: each decides after what the other appended, reads catch up,
// a retry on the other instance is the same event, and a reload on one
// switches both.
func TestSharedInstances(t *testing.T) {
	u := pgtest.URL(t)
	var rules atomic.Pointer[string]
	first := "on new conversation -> assign group G by least_active"
	rules.Store(&first)
	a, _, stopA := instance(t, u, &rules)
	defer stopA()
	b, _, stopB := instance(t, u, &rules)
	defer stopB()

	code, body, _ := do(t, "POST", a+"/v1/events", "", msg("e1", "k1"))
	if code != 200 || assigned(t, body) != "a" {
		t.Fatalf("e1 on A: %d %s", code, body)
	}
	// B decides after A's e1: a is busier, so b.
	code, body, _ = do(t, "POST", b+"/v1/events", "", msg("e2", "k2"))
	if code != 200 || assigned(t, body) != "b" {
		t.Fatalf("e2 on B, after e1 on A: %d %s", code, body)
	}
	// A retry of e1 sent to B is e1, answered as A decided it.
	code, body2, _ := do(t, "POST", b+"/v1/events", "", msg("e1", "k1"))
	if code != 200 || assigned(t, body2) != "a" {
		t.Fatalf("e1 again on B: %d %s", code, body2)
	}
	// Reads on either show both.
	for _, url := range []string{a, b} {
		_, agents, _ := do(t, "GET", url+"/v1/agents", "", "")
		if !strings.Contains(agents, `"load":1`) || strings.Contains(agents, `"load":0`) {
			t.Fatalf("agents on %s: %s", url, agents)
		}
	}
	// Each stored one group, and applied the other's: what /metrics says.
	for _, url := range []string{a, b} {
		_, metrics, _ := do(t, "GET", url+"/metrics", "", "")
		for _, want := range []string{"switchboard_commit_records_count 1\n", "switchboard_commit_records_sum 1\n", "switchboard_log_applied_total 1\n", "switchboard_commit_seconds_count 1\n"} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics on %s lack %q:\n%s", url, want, metrics)
			}
		}
	}
	// A reload on A switches B at the same record.
	second := "on new conversation -> assign user b even if offline"
	rules.Store(&second)
	if code, body, _ := do(t, "POST", a+"/v1/rules/reload", "", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	code, body, hdr := do(t, "POST", b+"/v1/events", "", msg("e3", "k3"))
	_, health, _ := do(t, "GET", a+"/healthz", "", "")
	if code != 200 || assigned(t, body) != "b" || !strings.Contains(health, hdr.Get("Switchboard-Rules")) {
		t.Fatalf("e3 on B after the reload on A: %d %s (%v; A: %s)", code, body, hdr.Get("Switchboard-Rules"), health)
	}

	// Many clients on both at once: one log, no event lost or twice.
	rules.Store(&first)
	do(t, "POST", b+"/v1/rules/reload", "", "")
	var wg sync.WaitGroup
	var failed atomic.Int32
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				url := []string{a, b}[(c+i)%2]
				id := fmt.Sprintf("c%d-%d", c, i)
				if code, body, _ := do(t, "POST", url+"/v1/events", "", msg(id, "k"+id)); code != 200 {
					t.Errorf("%s: %d %s", id, code, body)
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	_, ag1, _ := do(t, "GET", a+"/v1/agents", "", "")
	_, ag2, _ := do(t, "GET", b+"/v1/agents", "", "")
	if ag1 != ag2 {
		t.Fatalf("the instances disagree:\nA %s\nB %s", ag1, ag2)
	}
	_, list, _ := do(t, "GET", a+"/v1/decisions?after=0&limit=1000", "", "")
	var page struct {
		Decisions []struct {
			Event string `json:"event"`
		} `json:"decisions"`
	}
	json.Unmarshal([]byte(list), &page)
	seen := map[string]bool{}
	for _, d := range page.Decisions {
		if seen[d.Event] {
			t.Fatalf("%s stored twice", d.Event)
		}
		seen[d.Event] = true
	}
	if len(seen) != 3+8*40 {
		t.Fatalf("%d events stored, want %d", len(seen), 3+8*40)
	}
}

// TestSharedSnapshotsOnce: instances sharing a log take its snapshots
// one at a time, each after the newest: a snapshot is a replay, and one
// instance replays for all.
func TestSharedSnapshotsOnce(t *testing.T) {
	u := pgtest.URL(t)
	var rules atomic.Pointer[string]
	r := "on new conversation -> assign group G by least_active"
	rules.Store(&r)
	const every = 60
	often := func(c *Config) { c.SnapshotEvery = every }
	var urls []string
	var svcs []*Service
	for range 3 {
		url, svc, stop := instance(t, u, &rules, often)
		defer stop()
		urls, svcs = append(urls, url), append(svcs, svc)
	}
	var wg sync.WaitGroup
	const clients, each = 6, 100
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// (A few contacts: the state, and so the snapshots'
				// spacing, stays small.)
				id := fmt.Sprintf("s%d-%d", c, i)
				if code, body, _ := do(t, "POST", urls[(c+i)%len(urls)]+"/v1/events", "", msg(id, fmt.Sprint("k", i%5))); code != 200 {
					t.Errorf("%s: %d %s", id, code, body)
				}
			}
		}()
	}
	wg.Wait()
	// (No snapshot is thinned out: they span fewer than keepRecent*every
	// records.)
	var taken int64
	var snaps []store.SnapshotInfo
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		taken = 0
		for _, url := range urls {
			_, metrics, _ := do(t, "GET", url+"/metrics", "", "")
			for _, line := range strings.Split(metrics, "\n") {
				if n, ok := strings.CutPrefix(line, `switchboard_snapshots_total{outcome="taken"} `); ok {
					v, _ := strconv.ParseInt(n, 10, 64)
					taken += v
				}
			}
		}
		var err error
		if snaps, err = svcs[0].cfg.Store.Snapshots(context.Background()); err != nil {
			t.Fatal(err)
		}
		if taken >= 3 && int(taken) == len(snaps) || time.Now().After(deadline) {
			break
		}
	}
	// One instance took each, after the newest, at least every records
	// later.
	if taken < 2 || int(taken) != len(snaps) {
		t.Fatalf("%d snapshots taken by the instances together, %d stored: %+v", taken, len(snaps), snaps)
	}
	for i := 0; i+1 < len(snaps); i++ {
		if snaps[i].Seq-snaps[i+1].Seq < every {
			t.Fatalf("snapshots at records %d and %d: taken twice over", snaps[i+1].Seq, snaps[i].Seq)
		}
	}
}

// TestTextIDs: ids that no database can keep as text are refused, whatever
// the store: 400 naming the field, never a failed commit.
func TestTextIDs(t *testing.T) {
	url, stop := start(t, t.TempDir()+"/sb.db", "")
	defer stop()
	for _, tc := range []struct{ body, field string }{
		{`{"id":"a\u0000b","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k"}}`, "id"},
		{`{"id":"e","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k\u0000"}}`, "contact.id"},
		{`{"id":"e","type":"message.received","channel":"sms","to":"+1","contact":{"id":"` + strings.Repeat("k", 3000) + `"}}`, "contact.id"},
		{`{"id":"e","type":"message.received","channel":"sms","to":"+1","conversation":"` + strings.Repeat("c", 300) + `","contact":{"id":"k"}}`, "conversation"},
	} {
		code, body, _ := do(t, "POST", url+"/v1/events", "", tc.body)
		if code != 400 || !strings.Contains(body, `"field":"`+tc.field+`"`) {
			t.Errorf("%s: %d %s", tc.body, code, body)
		}
	}
	if code, body, _ := do(t, "GET", url+"/v1/events/a%00b", "", ""); code != 400 {
		t.Errorf("a NUL in a path: %d %s", code, body)
	}
	if code, body, _ := do(t, "DELETE", url+"/v1/contacts/"+strings.Repeat("k", 3000), "", ""); code != 400 {
		t.Errorf("a 3,000-byte id in a path: %d %s", code, body)
	}
}

// TestSharedPruneForgets: an instance applying another's prune forgets
// the ids pruned, as the pruning instance does: one of them posted to it
// again is a new event, decided now, not a replay of a record that is
// gone (which could only be answered 503).
func TestSharedPruneForgets(t *testing.T) {
	u := pgtest.URL(t)
	var rules atomic.Pointer[string]
	r := "on new conversation -> assign group G by least_active"
	rules.Store(&r)
	// A takes the snapshots and prunes; B never does.
	a, svcA, stopA := instance(t, u, &rules, func(c *Config) { c.SnapshotEvery, c.Retain = 2, 300*time.Millisecond })
	defer stopA()
	b, _, stopB := instance(t, u, &rules, func(c *Config) { c.SnapshotEvery = 1 << 40 })
	defer stopB()

	post := func(url, id string) (int, string, http.Header) {
		t.Helper()
		return do(t, "POST", url+"/v1/events", "", msg(id, "k-"+id))
	}
	if code, body, _ := post(a, "e1"); code != 200 {
		t.Fatalf("e1 on A: %d %s", code, body)
	}
	if code, body, _ := post(b, "e2"); code != 200 {
		t.Fatalf("e2 on B: %d %s", code, body)
	}
	if code, _, h := post(b, "e1"); code != 200 || h.Get("Switchboard-Replayed") != "true" {
		t.Fatalf("e1 again on B, before the prune: %d, replayed %q", code, h.Get("Switchboard-Replayed"))
	}
	time.Sleep(400 * time.Millisecond) // e1 and e2 are past the retention
	ctx := context.Background()
	for i := 3; ; i++ {
		if p, err := svcA.cfg.Store.Pruned(ctx); err == nil && p.Through >= 2 {
			break
		}
		if i > 300 {
			t.Fatal("A did not prune e1 and e2")
		}
		if code, body, _ := post(a, fmt.Sprint("e", i)); code != 200 {
			t.Fatalf("e%d on A: %d %s", i, code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// B has heard of the prune (a read catches up with the log first);
	// before it has, an id it knew is a replay, and one gone by the
	// answer a 503 whose retry is new.
	do(t, "GET", b+"/v1/agents", "", "")
	for _, id := range []string{"e1", "e2"} {
		code, body, h := post(b, id)
		if code != 200 || h.Get("Switchboard-Replayed") != "" {
			t.Fatalf("%s again on B, after A pruned it: %d, replayed %q: %s", id, code, h.Get("Switchboard-Replayed"), body)
		}
		if code, _, h := post(a, id); code != 200 || h.Get("Switchboard-Replayed") != "true" {
			t.Fatalf("%s on A, after B stored it anew: %d, replayed %q", id, code, h.Get("Switchboard-Replayed"))
		}
	}
}

// TestSharedPruneKeepsOwed: a record past the retention whose delivery is
// still owed is kept by the prune, and its id stays known on every
// instance: posted again, alone or with new events, it is a replay, and
// nothing is refused. (A change that had instances drop such ids decided
// them anew, which failed the commit on the stored id and refused the
// whole group for as long as the delivery stayed open.)
func TestSharedPruneKeepsOwed(t *testing.T) {
	u := pgtest.URL(t)
	crm, _ := deliverytest.NewReceiver()
	defer crm.Close()
	crm.Decide(func(deliverytest.Hit) (deliverytest.Reply, bool) { return deliverytest.Reply{Status: 503}, true })
	dcfg, ds := delivery.ParseConfig("switchboard.yaml", []byte("endpoints: {crm: {url: "+crm.URL+"}}\n"), func(string) string { return "" })
	if dcfg == nil {
		t.Fatal(ds)
	}
	text := "rule \"crm\"\non new conversation where 'vip' in contact.tags -> notify webhook crm with \"VIP\"\n" +
		"rule \"route\"\non new conversation -> assign group G by least_active\n"
	load := func() (*dsl.RuleSet, dsl.Diagnostics) {
		return dsl.Build(dsl.Sources{
			Rules:     []dsl.Source{{Name: "r.rules", Text: []byte(text)}},
			Team:      &dsl.Source{Name: "team.yaml", Text: []byte(team)},
			Endpoints: dcfg.EndpointNames(),
		})
	}
	rs, ds := load()
	if rs == nil {
		t.Fatal(ds)
	}
	owe := func(c *Config) {
		c.Rules, c.Load, c.Delivery = rs, load, dcfg
		c.DeliveryOptions = delivery.Options{RetryBase: time.Hour} // owed all along
	}
	var rules atomic.Pointer[string]
	rules.Store(&text)
	a, svcA, stopA := instance(t, u, &rules, owe, func(c *Config) { c.SnapshotEvery, c.Retain = 2, 300*time.Millisecond })
	defer stopA()
	b, _, stopB := instance(t, u, &rules, owe, func(c *Config) { c.SnapshotEvery = 1 << 40 })
	defer stopB()

	vip := `{"id":"vip1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"kv","tags":["vip"]}}`
	if code, body, _ := do(t, "POST", a+"/v1/events", "", vip); code != 200 {
		t.Fatalf("vip1: %d %s", code, body)
	}
	waitFor(t, "the webhook is refused once", func() bool { return len(crm.Hits()) > 0 })
	time.Sleep(400 * time.Millisecond) // vip1 is past the retention
	ctx := context.Background()
	for i := 1; ; i++ {
		if p, err := svcA.cfg.Store.Pruned(ctx); err == nil && p.Through >= 2 {
			break
		}
		if i > 300 {
			t.Fatal("A did not prune past vip1")
		}
		if code, body, _ := do(t, "POST", a+"/v1/events", "", msg(fmt.Sprint("e", i), fmt.Sprint("k", i))); code != 200 {
			t.Fatalf("e%d on A: %d %s", i, code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if found, err := svcA.cfg.Store.Lookup(ctx, []string{"vip1"}); err != nil || found["vip1"].Seq != 1 {
		t.Fatalf("the prune did not keep vip1, whose delivery is owed: %v %v", found, err)
	}
	// B catches up with the prune, then both are asked: alone, and in a
	// batch with a new event.
	do(t, "GET", b+"/v1/agents", "", "")
	for n, url := range []string{b, a, b, a} {
		if code, body, h := do(t, "POST", url+"/v1/events", "", vip); code != 200 || h.Get("Switchboard-Replayed") != "true" {
			t.Fatalf("vip1 again (%d): %d, replayed %q: %s", n, code, h.Get("Switchboard-Replayed"), body)
		}
		batch := vip + "\n" + msg(fmt.Sprint("new", n), fmt.Sprint("kn", n))
		code, body, _ := do(t, "POST", url+"/v1/events", "", batch)
		if code != 200 || strings.Count(body, `"replayed":true`) != 1 {
			t.Fatalf("vip1 in a batch with a new event (%d): %d %s", n, code, body)
		}
	}
}

// brokenReplays is a shared store whose replays fail while broken is set:
// an instance on it that must rebuild its state cannot.
type brokenReplays struct {
	*store.Postgres
	broken atomic.Bool
}

func (b *brokenReplays) Replay(ctx context.Context, after, upto int64, fn func(store.Record) error) error {
	if b.broken.Load() {
		return fmt.Errorf("injected: the replay fails")
	}
	return b.Postgres.Replay(ctx, after, upto, fn)
}

// TestSharedFeedWhileRefusing: an instance that works the platform's feed
// and refuses events (its state could not be rebuilt) goes on sending the
// platform what the other instances decide: the feed reads the log, not
// the broken state. (It sent nothing until it was repaired.)
func TestSharedFeedWhileRefusing(t *testing.T) {
	u := pgtest.URL(t)
	platform, _ := deliverytest.NewReceiver()
	defer platform.Close()
	dcfg, ds := delivery.ParseConfig("switchboard.yaml", []byte("platform: {url: "+platform.URL+"}\n"), func(string) string { return "" })
	if dcfg == nil {
		t.Fatal(ds)
	}
	var rules atomic.Pointer[string]
	r := "on new conversation -> assign group G by least_active"
	rules.Store(&r)
	var broken *brokenReplays
	a, svcA, stopA := instance(t, u, &rules, func(c *Config) {
		broken = &brokenReplays{Postgres: c.Store.(*store.Postgres)}
		c.Store, c.Delivery = broken, dcfg
	})
	defer stopA()
	if !svcA.disp.Feeding() {
		t.Fatal("A, started first, does not work the feed")
	}
	b, _, stopB := instance(t, u, &rules, func(c *Config) { c.Delivery = dcfg })
	defer stopB()
	if code, body, _ := do(t, "POST", a+"/v1/events", "", msg("e1", "k1")); code != 200 {
		t.Fatalf("e1 on A: %d %s", code, body)
	}

	// A's state is lost and cannot be rebuilt.
	broken.broken.Store(true)
	svcA.lockState()
	svcA.rebuild(context.Background())
	svcA.mu.Unlock()
	if code, _, _ := do(t, "POST", a+"/v1/events", "", msg("x", "kx")); code != 503 {
		t.Fatalf("A still accepts events: %d", code)
	}
	for i := 2; i <= 4; i++ {
		if code, body, _ := do(t, "POST", b+"/v1/events", "", msg(fmt.Sprint("e", i), fmt.Sprint("k", i))); code != 200 {
			t.Fatalf("e%d on B: %d %s", i, code, body)
		}
	}
	waitFor(t, "the platform has e1 to e4", func() bool {
		got := map[string]bool{}
		for _, h := range platform.Accepted() {
			if e, err := h.Event(); err == nil {
				if d, ok := e["data"].(map[string]any); ok {
					got[fmt.Sprint(d["event"])] = true
				}
			}
		}
		return got["e1"] && got["e2"] && got["e3"] && got["e4"]
	})
	if ok, why := svcA.Ready(); ok || !svcA.disp.Feeding() {
		t.Fatalf("A repaired (%v %q) or let the feed go (%v) meanwhile: the test proves nothing", ok, why, svcA.disp.Feeding())
	}
}

// TestSharedFollowsWhileAppending: an instance that has just appended
// leaves another's announcement to its next append, but when no append
// comes it catches up within busyAppending, not at the next poll a second
// later: its streams, feed and timers see the other's decisions promptly.
func TestSharedFollowsWhileAppending(t *testing.T) {
	u := pgtest.URL(t)
	var rules atomic.Pointer[string]
	r := "on new conversation -> assign group G by least_active"
	rules.Store(&r)
	a, svcA, stopA := instance(t, u, &rules)
	defer stopA()
	b, svcB, stopB := instance(t, u, &rules)
	defer stopB()
	seq := func(s *Service) int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.seq
	}
	var slowest time.Duration
	for i := range 6 {
		if code, body, _ := do(t, "POST", a+"/v1/events", "", msg(fmt.Sprintf("a%d", i), fmt.Sprintf("ka%d", i))); code != 200 {
			t.Fatalf("on A: %d %s", code, body)
		}
		// B appends while A has just appended, so A leaves B's
		// announcement to an append of its own that does not come.
		if code, body, _ := do(t, "POST", b+"/v1/events", "", msg(fmt.Sprintf("b%d", i), fmt.Sprintf("kb%d", i))); code != 200 {
			t.Fatalf("on B: %d %s", code, body)
		}
		start, want := time.Now(), seq(svcB)
		for seq(svcA) < want {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("A never caught up with B's record %d", want)
			}
			time.Sleep(2 * time.Millisecond)
		}
		slowest = max(slowest, time.Since(start))
		time.Sleep(time.Duration(i*97%300) * time.Millisecond) // another phase of A's poll
	}
	// The poll is a second; without the deferred catch-up, some of the six
	// waits for it.
	if slowest > 600*time.Millisecond {
		t.Errorf("A took up to %v to apply B's records", slowest)
	}
}

// lostAnswers is a shared store whose commits can lose their answer (the
// connection fails after the database committed) and whose lookups can
// then fail for a while.
type lostAnswers struct {
	*store.Postgres
	lose  atomic.Bool  // the next commit's answer is lost
	blind atomic.Int32 // lookups that fail after it
	after int32
}

func (l *lostAnswers) Sequence(ctx context.Context, after int64, decide func([]store.Record) ([]store.Record, error)) error {
	err := l.Postgres.Sequence(ctx, after, decide)
	if err == nil && l.lose.CompareAndSwap(true, false) {
		l.blind.Store(l.after)
		return errors.New("read tcp: connection reset by peer")
	}
	return err
}

func (l *lostAnswers) Lookup(ctx context.Context, ids []string) (map[string]store.Known, error) {
	if l.blind.Add(-1) >= 0 {
		return nil, errors.New("dial tcp: connection refused")
	}
	return l.Postgres.Lookup(ctx, ids)
}

// TestSharedLostCommitAnswer: a commit whose answer is lost is looked up
// until the database answers: found, the event is acknowledged (200).
// When the database stays silent past outcomeWait, the client is told the
// outcome is unknown (503, saying so, not "nothing changed"), and the
// same event sent again is answered from the log, stored once.
func TestSharedLostCommitAnswer(t *testing.T) {
	u := pgtest.URL(t)
	rules := &atomic.Pointer[string]{}
	r := "on new conversation -> assign group G"
	rules.Store(&r)
	var la *lostAnswers
	url, _, stop := instance(t, u, rules, func(c *Config) {
		la = &lostAnswers{Postgres: c.Store.(*store.Postgres)}
		c.Store = la
	})
	defer stop()
	la.after = 3 // asked again until it answers
	la.lose.Store(true)
	if code, body, _ := do(t, "POST", url+"/v1/events", "", msg("e1", "k1")); code != 200 {
		t.Fatalf("a commit found after its answer was lost: %d %s", code, body)
	}
	la.after = 1 << 30 // silent for good
	la.lose.Store(true)
	code, body, _ := do(t, "POST", url+"/v1/events", "", msg("e2", "k2"))
	if code != 503 || !strings.Contains(body, "did not confirm whether the event was stored") {
		t.Fatalf("an unknown outcome: %d %s", code, body)
	}
	la.blind.Store(0)
	var first string
	for range 50 {
		code, first, _ = do(t, "POST", url+"/v1/events", "", msg("e2", "k2"))
		if code == 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 || assigned(t, first) == "" {
		t.Fatalf("e2 sent again: %d %s", code, first)
	}
	n := 0
	la.Postgres.Replay(context.Background(), 0, 0, func(r store.Record) error {
		if r.ID == "e2" {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Fatalf("e2 is stored %d times", n)
	}
}

// TestSharedReadyWhileLockHeld: while a session that is not an instance's
// holds the log's lock, appends time out and are refused; /readyz then
// says so (503), so that a load balancer sends events elsewhere, and says
// 200 again once appends go through.
func TestSharedReadyWhileLockHeld(t *testing.T) {
	u := pgtest.URL(t)
	rules := &atomic.Pointer[string]{}
	r := "on new conversation -> assign group G"
	rules.Store(&r)
	url, _, stop := instance(t, u, rules)
	defer stop()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	const lockLog = 0x53_57_42_4c_4f_47 // store's key for appending to the log
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(lockLog)); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(t, "POST", url+"/v1/events", "", msg("e1", "k1")); code != 503 {
		t.Fatalf("an append while the lock is held elsewhere: %d %s", code, body)
	}
	if code, body, _ := do(t, "GET", url+"/readyz", "", ""); code != 503 {
		t.Fatalf("readyz after a refused append: %d %s", code, body)
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, int64(lockLog)); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(t, "POST", url+"/v1/events", "", msg("e1", "k1")); code != 200 {
		t.Fatalf("after the lock is let go: %d %s", code, body)
	}
	if code, body, _ := do(t, "GET", url+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz after an append: %d %s", code, body)
	}
}

// TestSharedReloadLetsGo: a reload on one instance that removes an agent
// with work lets it go on every instance, with the decision the log holds:
// the other applies it without a rebuild and holds the same state.
func TestSharedReloadLetsGo(t *testing.T) {
	u := pgtest.URL(t)
	var rules, teamNow atomic.Pointer[string]
	r, full := "on new conversation -> assign user b", team
	rules.Store(&r)
	teamNow.Store(&full)
	load := func() (*dsl.RuleSet, dsl.Diagnostics) {
		return dsl.Build(dsl.Sources{
			Rules: []dsl.Source{{Name: "r.rules", Text: []byte(*rules.Load())}},
			Team:  &dsl.Source{Name: "team.yaml", Text: []byte(*teamNow.Load())},
		})
	}
	logs := &syncBuffer{}
	withTeam := func(c *Config) { c.Load = load; c.Rules, _ = load() }
	a, _, stopA := instance(t, u, &rules, withTeam)
	defer stopA()
	b, _, stopB := instance(t, u, &rules, withTeam, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(logs, nil)) })
	defer stopB()
	if code, body, _ := do(t, "POST", a+"/v1/events", "", msg("e1", "k1")); code != 200 || assigned(t, body) != "b" {
		t.Fatalf("e1 on A: %d %s", code, body)
	}
	r2, less := "on new conversation -> assign group G", "agents:\n  - {id: a, capacity: 2, status: online}\ngroups:\n  G: [a]\n"
	rules.Store(&r2)
	teamNow.Store(&less)
	code, body, _ := do(t, "POST", a+"/v1/rules/reload", "", "")
	if code != 200 || !strings.Contains(body, `{"type":"unassign","rule":"","conversation":"e1","agent":"b"}`) {
		t.Fatalf("reload on A: %d %s", code, body)
	}
	_, onA, _ := do(t, "GET", a+"/v1/conversations/e1", "", "")
	_, onB, _ := do(t, "GET", b+"/v1/conversations/e1", "", "")
	if onA != onB || strings.Contains(onB, `"agent":`) {
		t.Errorf("e1 after the reload:\nA %s\nB %s", onA, onB)
	}
	if _, list, _ := do(t, "GET", b+"/v1/decisions?after=1", "", ""); !strings.Contains(list, `"agent":"b"`) {
		t.Errorf("B's decisions after the reload: %s", list)
	}
	if code, body, _ := do(t, "POST", b+"/v1/events", "", msg("e2", "k2")); code != 200 || assigned(t, body) != "a" {
		t.Fatalf("e2 on B: %d %s", code, body)
	}
	if strings.Contains(logs.String(), "replay differently") {
		t.Errorf("B rebuilt its state: the reload's decision replays otherwise than A stored it:\n%s", logs.String())
	}
}
