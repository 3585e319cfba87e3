package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
)

// TestServeDeliversAtLeastOnce runs the real binary with receivers that
// fail the first attempts, answer 429 with Retry-After, time out, and
// refuse one destination for good; it SIGKILLs the service while
// deliveries are in flight, restarts it and sends every event again. Every
// acknowledged event's decision reaches the platform, every notification
// its endpoint or mailbox, at least once; duplicates carry the same
// webhook-id; each conversation's deliveries arrive in order; the refused
// ones are dead with the answer kept; a refused event delivers nothing.
func TestServeDeliversAtLeastOnce(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("e2e-secret-e2e-secret-e2e-secret"))
	platform, err := deliverytest.NewReceiver(whsec)
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	var n atomic.Int64
	platform.Decide(func(h deliverytest.Hit) (deliverytest.Reply, bool) {
		switch i := n.Add(1); {
		case i <= 3:
			return deliverytest.Reply{Status: 503}, true
		case i == 4:
			return deliverytest.Reply{Status: 429, RetryAfter: "1"}, true
		case i == 5:
			return deliverytest.Reply{Delay: 2 * time.Second}, true // longer than the timeout
		}
		return deliverytest.Reply{Delay: 5 * time.Millisecond}, true
	})
	crm, _ := deliverytest.NewReceiver(whsec)
	defer crm.Close()
	crm.Decide(func(deliverytest.Hit) (deliverytest.Reply, bool) {
		return deliverytest.Reply{Status: 400, Body: `{"error":"unknown account"}`}, true
	})
	smtp, err := deliverytest.NewMailServer()
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()

	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "team.yaml"), []byte("agents:\n  - {id: a, email: a@example.com, capacity: 100, status: online}\n  - {id: b, email: b@example.com, capacity: 100, status: online}\ngroups:\n  G: [a, b]\n"), 0o644)
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte(`rule "route" on new conversation -> assign group G by least_active
rule "vip" on new conversation where 'vip' in contact.tags -> notify webhook crm with "VIP {{contact.id}}"
rule "tell" on incoming message -> notify agent via email with "{{message.text}}"
`), 0o644)
	config := filepath.Join(dir, "switchboard.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`platform: {url: %s/hooks, secret_env: WEBHOOK_SECRET, timeout: 500ms}
endpoints:
  crm: {url: %s/crm, secret_env: WEBHOOK_SECRET}
smtp: {host: 127.0.0.1, port: %d, security: none, from: switchboard@example.com}
`, platform.URL, crm.URL, smtp.Port())), 0o644)
	os.Setenv("WEBHOOK_SECRET", whsec)
	defer os.Unsetenv("WEBHOOK_SECRET")
	db := filepath.Join(dir, "sb.db")

	// 20 conversations, 6 messages each, posted in order per conversation
	// by 4 clients.
	var events []string
	for m := range 6 {
		for c := range 20 {
			tags := ""
			if c%5 == 0 {
				tags = `,"tags":["vip"]`
			}
			events = append(events, fmt.Sprintf(`{"id":"c%d-m%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d"%s},"message":{"text":"message %d"}}`, c, m, c, tags, m))
		}
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	post := func(s *server, evs []string) {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(evs); i += 4 {
					code, body := s.post(evs[i])
					if code == 200 {
						var d struct{ Event string }
						json.Unmarshal([]byte(body), &d)
						mu.Lock()
						acked[d.Event] = true
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	}
	first := startServe(t, bin, "-", "--rules", rules, "--data", db, "--config", config)
	// A refused event delivers nothing.
	if code, _ := first.post(`{"id":"refused-1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"kx"},"bogus":1}`); code != 400 {
		t.Fatalf("a bad event: %d", code)
	}
	post(first, events[:60])
	deadline := time.Now().Add(20 * time.Second)
	for len(platform.Accepted()) < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	first.stop(t, syscall.SIGKILL, 5*time.Second)
	killedAt := len(platform.Hits())

	second := startServe(t, bin, "-", "--rules", rules, "--data", db, "--config", config)
	defer second.stop(t, syscall.SIGTERM, 10*time.Second)
	post(second, events[60:])
	post(second, events) // every event again: replays, no new deliveries
	// Wait until nothing is owed.
	deadline = time.Now().Add(60 * time.Second)
	for {
		open := 0
		for _, st := range []string{"pending", "failed"} {
			resp, err := http.Get("http://" + second.addr + "/v1/deliveries?limit=1000&status=" + st)
			if err != nil {
				t.Fatal(err)
			}
			var page struct{ Deliveries []json.RawMessage }
			json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			open += len(page.Deliveries)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still owed after a minute", open)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(acked) != len(events) {
		t.Fatalf("%d of %d events acknowledged", len(acked), len(events))
	}
	t.Logf("platform: %d requests (%d before the kill), %d accepted", len(platform.Hits()), killedAt, len(platform.Accepted()))

	// Every decision reached the platform; duplicates are the same
	// delivery; each conversation's decisions came in log order.
	bodies := map[string]string{}
	reached := map[string]bool{}
	last := map[string]int{} // conversation: the sequence of its last first-arrival
	for _, h := range platform.Accepted() {
		if !h.Verified {
			t.Errorf("%s: signature: %s", h.ID, h.VerifyErr)
		}
		ev, err := h.Event()
		if err != nil {
			t.Fatal(err)
		}
		if ev["id"] != h.ID {
			t.Errorf("webhook-id %s carries CloudEvent %v", h.ID, ev["id"])
		}
		if b, seen := bodies[h.ID]; seen {
			if b != string(h.Body) {
				t.Errorf("%s was sent twice with different bodies", h.ID)
			}
			continue
		}
		bodies[h.ID] = string(h.Body)
		data := ev["data"].(map[string]any)
		event := data["event"].(string)
		if event == "refused-1" {
			t.Errorf("a refused event was delivered")
		}
		reached[event] = true
		seq, _ := strconv.Atoi(ev["sequence"].(string))
		conv, _ := ev["subject"].(string)
		if seq < last[conv] {
			t.Errorf("conversation %s: sequence %d arrived after %d", conv, seq, last[conv])
		}
		last[conv] = seq
	}
	for id := range acked {
		if !reached[id] {
			t.Errorf("the decision of %s never reached the platform", id)
		}
	}
	// Every message told its agent by email, at least once.
	mails := map[string]bool{}
	for _, m := range smtp.Messages() {
		mails[strings.TrimSpace(m.Body[:strings.Index(m.Body, "\n")])] = true
	}
	for m := range 6 {
		if !mails[fmt.Sprintf("message %d", m)] {
			t.Errorf("no email for message %d", m)
		}
	}
	if got := len(smtp.Messages()); got < len(events) {
		t.Errorf("%d emails for %d messages", got, len(events))
	}
	// The CRM refused every VIP notice: each is dead, with the answer.
	resp, err := http.Get("http://" + second.addr + "/v1/deliveries?limit=1000&destination=webhook:crm")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Deliveries []struct{ ID, Status, Answer string }
	}
	json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page.Deliveries) != 4 {
		t.Errorf("%d VIP notices, want 4", len(page.Deliveries))
	}
	for _, d := range page.Deliveries {
		if d.Status != "dead" || d.Answer != `{"error":"unknown account"}` {
			t.Errorf("VIP notice %s: %s %q", d.ID, d.Status, d.Answer)
		}
	}
	if n := len(crm.Hits()); n > 4+2 {
		t.Errorf("the CRM's 400s were retried: %d requests", n)
	}
}
