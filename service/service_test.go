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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/store"
)

const team = `
agents:
  - {id: a, capacity: 2, status: online}
  - {id: b, capacity: 2, status: online}
groups:
  G: [a, b]
`

// start runs a service on the store at path; stop ends it.
func start(t *testing.T, path, token string) (url string, stop func()) {
	t.Helper()
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "r.rules", Text: []byte("on new conversation -> assign group G by least_active")}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte(team)},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(ctx, Config{Rules: rs, Store: st, Token: token, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBody: 4096})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(runCtx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	return srv.URL, func() { srv.Close(); cancel(); <-done; st.Close() }
}

// serveDir runs a service on the rule set directory dir, which it
// reloads from, and the store at path.
func serveDir(t *testing.T, dir, path string) (svc *Service, url string, stop func()) {
	t.Helper()
	return serveDirWith(t, dir, path, func(*Config) {})
}

// serveDirWith is serveDir with its configuration changed by tune.
func serveDirWith(t *testing.T, dir, path string, tune func(*Config)) (svc *Service, url string, stop func()) {
	t.Helper()
	rs, ds := dsl.Load(dir)
	if rs == nil {
		t.Fatal(ds)
	}
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Rules: rs, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Load: func() (*dsl.RuleSet, dsl.Diagnostics) { return dsl.Load(dir) }}
	tune(&cfg)
	svc, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	return svc, srv.URL, func() { srv.Close(); cancel(); <-done; st.Close() }
}

func do(t *testing.T, method, url, token, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func msg(id, contact string) string {
	return fmt.Sprintf(`{"id":%q,"type":"message.received","at":"2026-01-05T09:00:00Z","channel":"sms","to":"+1","contact":{"id":%q}}`, id, contact)
}

func TestEventsAPI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sb.db")
	url, stop := start(t, path, "")
	code, body, hdr0 := do(t, "POST", url+"/v1/events", "", msg("e1", "k1"))
	if len(hdr0.Get("Switchboard-Rules")) != 16 {
		t.Fatalf("no rule set version on the answer: %v", hdr0)
	}
	want := `{"event":"e1","conversation":"e1","actions":[{"type":"assign","rule":"r.rules:1","conversation":"e1","agent":"a","group":"G","algorithm":"least_active"}]}` + "\n"
	if code != 200 || body != want {
		t.Fatalf("post: %d %s", code, body)
	}
	// A retry gets the stored decision and changes nothing.
	code, again, hdr := do(t, "POST", url+"/v1/events", "", msg("e1", "k1"))
	if code != 200 || again != want || hdr.Get("Switchboard-Replayed") != "true" {
		t.Fatalf("retry: %d %s %v", code, again, hdr)
	}
	_, agent, _ := do(t, "GET", url+"/v1/agents/a", "", "")
	if !strings.Contains(agent, `"open":1`) {
		t.Fatalf("retry changed the state: %s", agent)
	}
	// Bad input: a 4xx naming the field, nothing changed.
	for _, tc := range []struct {
		body, want string
		code       int
	}{
		{`{"id":"x1","type":"message.received"`, `{"error":"malformed JSON: the event ends too early"}`, 400},
		{`{"type":"tick"}`, `{"error":"missing; every event needs a unique id","field":"id"}`, 400},
		{`{"id":"x2","type":"ticks"}`, `{"error":"unknown event type \"ticks\"; expected one of message.received, message.sent, conversation.closed, conversation.updated, agent.status, offer.accepted, offer.declined, tick","field":"type"}`, 400},
		{`{"id":"x3","type":"agent.status","agent":"zed","status":"online"}`, `{"error":"unknown agent \"zed\"; agents come from team.yaml","field":"agent"}`, 422},
		{`{"id":"x4","type":"offer.accepted","agent":"a","conversation":"e1","channel":"sms"}`, `{"error":"an offer.accepted event does not take channel, and would ignore it; it takes only the agent who answers and the conversation offered","field":"channel"}`, 400},
		{strings.Repeat(" ", 5000), `{"error":"the body is over 4096 bytes; send fewer events per request"}`, 413},
		{``, `{"error":"empty body; send an event as JSON, or several as JSON lines"}`, 400},
	} {
		code, body, _ := do(t, "POST", url+"/v1/events", "", tc.body)
		if code != tc.code || strings.TrimSpace(body) != tc.want {
			t.Errorf("%.40q: got %d %s, want %d %s", tc.body, code, body, tc.code, tc.want)
		}
	}
	// A batch: every line answered; a bad line does not stop the others.
	batch := msg("e2", "k2") + "\n" + `{"id":"e3","type":"nope"}` + "\n" + msg("e4", "k3") + "\n"
	code, body, _ = do(t, "POST", url+"/v1/events", "", batch)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if code != 200 || len(lines) != 3 || !strings.Contains(lines[0], `"agent":"b"`) || !strings.Contains(lines[1], `"field":"type"`) || !strings.Contains(lines[2], `"line":3`) {
		t.Fatalf("batch: %d\n%s", code, body)
	}
	code, body, _ = do(t, "GET", url+"/v1/events/e2", "", "")
	if code != 200 || !strings.Contains(body, `"event":"e2"`) {
		t.Fatalf("get event: %d %s", code, body)
	}
	code, body, _ = do(t, "GET", url+"/v1/events/e2/explain", "", "")
	if code != 200 || !strings.Contains(body, `"matched":true`) {
		t.Fatalf("explain: %d %s", code, body)
	}
	// Explaining any stored event, the first included, gives the decision
	// that was stored for it, from the state just before it.
	for _, id := range []string{"e1", "e2", "e4"} {
		_, stored, _ := do(t, "GET", url+"/v1/events/"+id, "", "")
		code, text, _ := do(t, "GET", url+"/v1/events/"+id+"/explain?format=text", "", "")
		if code != 200 || !strings.Contains(text, "opens conversation "+id) || !strings.Contains(text, "decision: "+strings.TrimSpace(stored)+"\n") {
			t.Errorf("explain %s: %d\n%s\nstored: %s", id, code, text, stored)
		}
	}
	// Batch lines that fail carry the status a single event would get.
	_, body, _ = do(t, "POST", url+"/v1/events", "", `{"id":"b1","type":"nope"}`+"\n"+`{"id":"b2","type":"agent.status","agent":"zed","status":"online"}`+"\n"+msg("b3", "k9"))
	if lines := strings.Split(strings.TrimSpace(body), "\n"); len(lines) != 3 || !strings.Contains(lines[0], `"status":400`) || !strings.Contains(lines[1], `"status":422`) || strings.Contains(lines[2], `"status"`) {
		t.Errorf("batch statuses:\n%s", body)
	}
	if code, body, _ := do(t, "GET", url+"/v1/events/e2/explain?format=txt", "", ""); code != 400 || !strings.Contains(body, `"field":"format"`) {
		t.Errorf("explain with an unknown format: %d %s", code, body)
	}
	// A status change without an id gets one in the service's namespace.
	if code, body, _ := do(t, "PUT", url+"/v1/agents/b/status", "", `{"status":"away"}`); code != 200 || !strings.Contains(body, `"event":"sb:status:b:`) {
		t.Errorf("PUT status: %d %s", code, body)
	}
	if code, body, _ := do(t, "PUT", url+"/v1/agents/b/status", "", `{"status":"lnuch"}`); code != 422 || !strings.Contains(body, `"field":"status"`) {
		t.Errorf("PUT an unknown status: %d %s", code, body)
	}
	if code, body, _ := do(t, "PUT", url+"/v1/agents/zed/status", "", `{"status":"online"}`); code != 404 || !strings.Contains(body, `"field":"agent"`) {
		t.Errorf("PUT status of an unknown agent: %d %s", code, body)
	}
	code, _, _ = do(t, "GET", url+"/v1/events/nope", "", "")
	if code != 404 {
		t.Fatalf("unknown event: %d", code)
	}
	_, before, _ := do(t, "GET", url+"/v1/agents", "", "")
	stop()

	// After a restart the state is rebuilt from the store.
	url, stop = start(t, path, "")
	defer stop()
	_, after, _ := do(t, "GET", url+"/v1/agents", "", "")
	if after != before {
		t.Fatalf("state after restart:\n%s\nbefore:\n%s", after, before)
	}
}

func TestToken(t *testing.T) {
	url, stop := start(t, filepath.Join(t.TempDir(), "sb.db"), "s3cret")
	defer stop()
	for _, tok := range []string{"", "wrong"} {
		code, body, _ := do(t, "POST", url+"/v1/events", tok, msg("e1", "k1"))
		if code != 401 || !strings.Contains(body, "token") {
			t.Fatalf("token %q: %d %s", tok, code, body)
		}
	}
	if code, _, _ := do(t, "GET", url+"/v1/events/e1", "s3cret", ""); code != 404 {
		t.Fatalf("a refused event was stored: %d", code)
	}
	if code, _, _ := do(t, "POST", url+"/v1/events", "s3cret", msg("e1", "k1")); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	if code, _, _ := do(t, "GET", url+"/healthz", "", ""); code != 200 {
		t.Fatalf("healthz needs no token: %d", code)
	}
	// The scheme is case-insensitive (RFC 7235).
	req, _ := http.NewRequest("GET", url+"/v1/agents", nil)
	req.Header.Set("Authorization", "bearer s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("lower-case bearer: %v %v", resp, err)
	}
}

// A known path with the wrong method: 405 and Allow.
func TestMethodNotAllowed(t *testing.T) {
	url, stop := start(t, filepath.Join(t.TempDir(), "sb.db"), "")
	defer stop()
	code, body, hdr := do(t, "GET", url+"/v1/events", "", "")
	if code != 405 || hdr.Get("Allow") != "POST" || !strings.Contains(body, "/v1/events takes POST, not GET") {
		t.Fatalf("GET /v1/events: %d %s %v", code, body, hdr)
	}
	code, _, hdr = do(t, "POST", url+"/v1/agents/a", "", "")
	if code != 405 || hdr.Get("Allow") != "GET" {
		t.Fatalf("POST /v1/agents/a: %d %v", code, hdr)
	}
	if code, _, _ := do(t, "GET", url+"/v1/nothing", "", ""); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
}

// TestConcurrentClients: many clients at once never break the invariants.
func TestConcurrentClients(t *testing.T) {
	url, stop := start(t, filepath.Join(t.TempDir(), "sb.db"), "")
	defer stop()
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				do(t, "POST", url+"/v1/events", "", msg(fmt.Sprintf("c%d-%d", c, i), fmt.Sprintf("k%d-%d", c, i)))
			}
		}()
	}
	wg.Wait()
	_, body, _ := do(t, "GET", url+"/v1/agents", "", "")
	var agents []struct {
		ID   string  `json:"id"`
		Load float64 `json:"load"`
		Open int     `json:"open"`
	}
	json.Unmarshal([]byte(body), &agents)
	for _, a := range agents {
		if a.Load > 2 || a.Open != 2 {
			t.Fatalf("agent %s: load %v open %d (capacity 2)", a.ID, a.Load, a.Open)
		}
	}
	_, queues, _ := do(t, "GET", url+"/v1/queues", "", "")
	var q []struct {
		Waiting []any `json:"waiting"`
	}
	json.Unmarshal([]byte(queues), &q)
	if len(q) != 1 || len(q[0].Waiting) != 200-4 {
		t.Fatalf("queues: %s", queues[:min(len(queues), 300)])
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	os.Mkdir(rulesDir, 0o755)
	write := func(rules string) {
		os.WriteFile(filepath.Join(rulesDir, "team.yaml"), []byte(team), 0o644)
		os.WriteFile(filepath.Join(rulesDir, "r.rules"), []byte(rules), 0o644)
	}
	write("on new conversation -> assign group G by least_active")
	path := filepath.Join(dir, "sb.db")
	run := func() (string, func()) {
		_, url, stop := serveDir(t, rulesDir, path)
		return url, stop
	}
	url, stop := run()
	do(t, "POST", url+"/v1/events", "", msg("e1", "k1"))
	write("rule \"tagged\" on new conversation -> tag reloaded; assign group G by round_robin")
	// A note that is not one is refused before anything happens.
	for _, c := range []struct{ note, want string }{
		{`{"who":"x"}`, `unknown field`},
		{`{"BY":"ops"}`, `field \"BY\": names are case-sensitive: write \"by\"`},
		{`{"by":"ops","by":"mallory"}`, `field \"by\": given twice`},
		{"{\"by\":\"ops\xff\"}", `it is not UTF-8 text`},
		{`{"by":"ops\u0000"}`, `by holds a control character or a byte that is not UTF-8 (byte 4); write plain text`},
		{`{"by":"ops","reason":"fix\u001b[2J"}`, `reason holds a control character`},
		{`{"by":"ops"} {}`, `there is more after the object`},
	} {
		if code, body, _ := do(t, "POST", url+"/v1/rules/reload", "", c.note); code != 400 || !strings.Contains(body, c.want) {
			t.Fatalf("a wrong note %s: %d %s", c.note, code, body)
		}
	}
	if code, body, _ := do(t, "PUT", url+"/v1/agents/a/status", "", `{"Status":"away"}`); code != 400 || !strings.Contains(body, `write \"status\"`) {
		t.Fatalf("a wrong status: %d %s", code, body)
	}
	code, body, _ := do(t, "POST", url+"/v1/rules/reload", "", `{"by":"ops","reason":"tag what the new rules route"}`)
	if code != 200 || !strings.Contains(body, `"changed":true`) {
		t.Fatalf("reload: %d %s", code, body)
	}
	_, body, _ = do(t, "POST", url+"/v1/events", "", msg("e2", "k2"))
	if !strings.Contains(body, `"tag":"reloaded"`) {
		t.Fatalf("the new rules do not decide: %s", body)
	}
	// Broken rules: 422 with the diagnostics, the running rules stay.
	write("on incomming message -> stop")
	code, body, _ = do(t, "POST", url+"/v1/rules/reload", "", "")
	if code != 422 || !strings.Contains(body, `unknown trigger`) || !strings.Contains(body, `"line":1`) {
		t.Fatalf("broken reload: %d %s", code, body)
	}
	_, body, _ = do(t, "POST", url+"/v1/events", "", msg("e3", "k3"))
	if !strings.Contains(body, `"tag":"reloaded"`) {
		t.Fatalf("a refused reload changed the rules: %s", body)
	}
	_, before, _ := do(t, "GET", url+"/v1/agents", "", "")
	stop()

	// Restart on other files again: the log replays across the reload, and
	// the start is a reload of its own.
	write("on new conversation -> assign group G by least_active")
	url, stop = run()
	defer stop()
	_, after, _ := do(t, "GET", url+"/v1/agents", "", "")
	if after != before {
		t.Fatalf("state after restart:\n%s\nbefore:\n%s", after, before)
	}
	_, body, _ = do(t, "POST", url+"/v1/events", "", msg("e4", "k4"))
	if strings.Contains(body, "reloaded") {
		t.Fatalf("the restart did not load the files' rules: %s", body)
	}
	code, body, _ = do(t, "GET", url+"/v1/events/e2/explain?format=text", "", "")
	if code != 200 || !strings.Contains(body, `rule "tagged"`) {
		t.Fatalf("explain does not follow the reload: %d %s", code, body)
	}

	// The history: both switches, newest first, with who and why, and
	// the files of each version.
	var hist struct {
		Running  string
		Versions []RuleVersion
	}
	_, body, _ = do(t, "GET", url+"/v1/rules/versions", "", "")
	json.Unmarshal([]byte(body), &hist)
	if len(hist.Versions) != 2 || hist.Versions[0].By != "serve" || hist.Versions[1].By != "ops" || hist.Versions[1].Reason != "tag what the new rules route" ||
		hist.Versions[0].Previous != hist.Versions[1].Version || hist.Running != hist.Versions[0].Version || hist.Versions[1].At.IsZero() {
		t.Fatalf("the history: %s", body)
	}
	if _, body, _ = do(t, "GET", url+"/v1/rules/versions?before="+fmt.Sprint(hist.Versions[0].Seq)+"&limit=1", "", ""); !strings.Contains(body, `"by":"ops"`) || strings.Contains(body, `"by":"serve"`) {
		t.Fatalf("the page before the newest: %s", body)
	}
	code, body, _ = do(t, "GET", url+"/v1/rules/versions/"+hist.Versions[1].Version, "", "")
	if code != 200 || !strings.Contains(body, `tag reloaded`) || !strings.Contains(body, `"name":"team.yaml"`) {
		t.Fatalf("a version's files: %d %s", code, body)
	}
	if code, body, _ = do(t, "GET", url+"/v1/rules/versions/0123456789abcdef", "", ""); code != 404 || !strings.Contains(body, "no rule set") {
		t.Fatalf("an unknown version: %d %s", code, body)
	}
	if code, body, _ = do(t, "GET", url+"/v1/rules", "", ""); code != 200 || !strings.Contains(body, hist.Running) || !strings.Contains(body, "least_active") {
		t.Fatalf("the running rules: %d %s", code, body)
	}
}

// TestPublish: a publish that the reload refuses puts the files back;
// one that fails to write reloads nothing; one that changes nothing is
// undone too.
func TestPublish(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "r.rules")
	os.WriteFile(filepath.Join(dir, "team.yaml"), []byte(team), 0o644)
	os.WriteFile(file, []byte("on new conversation -> assign group G\n"), 0o644)
	svc, _, stop := serveDir(t, dir, filepath.Join(t.TempDir(), "sb.db"))
	defer stop()
	ctx := context.Background()
	st := svc.cfg.Store
	undos := 0
	writing := func(text string) func() (func() error, error) {
		return func() (func() error, error) {
			old, _ := os.ReadFile(file)
			os.WriteFile(file, []byte(text), 0o644)
			return func() error { undos++; return os.WriteFile(file, old, 0o644) }, nil
		}
	}
	res, err := svc.Publish(ctx, ReloadNote{By: "x"}, writing("on incomming message -> stop\n"), nil)
	if !errors.Is(err, ErrReloadRefused) || undos != 1 || len(res.Diagnostics) == 0 {
		t.Fatalf("refused: %v, %d undos, %v", err, undos, res.Diagnostics)
	}
	if b, _ := os.ReadFile(file); string(b) != "on new conversation -> assign group G\n" {
		t.Fatalf("the file was not put back: %q", b)
	}
	if _, err := svc.Publish(ctx, ReloadNote{By: "x"}, writing("on new conversation -> assign group G\n"), nil); err != nil || undos != 2 {
		t.Fatalf("unchanged: %v, %d undos", err, undos)
	}
	if _, err := svc.Publish(ctx, ReloadNote{By: "x"}, func() (func() error, error) { return nil, errors.New("disk full") }, nil); err == nil || err.Error() != "disk full" {
		t.Fatalf("a failed write: %v", err)
	}
	// The files loaded are not those written (another process wrote in
	// between): nothing is reloaded, and their files are left alone.
	res, err = svc.Publish(ctx, ReloadNote{By: "x"}, writing("on new conversation -> tag other; assign group G\n"), func(*dsl.RuleSet) error { return errors.New("not mine") })
	if err == nil || !strings.Contains(err.Error(), "not mine") || res.Changed || undos != 2 {
		t.Fatalf("a publish whose files were changed underneath: %+v %v, %d undos", res, err, undos)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), "tag other") {
		t.Fatalf("their file was undone: %q", b)
	}
	os.WriteFile(file, []byte("on new conversation -> assign group G\n"), 0o644)
	res, err = svc.Publish(ctx, ReloadNote{By: "x", Change: []byte(`{"rows":1}`)}, writing("on new conversation -> tag t; assign group G\n"), nil)
	if err != nil || !res.Changed || res.Seq == 0 || undos != 2 {
		t.Fatalf("published: %+v %v, %d undos", res, err, undos)
	}
	recs, _ := st.Reloads(ctx, 0, 1)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Event), `"change":{"rows":1}`) || !strings.Contains(string(recs[0].Event), `"by":"x"`) {
		t.Fatalf("the reload record: %+v", recs)
	}
	if _, err := svc.Publish(ctx, ReloadNote{Change: []byte(`{not json`)}, nil, nil); err == nil {
		t.Fatal("a change that is not JSON was stored")
	}
}

// clockedService runs a service with rules over teamYAML, on a SQLite
// store and a clock of the test's, which starts at 2026-01-05T09:00:00Z
// and moves only by advance. Everything stops at the test's end.
type clockedService struct {
	url string
	st  *store.SQLite
	mu  sync.Mutex
	now time.Time
}

func clocked(t *testing.T, rules, teamYAML string) *clockedService {
	t.Helper()
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "r.rules", Text: []byte(rules)}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte(teamYAML)},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sb.db"))
	if err != nil {
		t.Fatal(err)
	}
	c := &clockedService{st: st, now: time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)}
	clock := func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
	svc, err := New(context.Background(), Config{Rules: rs, Store: st, Now: clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(func() { srv.Close(); cancel(); <-done; st.Close() })
	c.url = srv.URL
	return c
}

// advance moves the service's clock on by d.
func (c *clockedService) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestWallClockTimers: unanswered timers fire on the service's clock, as
// stored tick events.
func TestWallClockTimers(t *testing.T) {
	c := clocked(t, "on new conversation -> assign group G\non unanswered 1m -> tag late", team)
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`)
	c.advance(2 * time.Minute) // the timer is due
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e2","type":"message.received","channel":"sms","to":"+2","contact":{"id":"k2"}}`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, body, _ := do(t, "GET", c.url+"/v1/conversations/e1", "", "")
		if strings.Contains(body, `"tags":["late"]`) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the unanswered timer did not fire")
}

// TestInactiveTimers: inactive rules fire on the service's clock too: a
// released conversation's capacity takes the waiting one, and a close
// ends it, as stored tick events; the platform's own close afterwards
// is refused.
func TestInactiveTimers(t *testing.T) {
	c := clocked(t, "on new conversation -> assign group G\non inactive 10m -> release\non inactive 30m -> close",
		"agents:\n  - {id: a, capacity: 1, status: online}\ngroups:\n  G: [a]\n")
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`)
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e2","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k2"}}`)
	if code, body, _ := do(t, "POST", c.url+"/v1/events", "", `{"id":"e3","type":"message.sent","agent":"a","conversation":"e1"}`); code != 200 {
		t.Fatalf("message.sent: %d %s", code, body)
	}
	waitFor := func(what, path, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var body string
		for time.Now().Before(deadline) {
			_, body, _ = do(t, "GET", c.url+path, "", "")
			if strings.Contains(body, want) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("%s: %s has no %s:\n%s", what, path, want, body)
	}
	_, body, _ := do(t, "GET", c.url+"/v1/conversations/e1", "", "")
	if !strings.Contains(body, `"quiet_since":"2026-01-05T09:00:00Z"`) || strings.Contains(body, `"released"`) {
		t.Fatalf("before the timer: %s", body)
	}
	c.advance(11 * time.Minute)
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e4","type":"message.received","channel":"sms","to":"+2","contact":{"id":"k3"}}`)
	waitFor("release", "/v1/conversations/e1", `"released":true`)
	waitFor("the waiting one placed", "/v1/conversations/e2", `"agent":"a"`)
	c.advance(20 * time.Minute)
	do(t, "POST", c.url+"/v1/events", "", `{"id":"e5","type":"message.received","channel":"sms","to":"+3","contact":{"id":"k4"}}`)
	waitFor("close", "/v1/decisions?last=10", `{"type":"close","rule":"r.rules:3","conversation":"e1","agent":"a"}`)
	if code, body, _ := do(t, "GET", c.url+"/v1/conversations/e1", "", ""); code != 404 {
		t.Errorf("closed by the rule, e1 is still there: %d %s", code, body)
	}
	if code, body, _ := do(t, "POST", c.url+"/v1/events", "", `{"id":"e6","type":"conversation.closed","conversation":"e1"}`); code != 422 || !strings.Contains(body, "no open conversation") {
		t.Errorf("the platform's close after the rule's: %d %s", code, body)
	}
}

// TestNoTokenRefusesPages: without a token the API answers programs, not
// web pages: any page its user opens could otherwise post events, reload
// rules or read contacts, from another site or by rebinding its own name
// to 127.0.0.1. Nothing changes on a refusal.
func TestNoTokenRefusesPages(t *testing.T) {
	url, stop := start(t, filepath.Join(t.TempDir(), "sb.db"), "")
	defer stop()
	call := func(method, path, body string, hdr map[string]string, host string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		host string
		want string
	}{
		{"a page on another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}, "", "another site"},
		{"an Origin elsewhere", map[string]string{"Origin": "http://evil.example"}, "", "http://evil.example"},
		{"a sandboxed page", map[string]string{"Origin": "null"}, "", "a page on null"},
		{"a rebound name", nil, "evil.example:8080", "names it evil.example:8080"},
	} {
		code, body := call("POST", "/v1/events", msg("p-"+tc.name, "k1"), tc.hdr, tc.host)
		if code != 403 || !strings.Contains(body, tc.want) || !strings.Contains(body, "--token") {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
		if code, body := call("GET", "/v1/decisions?last=1", "", tc.hdr, tc.host); code != 403 {
			t.Errorf("%s, a read: %d %s", tc.name, code, body)
		}
	}
	if code, body := call("GET", "/v1/decisions?last=5", "", nil, ""); code != 200 || strings.Contains(body, `"event"`) {
		t.Fatalf("a refused call changed something: %d %s", code, body)
	}
	// Programs, and the service's own pages, are answered.
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		host string
	}{
		{"a program", nil, ""},
		{"as localhost", nil, "localhost"},
		{"a page of its own", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": url}, ""},
	} {
		if code, body := call("POST", "/v1/events", msg("ok-"+strings.ReplaceAll(tc.name, " ", "-"), "k1"), tc.hdr, tc.host); code != 200 {
			t.Errorf("%s: %d %s", tc.name, code, body)
		}
	}
}

// TestConditionFailures: a rule whose condition fails at run time does
// not match; the service counts it by rule and says so in its log, once,
// and a restart's replay does not count it again.
func TestConditionFailures(t *testing.T) {
	rules := "rule \"even\" on new conversation where contact.attrs.n % 2 == 0 -> tag paired\non new conversation -> assign group G by least_active"
	h := open(t, "", rules, nil, nil)
	for i := range 3 {
		body := fmt.Sprintf(`{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","attrs":{"n":4}}}`, i, i)
		if code, resp, _ := h.do("POST", "/v1/events", body); code != 200 || strings.Contains(resp, "paired") {
			t.Fatalf("%d %s", code, resp)
		}
	}
	metric := func(h *harness) string {
		_, m, _ := h.do("GET", "/metrics", "")
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "switchboard_condition_failures_total") {
				return l
			}
		}
		return ""
	}
	if got := metric(h); got != `switchboard_condition_failures_total{rule="even"} 3` {
		t.Fatalf("metric: %q", got)
	}
	if n := strings.Count(h.logs.String(), "a rule's condition failed at run time"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, h.logs)
	}
	if !strings.Contains(h.logs.String(), `"err":"invalid operation: float64 % int (1:17)"`) {
		t.Fatalf("the log does not say why:\n%s", h.logs)
	}
	h = h.restart(rules)
	if got := metric(h); got != "" {
		t.Fatalf("a restart's replay counted: %q", got)
	}
	h.do("POST", "/v1/events", msgAt("e9", "k9", "")) // no n: nil % 2 fails too
	if got := metric(h); got != `switchboard_condition_failures_total{rule="even"} 1` {
		t.Fatalf("after a restart: %q", got)
	}
}
