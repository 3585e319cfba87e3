package service

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/store"
)

// TestDeliveries: decisions reach the platform and the stream, timers and
// waiting lines included; notifications reach their endpoint and their
// agent's mailbox; a refused delivery can be retried.
func TestDeliveries(t *testing.T) {
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	platform, _ := deliverytest.NewReceiver(whsec)
	defer platform.Close()
	crm, _ := deliverytest.NewReceiver(whsec)
	defer crm.Close()
	crm.Then(deliverytest.Reply{Status: 400, Body: "no such account"})
	smtp, err := deliverytest.NewMailServer()
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf(`
platform: {url: %s, secret_env: S}
endpoints: {crm: {url: %s, secret_env: S}}
smtp: {host: 127.0.0.1, port: %d, security: none, from: switchboard@example.com}
`, platform.URL, crm.URL, smtp.Port())), func(string) string { return whsec })
	if cfg == nil {
		t.Fatal(ds)
	}
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "r.rules", Text: []byte(`rule "vip"
on new conversation where 'vip' in contact.tags -> notify webhook crm with "VIP {{contact.name}}"
rule "route"
on new conversation -> assign group G
rule "escalate"
on unanswered 1s -> notify agent via email`)}},
		Team:      &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: a, email: a@example.com, capacity: 1, status: online}\n  - {id: b, capacity: 1, status: offline}\ngroups:\n  G: [a, b]\n")},
		Endpoints: cfg.EndpointNames(),
	})
	if rs == nil {
		t.Fatal(ds)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sb.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc, err := New(context.Background(), Config{Rules: rs, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Delivery: cfg,
		DeliveryOptions: delivery.Options{RetryBase: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	// A stream from the start of the log.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/decisions/stream", nil)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	streamed := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				streamed <- data
			}
		}
		close(streamed)
	}()

	// The platform is down for a while: the service stays ready.
	platform.Then(deliverytest.Reply{Status: 503}, deliverytest.Reply{Status: 503})
	do(t, "POST", srv.URL+"/v1/events", "", `{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1","name":"Kim","tags":["vip"]},"message":{"text":"where is my order?"}}`)
	waitFor(t, "a failed attempt at the platform", func() bool { return len(platform.Hits()) > 0 })
	if code, body, _ := do(t, "GET", srv.URL+"/readyz", "", ""); code != 200 {
		t.Errorf("/readyz with the platform down: %d %s", code, body)
	}
	do(t, "POST", srv.URL+"/v1/events", "", `{"id":"e2","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k2","name":"Lee"}}`)
	// e1 escalates by the wall clock, with no request in flight.
	waitFor(t, "the escalation email", func() bool { return len(smtp.To("a@example.com")) == 1 })
	m := smtp.To("a@example.com")[0]
	if !strings.Contains(m.Body, "where is my order?") || !strings.Contains(m.Body, `the rule "escalate"`) {
		t.Errorf("the escalation email:\n%s", m.Body)
	}
	// b comes online and takes e2 from the waiting line: the platform and
	// the stream learn who has it.
	do(t, "PUT", srv.URL+"/v1/agents/b/status", "", `{"status":"online"}`)
	waitFor(t, "the from-queue assignment at the platform", func() bool {
		for _, h := range platform.Accepted() {
			if strings.Contains(string(h.Body), `"from_queue":true`) && h.Verified {
				return true
			}
		}
		return false
	})
	var got []string
	for len(got) == 0 || !strings.Contains(got[len(got)-1], `"from_queue":true`) {
		select {
		case d := <-streamed:
			got = append(got, d)
		case <-time.After(5 * time.Second):
			t.Fatalf("the stream gave %d decisions:\n%s", len(got), strings.Join(got, "\n"))
		}
	}
	// In log order: e1, e2, the escalation's tick, then (a tick for e2,
	// if its timer came first, and) the status change that placed e2.
	if len(got) < 4 || !strings.Contains(got[0], `"event":"e1"`) || !strings.Contains(got[1], `"event":"e2"`) ||
		!strings.Contains(got[2], `"type":"tick"`) || !strings.Contains(got[2], `"rule":"escalate"`) {
		t.Errorf("the stream:\n%s", strings.Join(got, "\n"))
	}
	// The cursor gives the same decisions.
	_, page, _ := do(t, "GET", srv.URL+"/v1/decisions?after=1&limit=2", "", "")
	if !strings.Contains(page, `"event":"e2"`) || !strings.Contains(page, `"type":"tick"`) || !strings.Contains(page, `"next":3`) {
		t.Errorf("the cursor: %s", page)
	}
	// The newest decisions, as the console lists them: the log's last.
	// (Timers may have fired since: the log is at least as long as what
	// was streamed.)
	_, newest, _ := do(t, "GET", srv.URL+"/v1/decisions?last=2", "", "")
	var last struct {
		Decisions []struct{ Seq int64 }
		Next      int64
	}
	json.Unmarshal([]byte(newest), &last)
	if strings.Contains(newest, `"event":"e1"`) || len(last.Decisions) != 2 || last.Next < int64(len(got)) ||
		last.Decisions[0].Seq != last.Next-1 || last.Decisions[1].Seq != last.Next {
		t.Errorf("the last 2 of %d or more: %s", len(got), newest)
	}
	if code, body, _ := do(t, "GET", srv.URL+"/v1/decisions?last=2&after=1", "", ""); code != 400 || !strings.Contains(body, "without after") {
		t.Errorf("last with after: %d %s", code, body)
	}
	// The CRM refused the VIP notice: dead, with its answer; once fixed,
	// a retry delivers it under the same id.
	waitFor(t, "the refused delivery", func() bool {
		_, body, _ := do(t, "GET", srv.URL+"/v1/deliveries?status=dead", "", "")
		return strings.Contains(body, `"destination":"webhook:crm"`)
	})
	_, body, _ := do(t, "GET", srv.URL+"/v1/deliveries/sb-1-1", "", "")
	if !strings.Contains(body, `"status":"dead"`) || !strings.Contains(body, `"answer":"no such account"`) || !strings.Contains(body, `"code":400`) || !strings.Contains(body, `VIP Kim`) {
		t.Errorf("the dead delivery: %s", body)
	}
	// (The dispatcher, woken by the retry, may deliver it before the
	// answer is read: failed, due now, or delivered already.)
	if code, body, _ := do(t, "POST", srv.URL+"/v1/deliveries/sb-1-1/retry", "", ""); code != 200 || !strings.Contains(body, `"status":"failed"`) && !strings.Contains(body, `"status":"delivered"`) {
		t.Errorf("retry: %d %s", code, body)
	}
	waitFor(t, "the retried delivery", func() bool {
		_, body, _ := do(t, "GET", srv.URL+"/v1/deliveries/sb-1-1", "", "")
		return strings.Contains(body, `"status":"delivered"`)
	})
	if hits := crm.Hits(); hits[0].ID != hits[1].ID || !hits[1].Verified {
		t.Errorf("the retry is not the same delivery: %+v", hits)
	}
	if code, _, _ := do(t, "POST", srv.URL+"/v1/deliveries/sb-1-1/retry", "", ""); code != 409 {
		t.Errorf("a delivered delivery retried: %d", code)
	}
	// Paging goes through a record's deliveries one by one if need be.
	var ids []string
	for after := "0"; after != ""; {
		_, body, _ := do(t, "GET", srv.URL+"/v1/deliveries?limit=1&after="+after, "", "")
		var page struct {
			Deliveries []struct{ ID string }
			Next       string
		}
		json.Unmarshal([]byte(body), &page)
		for _, d := range page.Deliveries {
			ids = append(ids, d.ID)
		}
		after = page.Next
		if len(ids) > 50 {
			t.Fatal("paging does not end")
		}
	}
	// The outbox lists the platform's decisions that needed it: e1's and
	// e2's, which failed first, and those that waited behind them.
	if len(ids) < 4 || ids[0] != "sb-1-0" || ids[1] != "sb-1-1" || ids[2] != "sb-2-0" {
		t.Errorf("paged through %v", ids)
	}
	// With the platform well again, a decision goes straight from the log,
	// and still shows as a delivery, delivered, with what it carried.
	do(t, "POST", srv.URL+"/v1/events", "", `{"id":"e3","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k3","name":"Max"}}`)
	var e3 struct{ Seq int64 }
	_, body, _ = do(t, "GET", srv.URL+"/v1/decisions?limit=1000", "", "")
	var decisions struct {
		Decisions []struct {
			Seq   int64
			Event string
		}
	}
	json.Unmarshal([]byte(body), &decisions)
	for _, d := range decisions.Decisions {
		if d.Event == "e3" {
			e3.Seq = d.Seq
		}
	}
	id3 := fmt.Sprintf("sb-%d-0", e3.Seq)
	waitFor(t, "the feed's cursor past e3", func() bool {
		_, body, _ := do(t, "GET", srv.URL+"/v1/deliveries?status=failed", "", "")
		var page struct {
			Through int64 `json:"platform_through"`
		}
		json.Unmarshal([]byte(body), &page)
		return page.Through >= e3.Seq
	})
	if _, body, _ := do(t, "GET", srv.URL+"/v1/deliveries?after="+strconv.FormatInt(e3.Seq-1, 10), "", ""); strings.Contains(body, id3) {
		t.Errorf("e3's decision, taken at once, has an outbox row: %s", body)
	}
	if _, body, _ := do(t, "GET", srv.URL+"/v1/deliveries/"+id3, "", ""); !strings.Contains(body, `"status":"delivered"`) ||
		!strings.Contains(body, `"event":"e3"`) || !strings.Contains(body, `"kind":"decision"`) {
		t.Errorf("a decision the platform took at once: %s", body)
	}
	if code, _, _ := do(t, "POST", srv.URL+"/v1/deliveries/"+id3+"/retry", "", ""); code != 409 {
		t.Errorf("a delivered decision retried: %d", code)
	}
	if code, _, _ := do(t, "GET", srv.URL+"/v1/deliveries/sb-3-5", "", ""); code != 404 {
		t.Errorf("a delivery that is not: %d", code)
	}
	if code, _, _ := do(t, "GET", srv.URL+"/v1/deliveries?status=lost", "", ""); code != 400 {
		t.Errorf("an unknown status: %d", code)
	}
	_, metrics, _ := do(t, "GET", srv.URL+"/metrics", "", "")
	if !strings.Contains(metrics, `switchboard_deliveries_total{destination="platform",outcome="delivered"}`) {
		t.Errorf("no delivery metrics")
	}
}

// TestSeedEmails: the seeds' emails reach a real SMTP server: HubSpot's
// email to an offline owner and its offline fallback user, and the
// segments automation's "notify agent email".
func TestSeedEmails(t *testing.T) {
	smtp, err := deliverytest.NewMailServer()
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf(
		"smtp: {host: 127.0.0.1, port: %d, security: none, from: switchboard@example.com}\n", smtp.Port())), nil)
	if cfg == nil {
		t.Fatal(ds)
	}
	run := func(dir string) (url string, stop func()) {
		rs, ds := dsl.Load(filepath.Join("..", "rules", "examples", dir))
		if rs == nil {
			t.Fatal(ds)
		}
		st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "sb.db"))
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(context.Background(), Config{Rules: rs, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Delivery: cfg})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { svc.Run(ctx); close(done) }()
		srv := httptest.NewServer(svc.Handler())
		return srv.URL, func() { srv.Close(); cancel(); <-done; st.Close() }
	}
	mailTo := func(addr, text string) {
		t.Helper()
		waitFor(t, "an email to "+addr, func() bool {
			for _, m := range smtp.To(addr) {
				if strings.Contains(m.Body, text) {
					return true
				}
			}
			return false
		})
	}

	url, stop := run("hubspot")
	// Rotate to owner: the owner is offline, so the message is emailed.
	do(t, "POST", url+"/v1/events", "", `{"id":"h1","type":"message.received","channel":"webchat","to":"site","contact":{"id":"v1","name":"Vic","owner":"fay"},"message":{"text":"Is my quote ready?"}}`)
	mailTo("fay@example.com", "Vic wrote: Is my quote ready?")
	// Nobody of Sales online: the offline fallback user gets it.
	do(t, "PUT", url+"/v1/agents/dana/status", "", `{"status":"offline"}`)
	do(t, "PUT", url+"/v1/agents/eli/status", "", `{"status":"offline"}`)
	do(t, "POST", url+"/v1/events", "", `{"id":"h2","type":"message.received","channel":"webchat","to":"site","contact":{"id":"v2","email":"wes@example.org"},"message":{"text":"Do you ship to Canada?"}}`)
	mailTo("dana@example.com", "Offline message from wes@example.org: Do you ship to Canada?")
	stop()

	url, stop = run("segments")
	defer stop()
	_, body, _ := do(t, "POST", url+"/v1/events", "", `{"id":"s1","type":"message.received","channel":"whatsapp","to":"+1","contact":{"id":"k1","name":"Zoé","lang":"fr"},"message":{"text":"Bonjour","lang":"fr"}}`)
	var d struct {
		Actions []struct{ Type, Agent, Target string }
	}
	json.Unmarshal([]byte(body), &d)
	var told string
	for _, a := range d.Actions {
		if a.Type == "notify" {
			told = a.Target
		}
	}
	if told == "" {
		t.Fatalf("the segments rule notified nobody: %s", body)
	}
	mailTo(told+"@example.com", "Bonjour")
}
