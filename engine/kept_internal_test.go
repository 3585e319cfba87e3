package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/triggers"
)

// keptCount counts the closed conversations kept for reopening.
func keptCount(e *Engine) int {
	n := 0
	for _, chunk := range e.contacts.chunks {
		for i := range chunk {
			for v := chunk[i].closed; v != nil; v = v.nextOpen {
				n++
			}
		}
	}
	return n
}

// TestKeptSwept: a closed conversation is kept for reopening only while
// reopen_within lasts, whether or not its contact comes back, so that a
// log of contacts who never return leaves only the contacts in memory; a
// restored engine keeps and lets go the same ones.
func TestKeptSwept(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Rules: []dsl.Source{{Name: "r.rules", Text: []byte("on new conversation -> assign group G by least_active\n")}},
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: a, status: online}\ngroups:\n  G: [a]\nreopen_within: 1h\n")},
	})
	if ds.HasErrors() {
		t.Fatal(ds)
	}
	eng := New(rs, Options{})
	start := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	decide := func(e *Engine, line string) {
		t.Helper()
		ev, err := triggers.DecodeEvent([]byte(line), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Decide(ev); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) string { return start.Add(d).Format(time.RFC3339) }
	// A contact every 10 s, whose conversation closes at once: 3 hours.
	const n = 1080
	for i := range n {
		d := time.Duration(i) * 10 * time.Second
		decide(eng, fmt.Sprintf(`{"id":"m%d","type":"message.received","at":%q,"channel":"sms","to":"x","contact":{"id":"k%d"}}`, i, at(d), i))
		decide(eng, fmt.Sprintf(`{"id":"c%d","type":"conversation.closed","at":%q,"conversation":"m%d"}`, i, at(d), i))
	}
	// Those closed in the last hour are kept; the others are let go, and
	// their conversations reused.
	if got := keptCount(eng); got != 361 {
		t.Fatalf("%d closed conversations kept, want 361 (the last hour's)", got)
	}
	if len(eng.kept)-eng.keptHead != 361 {
		t.Fatalf("%d listed as kept, want 361", len(eng.kept)-eng.keptHead)
	}
	data, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Restore(rs, data)
	if err != nil {
		t.Fatal(err)
	}
	// (A reload carries what is kept, and when it goes.)
	eng, _ = eng.Reload(rs)
	// The last contact comes back within the hour: reopened, on both.
	last := time.Duration(n-1) * 10 * time.Second
	for _, e := range []*Engine{eng, back} {
		decide(e, fmt.Sprintf(`{"id":"again","type":"message.received","at":%q,"channel":"sms","to":"x","contact":{"id":"k%d"}}`, at(last+30*time.Minute), n-1))
		if c := e.convs[fmt.Sprint("m", n-1)]; c == nil {
			t.Fatal("the last conversation was not reopened")
		}
		// An hour after the last close, nothing is kept.
		decide(e, fmt.Sprintf(`{"id":"tick","type":"tick","at":%q}`, at(last+time.Hour+time.Second)))
		if got := keptCount(e); got != 0 {
			t.Fatalf("%d closed conversations kept past reopen_within", got)
		}
	}
	a, _ := eng.Snapshot()
	b, _ := back.Snapshot()
	if string(a) != string(b) {
		t.Fatal("the restored engine's snapshot differs after the same events")
	}
}
