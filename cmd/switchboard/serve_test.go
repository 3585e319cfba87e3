package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// buildBinary builds switchboard once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "switchboard-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "switchboard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %v\n%s", err, out)
	}
	return bin, nil
})

func binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// serveRules writes a small rule set with an unanswered timer.
func serveRules(t *testing.T, dir string) string {
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "team.yaml"), []byte("agents:\n  - {id: a1, capacity: 2, status: online}\n  - {id: a2, capacity: 2, status: online}\ngroups:\n  G: [a1, a2]\n"), 0o644)
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte("on new conversation -> assign group G by least_active\non unanswered 1s -> tag late; notify agent email\n"), 0o644)
	return rules
}

// server is a running switchboard serve.
type server struct {
	cmd  *exec.Cmd
	addr string
	logs *watchWriter
	done chan error
}

func startServe(t *testing.T, bin string, marker string, args ...string) *server {
	t.Helper()
	s := &server{addr: freeAddr(t), done: make(chan error, 1)}
	s.cmd = exec.Command(bin, append([]string{"serve", "--addr", s.addr}, args...)...)
	s.logs = &watchWriter{marker: []byte(marker), seen: make(chan struct{}, 1)}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("service log:\n%s", s.logs.String())
		}
	})
	waitHealthy(t, s.addr)
	// What serve logs at start is in s.logs once its last line is: the log
	// comes through a pipe, and may lag the process.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.logs.String(), `"msg":"serving"`); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve never said it was serving:\n%s", s.logs)
		}
	}
	return s
}

func (s *server) post(body string) (int, string) {
	resp, err := http.Post("http://"+s.addr+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stop sends sig and returns the exit code and how long it took.
func (s *server) stop(t *testing.T, sig os.Signal, limit time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode(), time.Since(start)
	case <-time.After(limit):
		s.cmd.Process.Kill()
		<-s.done
		return -1, time.Since(start)
	}
}

// TestServeSIGTERMUnderDueTimers: SIGTERM while a burst of timers is due
// and a client is still sending a body exits 0 within 10 s, every time.
func TestServeSIGTERMUnderDueTimers(t *testing.T) {
	bin := binary(t)
	rules := serveRules(t, t.TempDir())
	const runs = 50
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for run := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			args := []string{"--rules", rules, "--data", filepath.Join(t.TempDir(), "sb.db")}
			if run%10 != 0 { // the default grace in one run of ten; shorter in the rest
				args = append(args, "--shutdown-grace", "1s")
			}
			s := startServe(t, bin, "tick", args...)
			var batch strings.Builder
			for i := range 300 {
				fmt.Fprintf(&batch, `{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d"}}`+"\n", i, i)
			}
			if code, body := s.post(batch.String()); code != 200 {
				t.Errorf("run %d: post: %d %.200s", run, code, body)
				return
			}
			if run%2 == 0 {
				// A client that never finishes its body.
				conn, err := net.Dial("tcp", s.addr)
				if err == nil {
					defer conn.Close()
					fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"id\":")
				}
			}
			time.Sleep(time.Second + time.Duration(run%5)*20*time.Millisecond) // the timers fall due
			code, took := s.stop(t, syscall.SIGTERM, 12*time.Second)
			if code != 0 || took > 10*time.Second {
				t.Errorf("run %d: exit %d after %v", run, code, took.Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
}

// TestServeTimeouts: slow-body connections are closed after the read
// timeout instead of staying open.
func TestServeTimeouts(t *testing.T) {
	bin := binary(t)
	rules := serveRules(t, t.TempDir())
	s := startServe(t, bin, "-", "--rules", rules, "--data", filepath.Join(t.TempDir(), "sb.db"), "--read-timeout", "1s")
	var conns []net.Conn
	for range 50 {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
		conns = append(conns, conn)
	}
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d still open after 5 s", i)
		}
	}
	if code, _ := s.post(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`); code != 200 {
		t.Fatalf("the service after the slow clients: %d", code)
	}
}

// TestServeOwnsItsData: one process per data file; never a silent start
// on a file that is not a Switchboard database.
func TestServeOwnsItsData(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	rules := serveRules(t, dir)
	db := filepath.Join(dir, "sb.db")
	first := startServe(t, bin, "-", "--rules", rules, "--data", db)
	if !strings.Contains(first.logs.String(), "created a new, empty database") {
		t.Errorf("a new database is not logged:\n%s", first.logs.String())
	}
	if logs := first.logs.String(); !strings.Contains(logs, `"took_ms":`) || strings.Contains(logs, `"took":`) {
		t.Errorf("durations in the log do not name their unit:\n%s", logs)
	}
	run := func(data string) (int, string) {
		cmd := exec.Command(bin, "serve", "--rules", rules, "--data", data, "--addr", freeAddr(t))
		var out bytes.Buffer
		cmd.Stderr = &out
		done := make(chan error, 1)
		cmd.Start()
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return -1, "still running: " + out.String()
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}
	if code, out := run(db); code != 1 || !strings.Contains(out, "another switchboard is using this database") {
		t.Errorf("a second process: exit %d\n%s", code, out)
	}
	empty := filepath.Join(dir, "empty.db")
	os.WriteFile(empty, nil, 0o644)
	if code, out := run(empty); code != 1 || !strings.Contains(out, "is empty (0 bytes)") {
		t.Errorf("an empty file: exit %d\n%s", code, out)
	}
	other := filepath.Join(dir, "other.db")
	sdb, _ := sql.Open("sqlite", other)
	sdb.Exec(`CREATE TABLE customers (id)`)
	sdb.Close()
	if code, out := run(other); code != 1 || !strings.Contains(out, "not a Switchboard one") {
		t.Errorf("another application's database: exit %d\n%s", code, out)
	}
	// Deleted under it: refused within a second, and no empty restart.
	first.post(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`)
	os.Remove(db)
	time.Sleep(time.Second)
	if code, body := first.post(`{"id":"e2","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k2"}}`); code != 503 {
		t.Errorf("after the database was deleted: %d %s", code, body)
	}
	first.stop(t, syscall.SIGKILL, 5*time.Second)
	if code, out := run(db); code != 1 || !strings.Contains(out, "exists without") {
		t.Errorf("a start beside a deleted database's log: exit %d\n%s", code, out)
	}
}

// crashDuringPrune: killed while retention prunes, the service comes back
// with its state, and the log and snapshots are consistent. Part of
// TestServeCrashRecovery.
func crashDuringPrune(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	rules := serveRules(t, dir)
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte("on new conversation -> assign group G by least_active\non incoming message -> tag seen\n"), 0o644)
	db := filepath.Join(dir, "sb.db")
	args := []string{"--rules", rules, "--data", db, "--snapshot-every", "500", "--snapshot-interval", "200ms", "--retain", "4s"}
	s := startServe(t, bin, `"msg":"pruning the log for retention"`, args...)
	// Enough old events that pruning them takes several transactions.
	for b := range 10 {
		var batch strings.Builder
		for i := range 5000 {
			fmt.Fprintf(&batch, `{"id":"old%d-%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d"}}`+"\n", b, i, i%50)
		}
		if code, _ := s.post(batch.String()); code != 200 {
			t.Fatal(code)
		}
	}
	if strings.Contains(s.logs.String(), "pruning") {
		t.Fatal("posting the old events took longer than the retention period")
	}
	time.Sleep(4100 * time.Millisecond) // old enough to prune
	// One more event: the next snapshot covers the old ones, and the prune
	// starts; the kill falls as it does.
	if code, _ := s.post(`{"id":"new","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`); code != 200 {
		t.Fatal(code)
	}
	var agents []json.RawMessage
	getJSON(t, s.addr, "/v1/agents", &agents)
	select {
	case <-s.logs.seen:
		s.stop(t, syscall.SIGKILL, 5*time.Second)
	case <-time.After(20 * time.Second):
		t.Fatal("no prune")
	}
	firstLogs := s.logs.String()
	s = startServe(t, bin, `"msg":"pruned the log for retention"`, args...)
	var after []json.RawMessage
	getJSON(t, s.addr, "/v1/agents", &after)
	a, _ := json.Marshal(agents)
	b, _ := json.Marshal(after)
	if !bytes.Equal(a, b) {
		t.Errorf("state after the crash:\n%s\nbefore:\n%s", b, a)
	}
	if code, _ := s.post(`{"id":"last","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`); code != 200 {
		t.Fatal(code)
	}
	if strings.Contains(firstLogs, "pruned the log for retention") {
		t.Log("the kill fell after the prune had finished", grepLog(firstLogs, "prun"))
	} else {
		t.Log("the kill fell during the prune")
		select {
		case <-s.logs.seen: // the cut-off prune is done again
		case <-time.After(20 * time.Second):
			t.Fatal("the prune was not finished after the restart")
		}
	}
	s.stop(t, syscall.SIGTERM, 10*time.Second)

	// The newest snapshot and the log after it give the same state as the
	// service had.
	st, err := store.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rs, _ := dsl.Load(rules)
	state, err := journal.New(st, rs, 0).Load(context.Background(), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if state.Changed > 0 {
		t.Errorf("%d replayed decisions differ from the stored ones", state.Changed)
	}
	p, _ := st.Pruned(context.Background())
	if p.Through == 0 {
		t.Errorf("nothing was pruned")
	}
}

func grepLog(logs, sub string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestServeSimulateAfterErasure: an erasure changes stored texts; a replay
// of the log says so apart from real differences, and exits 0.
func TestServeSimulateAfterErasure(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	rules := serveRules(t, dir)
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte("on new conversation -> assign group G by least_active; reply \"Hi {{contact.name}}\"\n"), 0o644)
	db := filepath.Join(dir, "sb.db")
	s := startServe(t, bin, "-", "--rules", rules, "--data", db)
	for i := range 3 {
		s.post(fmt.Sprintf(`{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","name":"Name%d"}}`, i, i, i))
	}
	req, _ := http.NewRequest("DELETE", "http://"+s.addr+"/v1/contacts/k1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("erase: %v %v", resp, err)
	}
	resp.Body.Close()
	s.stop(t, syscall.SIGTERM, 10*time.Second)
	var out, errOut bytes.Buffer
	if code := run([]string{"simulate", "--data", db}, nil, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "1 decisions differ where personal data was erased") {
		t.Fatalf("simulate --data after an erasure: exit %d\n%s", code, errOut.String())
	}
}

// TestServePortInUse: a busy port fails at once, before the database is
// created or anything is replayed.
func TestServePortInUse(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	rules := serveRules(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := filepath.Join(dir, "sb.db")
	cmd := exec.Command(bin, "serve", "--rules", rules, "--data", db, "--addr", ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "cannot listen") {
		t.Errorf("serve on a busy port: exit %d (%v)\n%s", code, err, out)
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("serve on a busy port created %s (%v)", db, err)
	}
}

// postAuth posts an event with a bearer token.
func (s *server) postAuth(body, token string) (int, string) {
	req, _ := http.NewRequest("POST", "http://"+s.addr+"/v1/events", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeWrongToken: serve warns of a token short enough to guess, and
// counts and logs (once per interval, not once per try) the calls refused
// for a wrong token, on the API and at the console's login.
func TestServeWrongToken(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	s := startServe(t, bin, "refused a missing or wrong token", "--rules", serveRules(t, dir), "--data", filepath.Join(dir, "sb.db"), "--token", "hunter2")
	if !strings.Contains(s.logs.String(), "the token is 7 characters long") {
		t.Errorf("no warning of a short token:\n%s", s.logs)
	}
	for range 3 {
		if code, body := s.postAuth(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`, "hunter3"); code != 401 {
			t.Fatalf("a wrong token: %d %s", code, body)
		}
	}
	resp, err := http.PostForm("http://"+s.addr+"/login", url.Values{"token": {"hunter3"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("a login with a wrong token: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`switchboard_wrong_token_total{surface="api"} 3`, `switchboard_wrong_token_total{surface="console"} 1`} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	select {
	case <-s.logs.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("no refusal in the log")
	}
	if n := strings.Count(s.logs.String(), "refused a missing or wrong token"); n != 1 {
		t.Errorf("4 refusals within seconds said %d times in the log, want once:\n%s", n, s.logs)
	}
}

// TestServeConsoleWithoutToken: without --token the console, on this
// machine, shows what the service answers: its calls to the API are the
// process's own, not a page's.
func TestServeConsoleWithoutToken(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	s := startServe(t, bin, "-", "--rules", serveRules(t, dir), "--data", filepath.Join(dir, "sb.db"))
	if code, body := s.post(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`); code != 200 {
		t.Fatalf("post: %d %s", code, body)
	}
	for _, c := range []struct{ path, want string }{
		{"/", "a1"},
		{"/live/agents", "a2"},
		{"/live/decisions", "e1"},
		{"/rules", "least_active"},
		{"/deliveries", "Deliveries"},
		{"/events/e1", "a1"},
	} {
		resp, err := http.Get("http://" + s.addr + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(body), "did not answer") || !strings.Contains(string(body), c.want) {
			t.Errorf("GET %s: %d, want %q in\n%s", c.path, resp.StatusCode, c.want, body)
		}
	}
}
