package engine_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
)

// A restored engine lists an agent's per-channel budgets in one order,
// whatever the order its conversations are met in.
func TestBudgetOrderAfterRestore(t *testing.T) {
	sc := loadScenario(t, filepath.Join(scenarios, "budget_order.txtar"))
	eng := engine.New(sc.rs, engine.Options{})
	step(sc.events, eng, same)
	data, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 50 {
		back, err := engine.Restore(sc.rs, data)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(back.Agents()[0].Channels)
		seen[string(b)] = true
	}
	live, _ := json.Marshal(eng.Agents()[0].Channels)
	if len(seen) > 1 {
		t.Errorf("restores disagree on the channels' order (live %s):\n%v", live, seen)
	}
}

func buildRules(t *testing.T, team, rules string) *dsl.RuleSet {
	t.Helper()
	rs, ds := dsl.Build(dsl.Sources{Team: &dsl.Source{Name: dsl.TeamFile, Text: []byte(team)},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte(rules)}}})
	if rs == nil {
		t.Fatalf("%v", ds)
	}
	return rs
}

func msgAt(id, at, ch string) string {
	return `{"id": "` + id + `", "type": "message.received", "at": "2026-01-05T` + at + `Z", "channel": "` + ch + `", "to": "+1", "contact": {"id": "k` + id + `"}, "message": {"id": "m` + id + `", "text": "hello"}}`
}

// Raising a limit across a reload counts the assignments made before it.
func TestReloadRaisesLimit(t *testing.T) {
	team := "agents:\n  - {id: a, status: online}\ngroups:\n  F: [a]\n"
	v1 := buildRules(t, team, "on new conversation where channel == 'sms' -> assign user a\non new conversation -> assign group F by round_robin limit 2 per 1h\n")
	v2 := buildRules(t, team, "on new conversation where channel == 'sms' -> assign user a\non new conversation -> assign group F by round_robin limit 3 per 1h\n")
	events := msgAt("e1", "09:00:00", "chat") + "\n" + msgAt("e2", "09:01:00", "chat") + "\n" + msgAt("e3", "09:02:00", "sms") + "\n" + msgAt("e4", "09:03:00", "chat") + "\n"
	plain := step([]byte(events), engine.New(v2, engine.Options{}), same) // v2 all along
	reloaded := step([]byte(events), engine.New(v1, engine.Options{}), func(line int, eng *engine.Engine) *engine.Engine {
		if line == 3 {
			n, _ := eng.Reload(v2)
			return n
		}
		return eng
	})
	t.Logf("v2 all along:\n%s\nreloaded v1->v2 after e3:\n%s", plain, reloaded)
	if !bytes.Contains(reloaded, []byte(`"event":"e4","conversation":"e4","actions":[{"type":"queued"`)) {
		t.Error("e4: a had 3 assignments within the hour under limit 3 per 1h, yet was assigned")
	}
}

// Waiting work keeps its limit across a reload to rules without one, and
// the assignment times that limit counts.
func TestReloadKeepsHistoryForWaitingWork(t *testing.T) {
	team := "agents:\n  - {id: a, status: online}\ngroups:\n  F: [a]\n"
	v1 := buildRules(t, team, "on new conversation -> assign group F by round_robin limit 1 per 1h\n")
	v2 := buildRules(t, team, "on new conversation where channel == 'never' -> assign group F by round_robin\n")
	events := msgAt("e1", "09:00:00", "chat") + "\n" + msgAt("e2", "09:01:00", "chat") + "\n" +
		`{"id": "x1", "type": "conversation.closed", "at": "2026-01-05T09:10:00Z", "conversation": "e1"}` + "\n"
	plain := step([]byte(events), engine.New(v1, engine.Options{}), same)
	reloaded := step([]byte(events), engine.New(v1, engine.Options{}), func(line int, eng *engine.Engine) *engine.Engine {
		if line == 2 {
			n, _ := eng.Reload(v2)
			return n
		}
		return eng
	})
	t.Logf("plain:\n%s\nreloaded after e2:\n%s", plain, reloaded)
	if bytes.Contains(reloaded, []byte(`"conversation":"e2","agent":"a"`)) {
		t.Error("x1 at 09:10: e2 (queued under limit 1 per 1h) placed with a, whose 09:00 assignment is still in the window")
	}
}

// TestOfferExpiresWritable: an offer made near the end of what RFC 3339
// can write expires at its last instant, not in a year of five digits.
func TestOfferExpiresWritable(t *testing.T) {
	rs := buildRules(t, "agents:\n  - {id: a, status: online}\ngroups:\n  S: [a]\n", "on new conversation -> assign group S offer 3650d\n")
	out := step([]byte(`{"id":"e1","type":"message.received","at":"9999-12-31T23:00:00Z","channel":"sms","to":"+1","contact":{"id":"k1"}}`+"\n"),
		engine.New(rs, engine.Options{}), same)
	if !bytes.Contains(out, []byte(`"expires":"9999-12-31T23:59:59.999999999Z"`)) {
		t.Errorf("an offer at the end of year 9999: %s", out)
	}
}
