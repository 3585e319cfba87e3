package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestOffers drives offers through the API: an answer from the agent who
// holds the offer is taken, one from anybody else is a 422 that changes
// nothing, and an offer nobody answers expires on the service's own clock
// and moves on to the next agent, whom GET shows it offered to.
func TestOffers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("team.yaml", team)
	write("r.rules", "on new conversation -> assign group G by fair offer 1s\n")
	_, url, stop := serveDir(t, dir, filepath.Join(t.TempDir(), "sb.db"))
	defer stop()
	post := func(body string) (int, string) {
		code, out, _ := do(t, "POST", url+"/v1/events", "", body)
		return code, strings.TrimSpace(out)
	}
	code, out := post(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`)
	if code != 200 || !strings.Contains(out, `"type":"offer","rule":"r.rules:1","conversation":"e1","agent":"a"`) || !strings.Contains(out, `"expires":"`) {
		t.Fatalf("offer: %d %s", code, out)
	}
	code, out = post(`{"id":"x1","type":"offer.accepted","agent":"b","conversation":"e1"}`)
	if code != 422 || !strings.Contains(out, `conversation \"e1\" is offered to \"a\", not \"b\"`) || !strings.Contains(out, `"field":"agent"`) {
		t.Fatalf("answer from the wrong agent: %d %s", code, out)
	}
	code, out = post(`{"id":"x2","type":"offer.accepted","agent":"a","conversation":"e1"}`)
	if code != 200 || !strings.Contains(out, `"type":"assign"`) || !strings.Contains(out, `"offered":true`) {
		t.Fatalf("accept: %d %s", code, out)
	}
	_, agent, _ := do(t, "GET", url+"/v1/agents/a", "", "")
	if !strings.Contains(agent, `"conversations":["e1"]`) {
		t.Fatalf("after accepting: %s", agent)
	}

	// e2 goes to b (a had the last assignment), who never answers: on the
	// wall clock the offer expires and a is offered it.
	code, out = post(`{"id":"e2","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k2"}}`)
	if code != 200 || !strings.Contains(out, `"agent":"b"`) {
		t.Fatalf("second offer: %d %s", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, conv, _ := do(t, "GET", url+"/v1/conversations/e2", "", "")
		if strings.Contains(conv, `"offered_to":"a"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the offer to b never expired: %s", conv)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, agent, _ = do(t, "GET", url+"/v1/agents/b", "", "")
	if !strings.Contains(agent, `"missed":1`) || !strings.Contains(agent, `"missed_in_a_row":1`) {
		t.Fatalf("b's misses: %s", agent)
	}
	code, out = post(`{"id":"x3","type":"offer.declined","agent":"b","conversation":"e2"}`)
	if code != 422 {
		t.Fatalf("b answers after expiry: %d %s", code, out)
	}
	code, out = post(`{"id":"x4","type":"offer.declined","agent":"a","conversation":"e2"}`)
	if code != 200 || !strings.Contains(out, `"type":"queued"`) {
		t.Fatalf("a declines, nobody left: %d %s", code, out)
	}
	_, agent, _ = do(t, "GET", url+"/v1/agents/a", "", "")
	if !strings.Contains(agent, `"declined":1`) {
		t.Fatalf("a's declines: %s", agent)
	}
}

// TestAnswerAfterUnanswered: an answer that comes after an unanswered rule
// moved the offer on is checked against the offer as it stands then,
// whether the service's clock fired the rule already or the answer finds
// it due: a's accept is refused (422, nothing changes), the rule's tick is
// stored as an event of its own, and b, who holds the offer now, takes it.
// simulate decides the same (engine scenario offers_due).
func TestAnswerAfterUnanswered(t *testing.T) {
	c := clocked(t, "on new conversation -> assign user a offer 60s\non unanswered 30s -> reassign user b offer 60s\n", team)
	ctx, st := context.Background(), c.st
	post := func(body string) (int, string) {
		code, out, _ := do(t, "POST", c.url+"/v1/events", "", body)
		return code, strings.TrimSpace(out)
	}
	if code, out := post(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`); code != 200 || !strings.Contains(out, `"agent":"a"`) {
		t.Fatalf("offer to a: %d %s", code, out)
	}
	c.advance(40 * time.Second) // the unanswered rule is due; a's offer has not run out
	code, out := post(`{"id":"x1","type":"offer.accepted","agent":"a","conversation":"e1"}`)
	if code != 422 || !strings.Contains(out, `conversation \"e1\" is offered to \"b\", not \"a\"`) {
		t.Fatalf("a's late accept: %d %s", code, out)
	}
	if _, ok, _ := st.Get(ctx, "x1"); ok {
		t.Fatal("the refused answer was stored")
	}
	var ticks int
	st.Replay(ctx, 0, 0, func(r store.Record) error {
		if r.Type == triggers.TypeTick && strings.Contains(string(r.Decision), `"agent":"b"`) {
			ticks++
		}
		return nil
	})
	if ticks != 1 {
		t.Fatalf("%d ticks offer e1 to b, want 1", ticks)
	}
	if code, out := post(`{"id":"x2","type":"offer.accepted","agent":"b","conversation":"e1"}`); code != 200 || !strings.Contains(out, `"type":"assign"`) {
		t.Fatalf("b's accept: %d %s", code, out)
	}
}
