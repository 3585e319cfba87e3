package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/internal/pgtest"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestServeInstances runs three real switchboard processes on one
// PostgreSQL database behind 32 clients; each client sends its events to
// one instance and, when that one refuses or does not answer, the same
// event to the next. Midway one instance is SIGKILLed, later restarted;
// another reloads changed rules under load; timers fire on all of them.
// Then: every acknowledged event is stored exactly once, with the decision
// its client was given; replayed from the start, the log gives the same
// decisions, and after every record no agent is over capacity, no
// conversation is with two agents or placed twice, and every waiting line
// is in order; the final state of every instance is that replay's; every
// decision reached the platform and every notification its endpoint.
func TestServeInstances(t *testing.T) {
	bin := binary(t)
	data := pgtest.URL(t)
	dir := t.TempDir()
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("instances-secret-instances-secr"))
	platform, err := deliverytest.NewReceiver(whsec)
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	crm, _ := deliverytest.NewReceiver(whsec)
	defer crm.Close()
	var crmHits atomic.Int64
	crm.Decide(func(deliverytest.Hit) (deliverytest.Reply, bool) {
		if crmHits.Add(1)%5 == 0 {
			return deliverytest.Reply{Status: 503}, true // retried
		}
		return deliverytest.Reply{}, true
	})
	config := filepath.Join(dir, "switchboard.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf("platform: {url: %s/hooks, secret_env: WEBHOOK_SECRET}\nendpoints:\n  crm: {url: %s/crm, secret_env: WEBHOOK_SECRET}\n",
		platform.URL, crm.URL)), 0o644)
	os.Setenv("WEBHOOK_SECRET", whsec)
	defer os.Unsetenv("WEBHOOK_SECRET")

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
	routing := filepath.Join(rules, "routing.rules")
	os.WriteFile(routing, []byte(`
rule "vip" on new conversation where 'vip' in contact.tags -> assign group Support by most_available priority 1; notify webhook crm with "VIP {{contact.id}}"
rule "sms" on new conversation where channel == 'sms' -> assign group Sales by least_active
rule "web" on new conversation -> assign group Support by round_robin
rule "late" on unanswered 1s -> tag late
`), 0o644)

	// 32 clients, each with contacts of its own (so that its order is
	// kept); one more changes agents' statuses.
	const clients, perClient = 32, 90
	streams := make([][]*triggers.Event, clients+1)
	for c := range clients {
		for i := range perClient / 3 {
			k := fmt.Sprintf("k%d-%d", c, i)
			ch := []string{"sms", "webchat"}[i%2]
			var tags []string
			if i%6 == 0 {
				tags = []string{"vip"}
			}
			open := &triggers.Event{ID: fmt.Sprintf("m%d-%d", c, i), Type: "message.received", Channel: ch, To: "+1",
				Contact: &triggers.EventContact{ID: k, Tags: tags}, Message: &triggers.EventMessage{Text: "hi"}}
			again := &triggers.Event{ID: fmt.Sprintf("r%d-%d", c, i), Type: "message.received", Channel: ch, To: "+1",
				Contact: &triggers.EventContact{ID: k}, Message: &triggers.EventMessage{Text: "still there?"}}
			streams[c] = append(streams[c], open, again)
			if i%2 == 0 {
				streams[c] = append(streams[c], &triggers.Event{ID: fmt.Sprintf("x%d-%d", c, i), Type: "conversation.closed", Conversation: open.ID})
			}
		}
	}
	for i := range 60 {
		streams[clients] = append(streams[clients], &triggers.Event{ID: fmt.Sprintf("s%d", i), Type: "agent.status",
			Agent: []string{"a4", "a3", "a4", "a1"}[i%4], Status: []string{"online", "offline"}[i/4%2]})
	}
	total := 0
	for _, s := range streams {
		total += len(s)
	}

	// The instances.
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	procs := make([]*exec.Cmd, len(addrs))
	logs := make([]*watchWriter, len(addrs))
	var procMu sync.Mutex
	startInstance := func(i int) {
		cmd := exec.Command(bin, "serve", "--rules", rules, "--data", data, "--addr", addrs[i], "--config", config, "--snapshot-every", "300")
		logs[i] = &watchWriter{marker: []byte("-"), seen: make(chan struct{}, 1)}
		cmd.Stderr = logs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procMu.Lock()
		procs[i] = cmd
		procMu.Unlock()
		waitHealthy(t, addrs[i])
	}
	t.Cleanup(func() {
		procMu.Lock()
		defer procMu.Unlock()
		for i, p := range procs {
			if p != nil {
				p.Process.Kill()
				p.Wait()
			}
			if t.Failed() && logs[i] != nil {
				t.Logf("instance %d log:\n%s", i, logs[i].String())
			}
		}
	})
	for i := range addrs {
		startInstance(i)
	}

	// Clients: a refused or unanswered event goes, the same, to the next
	// instance.
	client := &http.Client{Timeout: 5 * time.Second}
	var mu sync.Mutex
	acked := map[string]string{}
	var posted, moved atomic.Int64
	var killedAt atomic.Int64
	var firstAfterKill atomic.Int64
	post := func(c int, ev *triggers.Event) (int, string) {
		var m map[string]any
		b, _ := json.Marshal(ev)
		json.Unmarshal(b, &m)
		delete(m, "at") // the service's clock decides
		body, _ := json.Marshal(m)
		for try := 0; ; try++ {
			addr := addrs[(c+try)%len(addrs)]
			resp, err := client.Post("http://"+addr+"/v1/events", "application/json", bytes.NewReader(body))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					if k := killedAt.Load(); k != 0 && resp.StatusCode == 200 {
						firstAfterKill.CompareAndSwap(0, time.Now().UnixNano())
					}
					return resp.StatusCode, string(bytes.TrimSpace(b))
				}
			}
			moved.Add(1)
			if try%len(addrs) == len(addrs)-1 {
				time.Sleep(50 * time.Millisecond) // every instance refused: wait a moment
			}
		}
	}
	var wg sync.WaitGroup
	third := make(chan struct{})
	half := make(chan struct{})
	twoThirds := make(chan struct{})
	for c, stream := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, ev := range stream {
				code, body := post(c, ev)
				mu.Lock()
				if code == 200 {
					if prev, ok := acked[ev.ID]; ok && prev != body {
						t.Errorf("%s decided twice: %s then %s", ev.ID, prev, body)
					}
					acked[ev.ID] = body
				} else {
					t.Errorf("%s: %d %s", ev.ID, code, body)
				}
				mu.Unlock()
				switch posted.Add(1) {
				case int64(total / 3):
					close(third)
				case int64(total / 2):
					close(half)
				case int64(2 * total / 3):
					close(twoThirds)
				}
			}
		}()
	}
	<-third
	procMu.Lock()
	killedAt.Store(time.Now().UnixNano())
	procs[0].Process.Kill() // SIGKILL: no goodbye
	procs[0].Wait()
	procs[0] = nil
	procMu.Unlock()
	<-half
	// New rules, reloaded on another instance under load.
	os.WriteFile(routing, []byte(`
rule "vip" on new conversation where 'vip' in contact.tags -> assign group Support by most_available priority 1; notify webhook crm with "VIP {{contact.id}}"
rule "sms" on new conversation where channel == 'sms' -> assign group Sales by round_robin
rule "web" on new conversation -> assign group Support by least_active
rule "late" on unanswered 1s -> tag late
`), 0o644)
	resp, err := http.Post("http://"+addrs[1]+"/v1/rules/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	reloadBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(reloadBody), `"changed":true`) {
		t.Fatalf("reload: %d %s", resp.StatusCode, reloadBody)
	}
	<-twoThirds
	startInstance(0)
	wg.Wait()
	if t.Failed() {
		return
	}
	gap := time.Duration(firstAfterKill.Load() - killedAt.Load())
	t.Logf("%d events from %d clients on %d instances; %d sends moved to another instance; first event accepted %v after the SIGKILL",
		total, clients+1, len(addrs), moved.Load(), gap.Round(time.Millisecond))

	// Let the timers fire and the deliveries drain.
	time.Sleep(1500 * time.Millisecond)
	st := openData(t, data)
	defer st.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		open, err := st.DeliveryStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if open.Open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still owed after 90 s", open.Open)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every acknowledged event stored exactly once, as its client was told.
	seen := map[string]int{}
	ticks := map[string]int{}
	err = st.Replay(context.Background(), 0, 0, func(r store.Record) error {
		seen[r.ID]++
		if r.Type == triggers.TypeTick {
			ticks[r.ID]++
		}
		if want, ok := acked[r.ID]; ok && want != string(r.Decision) {
			t.Errorf("%s: stored %s, its client was told %s", r.ID, r.Decision, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(acked) != total {
		t.Fatalf("%d of %d events acknowledged", len(acked), total)
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged event %s is stored %d times", id, seen[id])
		}
	}
	if len(ticks) == 0 {
		t.Error("no timer fired")
	}

	// The log replayed from the start, one engine: the same decisions, and
	// the invariants after every record.
	rs, ds := dsl.Load(rules)
	if rs == nil {
		t.Fatal(ds)
	}
	capacity := map[string]float64{"a1": 3, "a2": 3, "a3": 2, "a4": 4}
	// One pass: the decisions compared with the stored ones, and the
	// invariants checked after every record.
	j := journal.New(st, rs, 0)
	replay, err := j.Load(context.Background(), journal.Options{FromStart: true, Before: 1})
	if err != nil {
		t.Fatalf("the log does not replay: %v", err)
	}
	broken := 0
	err = st.Replay(context.Background(), 0, 0, func(r store.Record) error {
		d, err := j.Apply(context.Background(), replay, r)
		if err != nil {
			return err
		}
		if d != nil && !bytes.Equal(d, r.Decision) {
			replay.Changed++
		}
		if msg := invariants(replay.Engine, capacity); msg != "" && broken < 5 {
			broken++
			t.Errorf("after record %d (%s): %s", r.Seq, r.ID, msg)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the log does not replay: %v", err)
	}
	if replay.Changed > 0 {
		t.Errorf("replayed from the start, the log gives %d other decisions than were stored", replay.Changed)
	}

	// Every instance holds the replay's state.
	wantAgents, _ := json.Marshal(replay.Engine.Agents())
	wantQueues, _ := json.Marshal(noWaits(replay.Engine.Queues(replay.Engine.Clock())))
	for i, addr := range addrs {
		var agents []engine.AgentView
		getJSON(t, addr, "/v1/agents", &agents)
		var queues []engine.QueueView
		getJSON(t, addr, "/v1/queues", &queues)
		gotAgents, _ := json.Marshal(agents)
		gotQueues, _ := json.Marshal(noWaits(queues))
		if !bytes.Equal(gotAgents, wantAgents) || !bytes.Equal(gotQueues, wantQueues) {
			t.Errorf("instance %d differs from one engine replaying the log:\nagents %s\nreplay %s\nqueues %s\nreplay %s", i, gotAgents, wantAgents, gotQueues, wantQueues)
		}
	}

	// Every decision reached the platform, every notification the CRM.
	reached := map[string]bool{}
	for _, h := range platform.Accepted() {
		ev, err := h.Event()
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := ev["data"].(map[string]any); ok {
			if id, ok := d["event"].(string); ok {
				reached[id] = true
			}
		}
	}
	vips := 0
	for id, body := range acked {
		if !reached[id] {
			t.Errorf("the decision of %s never reached the platform", id)
		}
		if strings.Contains(body, `"notify"`) {
			vips++
		}
	}
	notified := map[string]bool{}
	for _, h := range crm.Accepted() {
		notified[h.ID] = true
	}
	if len(notified) != vips {
		t.Errorf("%d notifications reached the CRM, %d were made", len(notified), vips)
	}
	t.Logf("%d records; %d ticks; platform: %d requests for %d decisions; crm: %d requests for %d notifications",
		len(seen), len(ticks), len(platform.Hits()), len(reached), len(crm.Hits()), vips)
}

// invariants says what is wrong with a state: an agent over capacity, a
// conversation with two agents or placed twice, a waiting line out of
// order; "" when nothing is.
func invariants(e *engine.Engine, capacity map[string]float64) string {
	where := map[string]string{}
	for _, a := range e.Agents() {
		if a.Load > capacity[a.ID] {
			return fmt.Sprintf("%s over capacity: %v of %v", a.ID, a.Load, capacity[a.ID])
		}
		for _, c := range a.Conversations {
			if prev, ok := where[c]; ok {
				return fmt.Sprintf("conversation %s with %s and %s", c, prev, a.ID)
			}
			where[c] = "agent " + a.ID
		}
	}
	for _, q := range e.Queues(e.Clock()) {
		for _, w := range q.Waiting {
			if prev, ok := where[w.Conversation]; ok {
				return fmt.Sprintf("conversation %s placed twice: %s and line %s%s", w.Conversation, prev, q.Group, q.Agent)
			}
			where[w.Conversation] = "line " + q.Group + q.Agent
		}
		if !slices.IsSortedFunc(q.Waiting, func(x, y engine.WaitingView) int {
			if x.Priority != y.Priority {
				return x.Priority - y.Priority
			}
			return cmpStrings(x.Since, y.Since)
		}) {
			return fmt.Sprintf("line %s%s out of order", q.Group, q.Agent)
		}
	}
	return ""
}
