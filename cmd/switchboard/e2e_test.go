package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/internal/pgtest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestServeCrashRecovery runs the real binary, posts thousands of events
// from concurrent clients, kills it with SIGKILL midway (as a snapshot is
// being taken), restarts it, has every client post every event again (as
// a retrying client would), and checks that nothing acknowledged was lost
// or repeated, that the invariants hold, that the final state is what a
// full replay of the log gives, and that simulate and explain on the
// stored log reproduce the service. A second run is killed during a
// retention prune.
//
// The same test runs on SQLite and on PostgreSQL.
func TestServeCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Run("during a retention prune", crashDuringPrune)
	t.Run("sqlite", func(t *testing.T) { crashRecovery(t, filepath.Join(t.TempDir(), "sb.db")) })
	t.Run("postgres", func(t *testing.T) { crashRecovery(t, pgtest.URL(t)) })
}

// openData opens what --data names, SQLite or PostgreSQL.
func openData(t *testing.T, data string) store.Store {
	t.Helper()
	var st store.Store
	var err error
	if isPostgres(data) {
		st, err = store.OpenPostgres(context.Background(), data)
	} else {
		st, err = store.OpenSQLite(context.Background(), data)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func crashRecovery(t *testing.T, db string) {
	bin := binary(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "team.yaml"), []byte(`
agents:
  - {id: a1, capacity: 3, status: online}
  - {id: a2, capacity: 3, status: online}
  - {id: a3, capacity: 2, status: online}
  - {id: a4, capacity: 4, status: offline}
groups:
  Sales: [a1, a2, a3]
  Support: [a2, a3, a4]
`), 0o644)
	os.WriteFile(filepath.Join(rules, "routing.rules"), []byte(`
rule "vip" on new conversation where 'vip' in contact.tags -> assign group Support by most_available priority 1
rule "sms" on new conversation where channel == 'sms' -> assign group Sales by least_active
rule "web" on new conversation -> assign group Support by round_robin
`), 0o644)
	// The events: each client owns its contacts, so its own order is kept;
	// agents change status on a client of their own.
	const clients, perClient = 10, 360
	streams := make([][]*triggers.Event, clients+1)
	t0 := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	for c := range clients {
		for i := range perClient / 3 {
			k := fmt.Sprintf("k%d-%d", c, i)
			at := t0.Add(time.Duration(i) * time.Second)
			ch := []string{"sms", "webchat"}[i%2]
			var tags []string
			if i%7 == 0 {
				tags = []string{"vip"}
			}
			open := &triggers.Event{ID: fmt.Sprintf("m%d-%d", c, i), Type: "message.received", At: at, Channel: ch, To: "+1",
				Contact: &triggers.EventContact{ID: k, Tags: tags}, Message: &triggers.EventMessage{Text: "hi"}}
			again := &triggers.Event{ID: fmt.Sprintf("r%d-%d", c, i), Type: "message.received", At: at, Channel: ch, To: "+1",
				Contact: &triggers.EventContact{ID: k}, Message: &triggers.EventMessage{Text: "still there?"}}
			streams[c] = append(streams[c], open, again)
			if i%2 == 0 {
				streams[c] = append(streams[c], &triggers.Event{ID: fmt.Sprintf("x%d-%d", c, i), Type: "conversation.closed", At: at, Conversation: open.ID})
			}
		}
	}
	for i := range 40 {
		st := []string{"offline", "online"}[i%2]
		streams[clients] = append(streams[clients], &triggers.Event{ID: fmt.Sprintf("s%d", i), Type: "agent.status",
			At: t0.Add(time.Duration(i) * time.Second), Agent: []string{"a4", "a3", "a4", "a1"}[i%4], Status: st})
	}
	total := 0
	for _, s := range streams {
		total += len(s)
	}

	addr := freeAddr(t)
	snapshotting := make(chan struct{}, 1)
	start := func() *exec.Cmd {
		// Snapshots every 100 records, so that the kill can fall while
		// one is being written.
		cmd := exec.Command(bin, "serve", "--rules", rules, "--data", db, "--addr", addr, "--snapshot-every", "100")
		logs := &watchWriter{marker: []byte(`"msg":"taking a snapshot"`), seen: snapshotting}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			if t.Failed() {
				t.Logf("service log:\n%s", logs.String())
			}
		})
		waitHealthy(t, addr)
		return cmd
	}
	cmd := start()

	// Clients post their events in order, retrying until acknowledged.
	type ack struct {
		status   int
		decision string
	}
	var mu sync.Mutex
	acked := map[string]ack{}
	var posted atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	post := func(ev *triggers.Event) (int, string) {
		body, _ := json.Marshal(ev)
		for {
			resp, err := http.Post("http://"+addr+"/v1/events", "application/json", bytes.NewReader(body))
			if err != nil {
				time.Sleep(20 * time.Millisecond) // down: retry
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return resp.StatusCode, string(bytes.TrimSpace(b))
		}
	}
	for _, stream := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, ev := range stream {
				code, body := post(ev)
				mu.Lock()
				if code == 200 {
					if prev, ok := acked[ev.ID]; ok && prev.decision != body {
						t.Errorf("%s decided twice: %s then %s", ev.ID, prev.decision, body)
					}
					acked[ev.ID] = ack{code, body}
				}
				mu.Unlock()
				if posted.Add(1) == int64(total/2) {
					close(killed)
				}
			}
		}()
	}
	<-killed
	// Kill it as the next snapshot is being taken.
	for len(snapshotting) > 0 {
		<-snapshotting
	}
	select {
	case <-snapshotting:
	case <-time.After(20 * time.Second):
		t.Fatal("no snapshot was taken")
	}
	cmd.Process.Kill() // SIGKILL: no goodbye
	cmd.Wait()
	ackedBefore := len(acked)
	cmd = start()
	wg.Wait()

	// Every client posts every event again: the answers must not change.
	for _, stream := range streams {
		for _, ev := range stream {
			code, body := post(ev)
			mu.Lock()
			if prev, ok := acked[ev.ID]; ok && (code != 200 || body != prev.decision) {
				t.Errorf("re-posting %s: got %d %s, first answer %s", ev.ID, code, body, prev.decision)
			}
			mu.Unlock()
		}
	}
	if ackedBefore == 0 || len(acked) <= ackedBefore {
		t.Fatalf("the crash did not fall midway: %d acknowledged before, %d in all", ackedBefore, len(acked))
	}

	// What the service holds now.
	var agents []engine.AgentView
	getJSON(t, addr, "/v1/agents", &agents)
	var queues []engine.QueueView
	getJSON(t, addr, "/v1/queues", &queues)
	explained := getText(t, addr, "/v1/events/m3-7/explain?format=text")
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()

	// simulate and explain on the stored log reproduce what the service
	// decided, byte for byte.
	var out, errOut bytes.Buffer
	if code := run([]string{"simulate", "--data", db, "-q"}, nil, io.Discard, &errOut); code != 0 {
		t.Errorf("simulate --data: exit %d\n%s", code, errOut.String())
	}
	if code := run([]string{"explain", "--data", db, "--event", "m3-7"}, nil, &out, &errOut); code != 0 || out.String() != explained {
		t.Errorf("explain --data: exit %d\n%s\nthe service explained:\n%s%s", code, out.String(), explained, errOut.String())
	}

	// Every acknowledged event is stored exactly once.
	st := openData(t, db)
	defer st.Close()
	seen := map[string]int{}
	st.Replay(context.Background(), 0, 0, func(r store.Record) error {
		seen[r.ID]++
		return nil
	})
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged event %s is stored %d times", id, seen[id])
		}
	}

	// Invariants: capacity, one agent per conversation, queue order.
	capacity := map[string]float64{"a1": 3, "a2": 3, "a3": 2, "a4": 4}
	owner := map[string]string{}
	for _, a := range agents {
		if a.Load > capacity[a.ID] {
			t.Errorf("%s above capacity: %v/%v", a.ID, a.Load, capacity[a.ID])
		}
		for _, c := range a.Conversations {
			if prev, dup := owner[c]; dup {
				t.Errorf("conversation %s is with %s and %s", c, prev, a.ID)
			}
			owner[c] = a.ID
		}
	}
	for _, q := range queues {
		if !slices.IsSortedFunc(q.Waiting, func(x, y engine.WaitingView) int {
			if x.Priority != y.Priority {
				return x.Priority - y.Priority
			}
			return cmpStrings(x.Since, y.Since)
		}) {
			t.Errorf("queue %s%s out of order", q.Group, q.Agent)
		}
	}

	// A full replay of the log, with no snapshot, ends in the same state.
	rs, ds := dsl.Load(rules)
	if rs == nil {
		t.Fatal(ds)
	}
	full, err := journal.New(st, rs, 0).Load(context.Background(), journal.Options{FromStart: true})
	if err != nil {
		t.Fatalf("the stored log does not replay: %v", err)
	}
	if full.Changed > 0 {
		t.Errorf("a full replay gives %d other decisions than were stored", full.Changed)
	}
	simAgents, _ := json.Marshal(full.Engine.Agents())
	svcAgents, _ := json.Marshal(agents)
	if !bytes.Equal(simAgents, svcAgents) {
		t.Errorf("agents differ from a full replay:\nservice: %s\nreplay: %s", svcAgents, simAgents)
	}
	simQueues, _ := json.Marshal(noWaits(full.Engine.Queues(full.Engine.Clock())))
	svcQueues, _ := json.Marshal(noWaits(queues))
	if !bytes.Equal(simQueues, svcQueues) {
		t.Errorf("queues differ from a full replay:\nservice: %s\nreplay: %s", svcQueues, simQueues)
	}
	t.Logf("%d events, %d acknowledged before the SIGKILL, %d in all, %d stored", total, ackedBefore, len(acked), len(seen))
}

// noWaits blanks the wait times, which depend on when they are asked.
func noWaits(qs []engine.QueueView) []engine.QueueView {
	for i := range qs {
		for j := range qs[i].Waiting {
			qs[i].Waiting[j].WaitSeconds = 0
		}
	}
	if qs == nil {
		qs = []engine.QueueView{}
	}
	return qs
}

// watchWriter keeps a process's log and signals each time a line holds
// marker.
type watchWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker []byte
	seen   chan struct{}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, w.marker) {
		select {
		case w.seen <- struct{}{}:
		default:
		}
	}
	return w.buf.Write(p)
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitHealthy(t testing.TB, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the service did not come up")
}

func getText(t *testing.T, addr, path string) string {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func getJSON(t *testing.T, addr, path string, v any) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
