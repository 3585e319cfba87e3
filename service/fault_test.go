package service

// The fault-injection suite: one test per finding of the durability
// review (issue "A service that forgets nothing it acknowledged..."),
// each on a store that fails on command.

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/store/storetest"
)

// fakeClock is a wall clock a test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// harness is a service on a faulty store, served over HTTP.
type harness struct {
	t     *testing.T
	path  string
	st    *store.SQLite
	fs    *storetest.Faulty
	svc   *Service
	url   string
	clock *fakeClock
	logs  *syncBuffer
	stop  func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func buildRules(t testing.TB, rules string) *dsl.RuleSet {
	t.Helper()
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "r.rules", Text: []byte(rules)}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte(team)},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	return rs
}

const defaultTestRules = "on new conversation -> assign group G by least_active"

// open starts a harness on path (a new one when empty) with rules.
func open(t *testing.T, path, rules string, clock *fakeClock, tune func(*Config)) *harness {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "sb.db")
	}
	if clock == nil {
		clock = newClock()
	}
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, path: path, st: st, fs: storetest.Wrap(st), clock: clock, logs: &syncBuffer{}}
	cfg := Config{Rules: buildRules(t, rules), Store: h.fs, Now: clock.Now, CheckInterval: 20 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(h.logs, nil))}
	if tune != nil {
		tune(&cfg)
	}
	svc, err := New(context.Background(), cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	h.svc = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	h.url = srv.URL
	var once sync.Once
	h.stop = func() { once.Do(func() { srv.Close(); cancel(); <-done; st.Close() }) }
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("service log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) do(method, path, body string) (int, string, map[string]string) {
	h.t.Helper()
	code, b, hdr := do(h.t, method, h.url+path, "", body)
	flat := map[string]string{}
	for k := range hdr {
		flat[k] = hdr.Get(k)
	}
	return code, strings.TrimSpace(b), flat
}

func (h *harness) restart(rules string) *harness {
	h.stop()
	return open(h.t, h.path, rules, h.clock, nil)
}

func msgAt(id, contact, at string) string {
	if at == "" {
		return fmt.Sprintf(`{"id":%q,"type":"message.received","channel":"sms","to":"+1","contact":{"id":%q}}`, id, contact)
	}
	return fmt.Sprintf(`{"id":%q,"type":"message.received","at":%q,"channel":"sms","to":"+1","contact":{"id":%q}}`, id, at, contact)
}

// Finding 1: one event with a time that cannot be written back bricked the
// service. Every such time is refused, naming the field; the service keeps
// running and restarts.
func TestFindingUnreadableTime(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	for _, at := range []string{"9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00+00:01", "1969-12-31T23:59:59Z"} {
		for _, body := range []string{msgAt("f1", "k1", at), fmt.Sprintf(`{"id":"f1","type":"agent.status","agent":"a","status":"online","at":%q}`, at)} {
			code, resp, _ := h.do("POST", "/v1/events", body)
			if code != 400 || !strings.Contains(resp, `"field":"at"`) || !strings.Contains(resp, "between 1970 and 9999") {
				t.Errorf("at %s: %d %s", at, code, resp)
			}
		}
	}
	if code, _, _ := h.do("POST", "/v1/events", msgAt("ok", "k1", "9999-12-31T23:59:59Z")); code != 200 {
		t.Fatalf("the last writable time: %d", code)
	}
	if code, _, _ := h.do("GET", "/v1/events/ok/explain", ""); code != 200 {
		t.Fatalf("explain after: %d", code)
	}
	h = h.restart(defaultTestRules)
	if code, _, _ := h.do("GET", "/v1/events/ok/explain", ""); code != 200 {
		t.Fatalf("explain after a restart: %d", code)
	}
}

// Finding 2: a client's time moved the engine's clock. The service runs on
// its own clock: the client's at is only the reported time.
func TestFindingClientClock(t *testing.T) {
	rules := `on new conversation -> assign group G by least_active
rule "late" on unanswered 1m -> tag late
rule "far future" on incoming message where message.at.Year() == 2999 -> tag reported_2999`
	h := open(t, "", rules, nil, nil)
	now := h.clock.Now()
	_, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "2999-01-01T00:00:00Z"))
	if !strings.Contains(body, "reported_2999") {
		t.Fatalf("conditions read the reported time: %s", body)
	}
	_, conv, _ := h.do("GET", "/v1/conversations/e1", "")
	if !strings.Contains(conv, now.Format(time.RFC3339)) {
		t.Fatalf("created at the client's time, not the service's: %s", conv)
	}
	h.clock.Add(90 * time.Second)
	waitFor(t, "the unanswered timer fires on the service's clock", func() bool {
		_, conv, _ := h.do("GET", "/v1/conversations/e1", "")
		return strings.Contains(conv, `"late"`)
	})
	// Waits grow with the clock, without events.
	full := open(t, "", "on new conversation -> assign user a", h.clock, nil)
	full.do("POST", "/v1/events", msgAt("q1", "k1", "2999-01-01T00:00:00Z"))
	full.do("POST", "/v1/events", msgAt("q2", "k2", ""))
	full.do("POST", "/v1/events", msgAt("q3", "k3", ""))
	_, q1, _ := full.do("GET", "/v1/queues", "")
	full.clock.Add(time.Hour)
	_, q2, _ := full.do("GET", "/v1/queues", "")
	if !strings.Contains(q1, `"wait_seconds":0`) || !strings.Contains(q2, `"wait_seconds":3600`) {
		t.Fatalf("waits are not measured against now:\nbefore %s\nafter %s", q1, q2)
	}
	_, metrics, _ := full.do("GET", "/metrics", "")
	if !strings.Contains(metrics, `switchboard_queue_oldest_wait_seconds{agent="a",group=""} 3600`) {
		t.Fatalf("the oldest-wait metric is not measured against now:\n%s", grepLines(metrics, "oldest"))
	}
	// A restart keeps the service's times.
	h = h.restart(rules)
	_, conv2, _ := h.do("GET", "/v1/conversations/e1", "")
	if !strings.Contains(conv2, now.Format(time.RFC3339)) {
		t.Fatalf("after a restart: %s", conv2)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Finding 3: a failed commit acknowledged duplicates and reloads. Every
// request of a failed commit is refused and nothing changes.
func TestFindingFailedCommit(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	os.Mkdir(rulesDir, 0o755)
	os.WriteFile(filepath.Join(rulesDir, "team.yaml"), []byte(team), 0o644)
	os.WriteFile(filepath.Join(rulesDir, "r.rules"), []byte(defaultTestRules), 0o644)
	h := open(t, "", defaultTestRules, nil, func(c *Config) {
		c.Load = func() (*dsl.RuleSet, dsl.Diagnostics) { return dsl.Load(rulesDir) }
	})
	h.do("POST", "/v1/events", msgAt("e1", "k1", ""))
	_, health, _ := h.do("GET", "/healthz", "")

	// Hold one commit; a batch, a reload and a single event come while it
	// is written and make the next group together; then fail that
	// group's commit.
	held := h.fs.HoldAppends()
	var wg sync.WaitGroup
	answers := make([]string, 4)
	codes := make([]int, 4)
	post := func(i int, method, path, body string) {
		defer wg.Done()
		codes[i], answers[i], _ = h.do(method, path, body)
	}
	wg.Add(1)
	go post(0, "POST", "/v1/events", msgAt("first", "k9", ""))
	<-held
	os.WriteFile(filepath.Join(rulesDir, "r.rules"), []byte("on new conversation -> tag reloaded"), 0o644)
	wg.Add(3)
	go post(1, "POST", "/v1/events", msgAt("e1", "k1", "")+"\n"+msgAt("e2", "k2", "")+"\n"+msgAt("e2", "k2", ""))
	go post(2, "POST", "/v1/rules/reload", "")
	go post(3, "POST", "/v1/events", msgAt("e3", "k3", ""))
	// e1 is record 1, "first" 2; e2, the reload and e3 are 3 to 5.
	waitFor(t, "the three are decided into the next group", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return h.svc.next == 5 && h.svc.inflight == 2
	})
	h.fs.FailAppendsIf(func(recs []store.Record) bool {
		for _, r := range recs {
			if r.ID == "e3" {
				return true
			}
		}
		return false
	})
	h.fs.Release()
	wg.Wait()
	if codes[0] != 200 {
		t.Fatalf("the held commit: %d %s", codes[0], answers[0])
	}
	if codes[1] != 503 || strings.Count(answers[1], "could not be stored") != 3 {
		t.Errorf("the batch, a stored duplicate included: %d\n%s", codes[1], answers[1])
	}
	if codes[2] != 503 || strings.Contains(answers[2], `"changed":true`) {
		t.Errorf("the reload: %d %s", codes[2], answers[2])
	}
	if codes[3] != 503 {
		t.Errorf("the single event: %d %s", codes[3], answers[3])
	}
	for _, id := range []string{"e2", "e3"} {
		if code, _, _ := h.do("GET", "/v1/events/"+id, ""); code != 404 {
			t.Errorf("%s was stored", id)
		}
	}
	if _, now, _ := h.do("GET", "/healthz", ""); now != health {
		t.Errorf("the rules changed: %s, were %s", now, health)
	}
	code, body, _ := h.do("POST", "/v1/events", msgAt("e2", "k2", ""))
	if code != 200 || strings.Contains(body, "reloaded") {
		t.Errorf("e2 again: %d %s", code, body)
	}
}

// The next group is decided while one is written: when the one written
// fails, the next is refused too (it was decided on what was not stored),
// and a reader waiting meanwhile never sees either.
func TestPipelinedFailure(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	held := h.fs.HoldAppends()
	var wg sync.WaitGroup
	codes := make([]int, 3)
	wg.Add(2)
	go func() { defer wg.Done(); codes[0], _, _ = h.do("POST", "/v1/events", msgAt("a1", "k1", "")) }()
	<-held
	go func() { defer wg.Done(); codes[1], _, _ = h.do("POST", "/v1/events", msgAt("b1", "k2", "")) }()
	waitFor(t, "the next group is decided", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return h.svc.inflight == 2
	})
	var read string
	wg.Add(1)
	go func() { defer wg.Done(); codes[2], read, _ = h.do("GET", "/v1/conversations/a1", "") }()
	waitFor(t, "the reader waits", func() bool { return h.svc.readers.Load() == 1 })
	h.fs.FailAppendsIf(func(recs []store.Record) bool { return recs[0].ID == "a1" })
	h.fs.Release()
	wg.Wait()
	if codes[0] != 503 || codes[1] != 503 {
		t.Fatalf("the failed group and the one decided after it: %d, %d", codes[0], codes[1])
	}
	if codes[2] != 404 {
		t.Fatalf("the reader saw what was never stored: %d %s", codes[2], read)
	}
	h.fs.FailAppendsIf(nil)
	for _, id := range []string{"a1", "b1"} {
		if code, _, _ := h.do("GET", "/v1/events/"+id, ""); code != 404 {
			t.Errorf("%s was stored", id)
		}
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("b1", "k2", "")); code != 200 || !strings.Contains(body, `"agent":"a"`) {
		t.Fatalf("after the rebuild: %d %s", code, body)
	}
}

// Finding 4: when the state could not be rebuilt after a failed commit,
// memory ran ahead of the disk. Now the service refuses reads and writes
// A service refusing events because its state could not be rebuilt tries
// again every second, even while requests keep coming: each refused
// request went round the commit loop and pushed the next attempt back, so
// under steady traffic it stayed refusing until the traffic stopped.
func TestRepairUnderLoad(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	// The commit fails, and so do the rebuild after it and the first
	// repair; the second repair, two seconds on, succeeds.
	h.fs.FailAppends(1)
	h.fs.FailReplays(2)
	if code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")); code != 503 {
		t.Fatalf("the failed commit: %d %s", code, body)
	}
	if ok, why := h.svc.Ready(); ok || !strings.Contains(why, "could not be rebuilt") {
		t.Fatalf("ready %v %q, want refusing", ok, why)
	}
	start := time.Now()
	for i := 0; ; i++ {
		code, body, _ := h.do("POST", "/v1/events", msgAt(fmt.Sprintf("x%d", i), "k1", ""))
		if code == 200 {
			break
		}
		if code != 503 {
			t.Fatalf("while refusing: %d %s", code, body)
		}
		if time.Since(start) > 8*time.Second {
			t.Fatalf("still refusing after %d requests in %v: %s", i+1, time.Since(start).Round(time.Millisecond), body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")); code != 200 {
		t.Errorf("e1 again: %d %s", code, body)
	}
}

// until it is rebuilt.
func TestFindingMemoryAheadOfDisk(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	h.do("POST", "/v1/events", msgAt("e1", "k1", ""))
	h.fs.FailAppends(1)
	h.fs.FailReplays(2)
	if code, _, _ := h.do("POST", "/v1/events", msgAt("c1", "k2", "")); code != 503 {
		t.Fatalf("the failed commit: %d", code)
	}
	if code, body, _ := h.do("GET", "/v1/conversations/c1", ""); code != 503 {
		t.Errorf("a refused conversation is served: %d %s", code, body)
	}
	if code, body, _ := h.do("GET", "/readyz", ""); code != 503 || !strings.Contains(body, "rebuilt") {
		t.Errorf("readyz: %d %s", code, body)
	}
	if code, _, _ := h.do("POST", "/v1/events", msgAt("c1", "k2", "")); code != 503 {
		t.Errorf("an event joins a refused conversation: %d", code)
	}
	if code, _, _ := h.do("GET", "/healthz", ""); code != 200 {
		t.Errorf("liveness: %d", code)
	}
	waitFor(t, "the state is rebuilt", func() bool { code, _, _ := h.do("GET", "/readyz", ""); return code == 200 })
	if code, _, _ := h.do("GET", "/v1/conversations/c1", ""); code != 404 {
		t.Errorf("after the rebuild: %d", code)
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("c1", "k2", "")); code != 200 || !strings.Contains(body, `"conversation":"c1"`) {
		t.Errorf("c1 again: %d %s", code, body)
	}
}

// Finding 6: client ids shared the namespace of internal ones; a client's
// tick stalled the clock. Both are refused, and timers fire.
func TestFindingReservedIDs(t *testing.T) {
	h := open(t, "", defaultTestRules+"\nrule \"late\" on unanswered 1m -> tag late", nil, nil)
	for _, body := range []string{
		`{"id":"sb:tick:1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`,
		`{"id":"t1","type":"tick"}`,
	} {
		if code, resp, _ := h.do("POST", "/v1/events", body); code != 400 {
			t.Errorf("%s: %d %s", body, code, resp)
		}
	}
	h.do("POST", "/v1/events", msgAt("e1", "k1", ""))
	due := h.clock.Now().Add(time.Minute)
	next := fmt.Sprintf(`{"id":"sb:tick:%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k2"}}`, due.UnixNano())
	if code, _, _ := h.do("POST", "/v1/events", next); code != 400 {
		t.Errorf("the next tick's id: %d", code)
	}
	h.clock.Add(2 * time.Minute)
	waitFor(t, "the timer fires", func() bool {
		_, conv, _ := h.do("GET", "/v1/conversations/e1", "")
		return strings.Contains(conv, `"late"`)
	})
}

// Finding 7: deleting the database went unnoticed. The service notices
// within a second and refuses to acknowledge.
func TestFindingDatabaseDeleted(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	h.do("POST", "/v1/events", msgAt("e1", "k1", ""))
	os.Remove(h.path)
	waitFor(t, "readyz says so", func() bool { code, _, _ := h.do("GET", "/readyz", ""); return code == 503 })
	code, body, _ := h.do("POST", "/v1/events", msgAt("e2", "k2", ""))
	if code != 503 || !strings.Contains(body, "database file") {
		t.Fatalf("after the deletion: %d %s", code, body)
	}
	if !strings.Contains(h.logs.String(), "deleted") {
		t.Fatalf("no error in the log:\n%s", h.logs.String())
	}
}

// Finding 9: /healthz waited behind commits.
func TestFindingHealthzNeverWaits(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	held := h.fs.HoldAppends()
	done := make(chan struct{})
	go func() { h.do("POST", "/v1/events", msgAt("e1", "k1", "")); close(done) }()
	<-held
	if code, _, _ := h.do("GET", "/healthz", ""); code != 200 {
		t.Fatalf("healthz during a commit: %d", code)
	}
	h.fs.Release()
	<-done
}

// Finding 9: restart and explain replayed the whole log. They start from
// the nearest snapshot.
func TestFindingCostOfHistory(t *testing.T) {
	h := open(t, "", "on new conversation -> assign group G by round_robin\non incoming message -> tag seen", nil, func(c *Config) { c.SnapshotEvery = 100 })
	var batch strings.Builder
	for i := range 1050 {
		fmt.Fprintln(&batch, msgAt(fmt.Sprint("e", i), fmt.Sprint("k", i%40), ""))
	}
	if code, _, _ := h.do("POST", "/v1/events", batch.String()); code != 200 {
		t.Fatal(code)
	}
	waitFor(t, "a snapshot is taken", func() bool { return strings.Contains(h.logs.String(), `"msg":"snapshot taken","record":1050`) })
	_, before, _ := h.do("GET", "/v1/agents", "")
	h = h.restart("on new conversation -> assign group G by round_robin\non incoming message -> tag seen")
	if !strings.Contains(h.logs.String(), `"snapshot":1050,"replayed":0`) {
		t.Fatalf("the restart did not start from the snapshot:\n%s", grepLines(h.logs.String(), "rebuilt"))
	}
	if _, after, _ := h.do("GET", "/v1/agents", ""); after != before {
		t.Fatalf("state after a restart from a snapshot:\n%s\nbefore:\n%s", after, before)
	}
	code, trace, _ := h.do("GET", "/v1/events/e1049/explain?format=text", "")
	if code != 200 || !strings.Contains(trace, "seen") {
		t.Fatalf("explain: %d %s", code, trace)
	}
}

// Finding 10: the same id with another body was answered with the old
// decision.
func TestFindingSameIDOtherBody(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	_, first, hdr := h.do("POST", "/v1/events", msgAt("e1", "k1", ""))
	code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k2", ""))
	if code != 409 || !strings.Contains(body, "already used for a different event") {
		t.Fatalf("another body: %d %s", code, body)
	}
	// The same event, spaced and ordered differently, without at: a replay
	// with the original rules' version.
	same := `{ "contact": {"id": "k1"}, "to": "+1", "channel": "sms", "type": "message.received", "id": "e1" }`
	code, again, hdr2 := h.do("POST", "/v1/events", same)
	if code != 200 || again != first || hdr2["Switchboard-Replayed"] != "true" || hdr2["Switchboard-Rules"] != hdr["Switchboard-Rules"] {
		t.Fatalf("the same event: %d %s %v", code, again, hdr2)
	}
	// In a batch: the replay says so.
	code, lines, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")+"\n"+msgAt("e9", "k9", ""))
	if code != 200 || !strings.Contains(lines, `"replayed":true`) || strings.Contains(lines, `"error":""`) {
		t.Fatalf("batch: %d %s", code, lines)
	}
	// An event with a time is another event than one without.
	if code, _, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "2026-01-05T09:00:00Z")); code != 409 {
		t.Fatalf("with at: %d", code)
	}
}

// More ids than the recent cache holds, replayed at a restart: a retry of
// an evicted one is still a replay, not a second decision or a 503.
func TestRecentIDsEvicted(t *testing.T) {
	tune := func(c *Config) { c.RecentIDs = 10; c.SnapshotEvery = 1e9 }
	h := open(t, "", defaultTestRules, nil, tune)
	var batch strings.Builder
	for i := range 50 {
		fmt.Fprintln(&batch, msgAt(fmt.Sprint("e", i), fmt.Sprint("k", i), ""))
	}
	h.do("POST", "/v1/events", batch.String())
	h.stop()
	h = open(t, h.path, defaultTestRules, h.clock, tune)
	code, _, hdr := h.do("POST", "/v1/events", msgAt("e0", "k0", ""))
	if code != 200 || hdr["Switchboard-Replayed"] != "true" {
		t.Fatalf("a retry of an evicted id: %d %v", code, hdr)
	}
}

// Finding 11: the received bytes are stored as sent, and a batch is one
// commit.
func TestFindingBatchIsOneCommit(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	var batch strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&batch, `{"id":"e%d", "type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d"}}`+"\n", i, i)
	}
	before := h.fs.Appended
	if code, _, _ := h.do("POST", "/v1/events", batch.String()); code != 200 {
		t.Fatal(code)
	}
	if n := h.fs.Appended - before; n != 1 {
		t.Fatalf("%d commits for one batch", n)
	}
	rec, _, _ := h.st.Get(context.Background(), "e7")
	if string(rec.Event) != `{"id":"e7", "type":"message.received","channel":"sms","to":"+1","contact":{"id":"k7"}}` {
		t.Fatalf("stored %s", rec.Event)
	}
}

// Erasure: the contact's personal data leaves the live state, the log,
// the snapshots and the database's files; routing stays as it was; what
// the client sends after the erasure is kept.
func TestEraseContact(t *testing.T) {
	rules := "on new conversation -> assign group G by least_active; reply \"Hello {{contact.name}}\""
	h := open(t, "", rules, nil, func(c *Config) { c.SnapshotEvery = 3 })
	const secret = "Zebulon Quartermaine"
	body := `{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1","name":"` + secret + `","phone":"+15550123"},"message":{"text":"my card is 4111"}}`
	if code, resp, _ := h.do("POST", "/v1/events", body); code != 200 || !strings.Contains(resp, secret) {
		t.Fatalf("%d %s", code, resp)
	}
	// Logs written before keys were held to their case hold events whose
	// keys the decoder matched whatever their case; the erasure matches
	// them so too.
	plain := `{"id":"e2","type":"message.received","channel":"whatsapp","to":"+1","contact":{"id":"k1","name":"Zebulon Q.","email":"zq@example.com","attrs":{"ssn":"078-05-1120"}},"message":{"text":"card 5500"}}`
	if code, resp, _ := h.do("POST", "/v1/events", plain); code != 200 {
		t.Fatalf("%d %s", code, resp)
	}
	odd := `{"id":"e2","type":"message.received","channel":"whatsapp","to":"+1","Contact":{"id":"k1","NAME":"Zebulon Q.","eMail":"zq@example.com","ATTRS":{"ssn":"078-05-1120"}},"Message":{"TEXT":"card 5500"}}`
	if code, resp, _ := h.do("POST", "/v1/events", odd); code != 400 || !strings.Contains(resp, "case-sensitive") {
		t.Fatalf("%d %s", code, resp)
	}
	db, err := sql.Open("sqlite", h.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE events SET event = ? WHERE id = 'e2'`, []byte(odd)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for i := range 5 {
		h.do("POST", "/v1/events", msgAt(fmt.Sprint("o", i), fmt.Sprint("other", i), ""))
	}
	waitFor(t, "a snapshot", func() bool { return strings.Contains(h.logs.String(), "snapshot taken") })
	_, agentsBefore, _ := h.do("GET", "/v1/agents", "")
	// A client that does not wait: the erasure runs to its end all the same.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.svc.EraseContact(ctx, "k1"); err != nil {
		t.Fatalf("erase: %v", err)
	}
	if _, agents, _ := h.do("GET", "/v1/agents", ""); agents != agentsBefore {
		t.Fatalf("routing changed:\n%s\n%s", agents, agentsBefore)
	}
	_, dec, _ := h.do("GET", "/v1/events/e1", "")
	if strings.Contains(dec, secret) || !strings.Contains(dec, `"agent":"a"`) || !strings.Contains(dec, "[erased]") {
		t.Fatalf("the stored decision: %s", dec)
	}
	// What comes after the erasure is the contact's new data: kept.
	h.do("POST", "/v1/events", `{"id":"e3","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1","name":"Zeb Again"}}`)
	h.stop()
	for _, name := range []string{"", "-wal"} {
		data, _ := os.ReadFile(h.path + name)
		for _, s := range []string{secret, "+15550123", "4111", "Zebulon Q.", "zq@example.com", "078-05-1120", "5500"} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s still holds %q", filepath.Base(h.path+name), s)
			}
		}
	}
	h = h.restart(rules)
	if _, agents, _ := h.do("GET", "/v1/agents", ""); agents != agentsBefore {
		t.Fatalf("routing after a restart:\n%s\n%s", agents, agentsBefore)
	}
	if rec, _, _ := h.st.Get(context.Background(), "e3"); !bytes.Contains(rec.Event, []byte("Zeb Again")) {
		t.Fatalf("data sent after the erasure was erased: %s", rec.Event)
	}
	if code, _, _ := h.do("DELETE", "/v1/contacts/nobody", ""); code != 404 {
		t.Fatalf("unknown contact: %d", code)
	}
}

// An erasure cut short after its commit is finished at the next start.
func TestEraseFinishedAtStart(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	const secret = "Philomena Cunk"
	h.do("POST", "/v1/events", `{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1","name":"`+secret+`"}}`)
	h.fs.FailSnapshots(1)
	// Committed, so not a 503: accepted, the rest to follow.
	if code, body, _ := h.do("DELETE", "/v1/contacts/k1", ""); code != 202 || !strings.Contains(body, `"pending"`) {
		t.Fatalf("an erasure whose snapshot failed: %d %s", code, body)
	}
	if rec, _, _ := h.st.Get(context.Background(), "e1"); !bytes.Contains(rec.Event, []byte(secret)) {
		t.Fatalf("the history was rewritten although the erasure was cut short: %s", rec.Event)
	}
	h = h.restart(defaultTestRules)
	if !strings.Contains(h.logs.String(), "finishing an erasure a stop cut short") {
		t.Fatalf("not finished:\n%s", h.logs.String())
	}
	h.stop()
	for _, name := range []string{"", "-wal"} {
		if data, _ := os.ReadFile(h.path + name); bytes.Contains(data, []byte(secret)) {
			t.Errorf("%s still holds the name", filepath.Base(h.path+name))
		}
	}
}

// Retention: events older than the period go once a snapshot covers them;
// asking for one says so; the rest, and restarts, are unaffected.
func TestRetention(t *testing.T) {
	tune := func(c *Config) { c.SnapshotEvery = 10; c.Retain = time.Hour }
	h := open(t, "", defaultTestRules, nil, tune)
	for i := range 30 {
		h.do("POST", "/v1/events", msgAt(fmt.Sprint("old", i), fmt.Sprint("k", i%3), ""))
	}
	h.clock.Add(2 * time.Hour)
	for i := range 25 {
		h.do("POST", "/v1/events", msgAt(fmt.Sprint("new", i), fmt.Sprint("k", i%3), ""))
	}
	waitFor(t, "a prune", func() bool { return strings.Contains(h.logs.String(), "pruned the log for retention") })
	code, body, _ := h.do("GET", "/v1/events/old1/explain", "")
	if code != 404 || !strings.Contains(body, "pruned by retention") {
		t.Fatalf("explain of a pruned event: %d %s", code, body)
	}
	if code, _, _ := h.do("GET", "/v1/events/new20/explain", ""); code != 200 {
		t.Fatalf("explain of a kept event: %d", code)
	}
	// A pruned event's id is forgotten: a new event, not a 503.
	if code, body, hdr := h.do("POST", "/v1/events", msgAt("old1", "k1", "")); code != 200 || hdr["Switchboard-Replayed"] != "" {
		t.Fatalf("a pruned id posted again: %d %s %v", code, body, hdr)
	}
	_, before, _ := h.do("GET", "/v1/agents", "")
	h.stop()
	h = open(t, h.path, defaultTestRules, h.clock, tune)
	if _, after, _ := h.do("GET", "/v1/agents", ""); after != before {
		t.Fatalf("after a restart:\n%s\n%s", after, before)
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("later", "k1", "")); code != 200 {
		t.Fatalf("after a restart: %d %s", code, body)
	}
}

// TestNotReadyWhileCommitsFail: a commit that fails (a full disk) makes
// /readyz say so, though the state was rebuilt and the service runs; a
// load balancer sends the events elsewhere. A commit that succeeds makes
// it ready again at once.
func TestNotReadyWhileCommitsFail(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	h.fs.FailAppends(1)
	if code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")); code != 503 {
		t.Fatalf("the failed commit: %d %s", code, body)
	}
	code, body, _ := h.do("GET", "/readyz", "")
	if code != 503 || !strings.Contains(body, "the last commit failed") || !strings.Contains(body, "disk full") {
		t.Errorf("/readyz after a failed commit: %d %s", code, body)
	}
	if _, metrics, _ := h.do("GET", "/metrics", ""); !strings.Contains(metrics, "switchboard_ready 0\n") {
		t.Errorf("switchboard_ready after a failed commit is not 0")
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")); code != 200 {
		t.Fatalf("e1 again, the store well: %d %s", code, body)
	}
	if code, body, _ := h.do("GET", "/readyz", ""); code != 200 {
		t.Errorf("/readyz after a commit succeeded: %d %s", code, body)
	}
}

// TestTickBackoff: a due timer whose tick cannot be stored is tried again
// after a pause that doubles, not every time the loop looks (twice a
// second): a full disk is not hammered with rebuilds, nor the log flooded.
func TestTickBackoff(t *testing.T) {
	h := open(t, "", "on new conversation -> assign group G\non unanswered 1m -> tag late", nil, nil)
	if code, body, _ := h.do("POST", "/v1/events", msgAt("e1", "k1", "")); code != 200 {
		t.Fatalf("e1: %d %s", code, body)
	}
	var n atomic.Int32
	h.fs.FailAppendsIf(func(recs []store.Record) bool {
		if len(recs) > 0 && recs[0].Type == "tick" {
			n.Add(1)
		}
		return true
	})
	h.clock.Add(2 * time.Minute) // the timer is due
	time.Sleep(6 * time.Second)
	h.fs.FailAppendsIf(nil)
	tries := n.Load()
	// Pauses of 0.1, 0.2, 0.4, 0.8, 1.6 and 3.2 s: 6 tries in 6 s, 7 on a
	// slow machine; every half second would be 12.
	if tries > 8 {
		t.Errorf("the due tick was tried %d times in 6 s while appends failed; want at most 8", tries)
	}
	if tries == 0 {
		t.Fatal("the due tick was never tried")
	}
	waitFor(t, "the tick stored once appends work", func() bool {
		_, body, _ := h.do("GET", "/v1/conversations/e1", "")
		return strings.Contains(body, `"late"`)
	})
}

// TestFullDiskProbe: while every write fails (a full disk), a paused
// service tries a small write before deciding a group, so it decides,
// writes and rebuilds nothing until the store takes writes again; then it
// takes events within a pause.
func TestFullDiskProbe(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	h.fs.FailAppends(-1)
	h.fs.FailMeta(-1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if code, body, _ := h.do("POST", "/v1/events", msgAt(fmt.Sprintf("c%d-%d", c, i), "k1", "")); code != 503 {
					t.Errorf("while the disk is full: %d %s", code, body)
					return
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	// Two commits fail before the pause; after that, probes only.
	if n := h.fs.Tried("Append"); n > 2 {
		t.Errorf("%d commits tried while every write failed; want 2", n)
	}
	if n := strings.Count(h.logs.String(), "rebuilding the state from the store"); n > 2 {
		t.Errorf("%d rebuilds while every write failed; want 2 at most", n)
	}
	if n := h.fs.Tried("SetMeta"); n < 2 {
		t.Errorf("%d probes in 2 s", n)
	}
	h.fs.FailAppends(0)
	h.fs.FailMeta(0)
	waitAccepted(t, h, "the disk had room")
}

// waitAccepted posts an event until it is accepted, for 3 s at most after
// what made room.
func waitAccepted(t *testing.T, h *harness, after string) {
	t.Helper()
	start := time.Now()
	for {
		code, body, _ := h.do("POST", "/v1/events", msgAt("after", "k2", ""))
		if code == 200 {
			return
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("still refused %v after %s: %d %s", time.Since(start).Round(time.Millisecond), after, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSnapshotBackoff: a snapshot that fails (a full disk) is tried again
// after a pause, not at every commit, each try a replay of the log.
func TestSnapshotBackoff(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, func(c *Config) { c.SnapshotEvery = 5 })
	h.fs.FailSnapshots(-1)
	for i := range 60 {
		if code, body, _ := h.do("POST", "/v1/events", msgAt(fmt.Sprint("e", i), fmt.Sprint("k", i), "")); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := h.fs.Tried("SaveSnapshot"); n != 1 {
		t.Errorf("%d snapshots tried over 60 commits while they failed; want 1", n)
	}
	if !strings.Contains(h.logs.String(), `"tried_again_in":"5s"`) {
		t.Errorf("the failure does not say when it is tried again:\n%s", h.logs.String())
	}
}

// TestCommitPause: while commits keep failing (a full disk), events are
// refused without each being decided, written and followed by a rebuild of
// the state: one group is tried per pause (100 ms doubling to 1 s), and
// the rest get a 503 at once. Once the store takes writes, events are
// accepted within the pause.
func TestCommitPause(t *testing.T) {
	h := open(t, "", defaultTestRules, nil, nil)
	var tries atomic.Int32
	h.fs.FailAppendsIf(func(recs []store.Record) bool {
		tries.Add(1)
		return true
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refused, paused atomic.Int32
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, body, _ := h.do("POST", "/v1/events", msgAt(fmt.Sprintf("c%d-%d", c, i), "k1", ""))
				if code != 503 {
					t.Errorf("while commits fail: %d %s", code, body)
					return
				}
				refused.Add(1)
				if strings.Contains(body, "the last commit failed") {
					paused.Add(1)
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	// Two tries at once, then pauses of 0.1, 0.2, 0.4, 0.8 and 1 s: 7 in
	// 3 s, 9 on a slow machine; every group would be hundreds.
	if n := tries.Load(); n > 10 || n < 3 {
		t.Errorf("%d commits tried in 3 s (of %d events refused); want 3 to 10", n, refused.Load())
	}
	if paused.Load() == 0 {
		t.Error("no refusal said the last commit failed")
	}
	h.fs.FailAppendsIf(nil)
	waitAccepted(t, h, "the store recovered")
	// Recovered: a failure again is tried at once, as the first of a row.
	h.fs.FailAppends(1)
	if code, _, _ := h.do("POST", "/v1/events", msgAt("x1", "k3", "")); code != 503 {
		t.Fatal("the failed commit was not refused")
	}
	if code, body, _ := h.do("POST", "/v1/events", msgAt("x1", "k3", "")); code != 200 {
		t.Errorf("after one failure: %d %s", code, body)
	}
}
