package engine_test

import (
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestNextDueSkipsDeadTimers: a timer whose conversation was answered or
// closed is not due: a service does not wake for it.
func TestNextDueSkipsDeadTimers(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: ana, status: online}\n")},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte("on unanswered 5m -> tag late\non unanswered 10m -> tag later\n")}},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	eng := engine.New(rs, engine.Options{})
	decide := func(line string) {
		t.Helper()
		ev, err := triggers.DecodeEvent([]byte(line), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Decide(ev); err != nil {
			t.Fatal(err)
		}
	}
	due := func(want string) {
		t.Helper()
		got := "none"
		if at, ok := eng.NextDue(); ok {
			got = at.UTC().Format(time.TimeOnly)
		}
		if got != want {
			t.Errorf("next due %s, want %s", got, want)
		}
	}
	due("none")
	decide(`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","channel":"sms","to":"x","contact":{"id":"k1"}}`)
	decide(`{"id":"e2","type":"message.received","at":"2026-01-05T09:01:00Z","channel":"sms","to":"x","contact":{"id":"k2"}}`)
	due("09:05:00")
	decide(`{"id":"e3","type":"message.sent","at":"2026-01-05T09:02:00Z","agent":"ana","conversation":"e1"}`)
	due("09:06:00")
	decide(`{"id":"e4","type":"conversation.closed","at":"2026-01-05T09:03:00Z","conversation":"e2"}`)
	due("none")
	decide(`{"id":"e5","type":"message.received","at":"2026-01-05T09:04:00Z","channel":"sms","to":"x","contact":{"id":"k1"}}`)
	due("09:09:00")
}
