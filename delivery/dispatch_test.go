package delivery_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
)

func secret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
}

const team = `agents:
  - {id: ana, name: Ana Costa, email: ana@example.com}
  - {id: ben, name: Ben Okafor}
groups:
  Support: [ana, ben]
`

// outbox is a store with the deliveries of decisions planned into it.
type outbox struct {
	t    *testing.T
	st   *store.SQLite
	plan *delivery.Planner
	team *dsl.Team
	seq  int64
}

func newOutbox(t *testing.T, cfg *delivery.Config) *outbox {
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sb.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tm, ds := dsl.ParseTeam("team.yaml", []byte(team))
	if tm == nil {
		t.Fatal(ds)
	}
	if cfg != nil && cfg.Platform != nil {
		// The platform is owed every decision from the start.
		if _, err := st.OpenFeed(context.Background(), delivery.Platform, 0); err != nil {
			t.Fatal(err)
		}
	}
	return &outbox{t: t, st: st, plan: delivery.NewPlanner(cfg), team: tm}
}

// decide stores a record whose decision took the actions.
func (o *outbox) decide(conv string, acts ...engine.Action) []store.Delivery {
	o.seq++
	id := fmt.Sprintf("e%d", o.seq)
	dec := fmt.Sprintf(`{"event":%q,"conversation":%q,"actions":[]}`, id, conv)
	now := time.Now()
	ds := o.plan.Plan(delivery.Decision{Seq: o.seq, At: now, Event: id, Conversation: conv, Contact: "k1", JSON: []byte(dec), Actions: acts},
		o.team, func(c string) engine.AboutView {
			return engine.AboutView{Contact: "k1", ContactName: "Kim", Phone: "+15550101", Open: true, Channel: "whatsapp", To: "+15550100",
				Where: "with ana", Message: "Bonjour, ma commande ?", WaitingSince: now.Add(-15 * time.Minute)}
		})
	rec := store.Record{Seq: o.seq, ID: id, Type: "message.received", Clock: now, Event: []byte(`{}`), Decision: []byte(dec), RuleSet: "v", Deliveries: ds}
	if err := o.st.Append(context.Background(), []store.Record{rec}); err != nil {
		o.t.Fatal(err)
	}
	return ds
}

// drain runs a dispatcher until nothing is open.
func (o *outbox) drain(cfg *delivery.Config, within time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	d := delivery.NewDispatcher(o.st, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), delivery.Options{RetryBase: 50 * time.Millisecond})
	if err := d.OpenFeed(ctx, o.st, o.seq); err != nil {
		o.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		st, err := o.st.DeliveryStats(context.Background())
		if err != nil {
			o.t.Fatal(err)
		}
		if st.Open == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	o.t.Fatalf("deliveries still open after %v", within)
}

func TestWebhooks(t *testing.T) {
	oldSecret, newSecret := secret(1), secret(2)
	// The platform's receiver still holds the old secret while Switchboard
	// signs with both: rotation.
	platform, err := deliverytest.NewReceiver(oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	defer platform.Close()
	crm, _ := deliverytest.NewReceiver(newSecret)
	defer crm.Close()
	// Fails, asks to wait, times out, then takes everything.
	platform.Then(deliverytest.Reply{Status: 503}, deliverytest.Reply{Status: 429, RetryAfter: "1"}, deliverytest.Reply{Delay: time.Second})
	crm.Then(deliverytest.Reply{Status: 400, Body: `{"error":"unknown conversation"}`})

	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf(`
source: https://switchboard.test
platform: {url: %s/hooks, secret_env: PLATFORM_SECRET, timeout: 300ms}
endpoints:
  crm: {url: %s/crm, secret_env: CRM_SECRET}
`, platform.URL, crm.URL)), func(k string) string {
		return map[string]string{"PLATFORM_SECRET": newSecret + " " + oldSecret, "CRM_SECRET": newSecret}[k]
	})
	if cfg == nil || ds.HasErrors() {
		t.Fatal(ds)
	}
	o := newOutbox(t, cfg)
	o.decide("c1")
	o.decide("c1", engine.Action{Type: engine.ActNotify, Rule: "escalate", Conversation: "c1", Endpoint: "crm", Via: "webhook", Text: "Kim waits"})
	o.decide("c2", engine.Action{Type: engine.ActNotify, Rule: "tell", Conversation: "c2", Target: "ana", Via: "webhook"})
	o.decide("c1")
	o.drain(cfg, 20*time.Second)

	hits := platform.Hits()
	ids := map[string]int{}
	for _, h := range hits {
		if !h.Verified {
			t.Errorf("%s: the signature does not verify: %s", h.ID, h.VerifyErr)
		}
		ids[h.ID]++
	}
	// Every platform delivery arrived, retries under the same id.
	for _, id := range []string{"sb-1-0", "sb-2-0", "sb-3-0", "sb-3-1", "sb-4-0"} {
		if ids[id] == 0 {
			t.Errorf("%s never reached the platform; hits: %v", id, ids)
		}
	}
	if len(hits) < 8 {
		t.Errorf("want the 3 failures retried, got %d requests: %v", len(hits), ids)
	}
	// In order per conversation: c1's decisions were taken 1, 2, 4.
	var c1 []string
	seen := map[string]bool{}
	for _, h := range platform.Accepted() {
		ev, err := h.Event()
		if err != nil {
			t.Fatal(err)
		}
		if ev["subject"] == "c1" && !seen[h.ID] {
			c1 = append(c1, h.ID)
		}
		seen[h.ID] = true
		if ev["specversion"] != "1.0" || ev["source"] != "https://switchboard.test" || ev["id"] != h.ID {
			t.Errorf("not a CloudEvent from the configured source: %s", h.Body)
		}
	}
	if strings.Join(c1, " ") != "sb-1-0 sb-2-0 sb-4-0" {
		t.Errorf("c1's decisions arrived as %v", c1)
	}
	// The 400 is final, with its answer kept.
	d, attempts, ok, err := o.st.Delivery(context.Background(), "sb-2-1")
	if err != nil || !ok || d.Status != store.Dead || d.Code != 400 || d.Answer != `{"error":"unknown conversation"}` || len(attempts) != 1 {
		t.Errorf("the refused delivery: %+v %+v", d, attempts)
	}
	if n := len(crm.Hits()); n != 1 {
		t.Errorf("a refused delivery was tried %d times", n)
	}
	// Retry-After was honoured: the attempt after the 429 came a second
	// later at least.
	for i := 1; i < len(hits); i++ {
		if hits[i-1].Status == 429 && hits[i].ID == hits[i-1].ID && hits[i].At.Sub(hits[i-1].At) < 900*time.Millisecond {
			t.Errorf("retried %v after a Retry-After of 1s", hits[i].At.Sub(hits[i-1].At))
		}
	}
}

func TestEmail(t *testing.T) {
	smtp, err := deliverytest.NewMailServer()
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()
	smtp.FailNext(true, 1)
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf(`
console_url: https://switchboard.example.com
smtp: {host: 127.0.0.1, port: %d, security: none, from: "Switchboard <switchboard@example.com>"}
`, smtp.Port())), func(string) string { return "" })
	if cfg == nil || ds.HasErrors() {
		t.Fatal(ds)
	}
	o := newOutbox(t, cfg)
	o.decide("c1", engine.Action{Type: engine.ActNotify, Rule: "unanswered 15m", Conversation: "c1", Target: "ana", Via: "email"})
	o.decide("c1", engine.Action{Type: engine.ActNotify, Rule: "no address", Conversation: "c1", Target: "ben", Via: "email"})
	o.decide("c2", engine.Action{Type: engine.ActNotify, Rule: "ops", Conversation: "c2", Address: "ops@example.com", Via: "email", Text: "VIP waiting"})
	o.drain(cfg, 20*time.Second)

	msgs, ana, ops := smtp.Messages(), smtp.To("ana@example.com"), smtp.To("ops@example.com")
	if len(msgs) != 2 || len(ana) != 1 || len(ops) != 1 {
		t.Fatalf("want an email each to ana and ops, got %d", len(msgs))
	}
	m := ana[0]
	if !strings.Contains(m.Header.Get("Subject"), "Kim is waiting for an answer on whatsapp") ||
		!strings.Contains(m.Body, "Bonjour, ma commande ?") || !strings.Contains(m.Body, "https://switchboard.example.com/conversations/c1") ||
		!strings.Contains(m.Body, `the rule "unanswered 15m"`) || m.Header.Get("Message-Id") != "<sb-1-0@switchboard>" {
		t.Errorf("the escalation email:\n%v\n%s", m.Header, m.Body)
	}
	if !strings.Contains(ops[0].Header.Get("Subject"), "VIP waiting") || !strings.Contains(ops[0].Body, "VIP waiting\n") {
		t.Errorf("the email to an address: %v", ops[0].Header)
	}
	// An agent without an address: dead, saying why; the temporary
	// failure was retried.
	d, _, _, _ := o.st.Delivery(context.Background(), "sb-2-0")
	if d.Status != store.Dead || d.Error != "agent ben has no email address in team.yaml" {
		t.Errorf("the email to an agent without an address: %+v", d)
	}
	// One of the two sent took a 451 first (they go out together).
	d1, _, _, _ := o.st.Delivery(context.Background(), "sb-1-0")
	d3, _, _, _ := o.st.Delivery(context.Background(), "sb-3-0")
	if d1.Status != store.Delivered || d3.Status != store.Delivered || d1.Attempts+d3.Attempts != 3 {
		t.Errorf("after a 451: %s %s %d, %s %s %d", d1.ID, d1.Status, d1.Attempts, d3.ID, d3.Status, d3.Attempts)
	}

	// A final refusal is dead at once.
	smtp.FailNext(false, 1)
	o.decide("c3", engine.Action{Type: engine.ActNotify, Rule: "r", Conversation: "c3", Target: "ana", Via: "email"})
	o.drain(cfg, 10*time.Second)
	if d, _, _, _ := o.st.Delivery(context.Background(), "sb-4-0"); d.Status != store.Dead || d.Attempts != 1 || d.Code != 550 {
		t.Errorf("after a 550: %+v", d)
	}
}

// Without any configuration, notifications are recorded dead with the
// reason, and nothing is sent for decisions.
func TestNoConfiguration(t *testing.T) {
	o := newOutbox(t, nil)
	ds := o.decide("c1",
		engine.Action{Type: engine.ActNotify, Rule: "r", Conversation: "c1", Target: "ana", Via: "email"},
		engine.Action{Type: engine.ActNotify, Rule: "r", Conversation: "c1", Endpoint: "crm", Via: "webhook"},
		engine.Action{Type: engine.ActNotify, Rule: "r", Conversation: "c1", Target: "ana", Via: "webhook"})
	var why []string
	for _, d := range ds {
		if d.Status != store.Dead {
			t.Errorf("%s is %s", d.ID, d.Status)
		}
		why = append(why, d.Error)
	}
	want := "no SMTP server configured|no endpoint crm configured|no platform endpoint configured (notify … via webhook goes to the platform)"
	if strings.Join(why, "|") != want {
		t.Errorf("reasons: %q", why)
	}
}
