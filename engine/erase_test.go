package engine_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestEraseContact: erasing a contact takes its personal data out of the
// engine (later decisions, traces, views and snapshots), and leaves where
// its conversations are and what will happen to them.
func TestEraseContact(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Team: &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: ana, status: online, capacity: 1}\n  - {id: ben, status: online}\ngroups:\n  Support: [ana]\n")},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte(`
on incoming message -> set contact.attrs.said = message.text; tag seen
on new conversation -> assign group Support
on unanswered 5m -> notify owner via email with "{{contact.name}} ({{contact.email}}, {{contact.phone}}) wrote {{message.text}}, plan {{contact.attrs.plan}}"
`)}},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	personal := []string{"Zelda Quux", "zelda@example.com", "+15550199", "123-45-6789", "my secret text", "m-zelda"}
	events := []string{
		`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","channel":"sms","to":"+15550100","contact":{"id":"k1","name":"Anne"},"message":{"text":"hi"}}`,
		`{"id":"e2","type":"message.received","at":"2026-01-05T09:01:00Z","channel":"sms","to":"+15550100","contact":{"id":"k2","name":"Zelda Quux","email":"zelda@example.com","phone":"+15550199","lang":"fr","country":"FR","owner":"ben","tags":["vip"],"attrs":{"plan":"pro","ids":{"ssn":"123-45-6789"}}},"message":{"id":"m-zelda","text":"my secret text","lang":"fr"}}`,
	}
	eng := engine.New(rs, engine.Options{})
	for _, line := range events {
		ev, err := triggers.DecodeEvent([]byte(line), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Decide(ev); err != nil {
			t.Fatal(err)
		}
	}
	before, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range personal {
		if !bytes.Contains(before, []byte(s)) {
			t.Fatalf("the snapshot before erasing lacks %q: the test proves nothing", s)
		}
	}
	waits := views(eng)

	if eng.EraseContact("nobody") {
		t.Error("erased an unknown contact")
	}
	if !eng.EraseContact("k2") {
		t.Fatal("did not erase k2")
	}
	after, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range personal {
		if bytes.Contains(after, []byte(s)) {
			t.Errorf("the snapshot after erasing holds %q", s)
		}
	}
	for _, s := range []string{"Anne", "vip", "seen", "ben", "fr", "FR"} {
		if !bytes.Contains(after, []byte(s)) {
			t.Errorf("the snapshot after erasing lost %q, which is not k2's personal data", s)
		}
	}
	if got := views(eng); got != waits {
		t.Errorf("erasing changed the state the views show:\n%s\nwas\n%s", got, waits)
	}
	conv, ok := eng.Conversation("e2")
	if !ok || conv.Contact != "k2" || !strings.Contains(strings.Join(conv.Tags, ","), "seen") || conv.WaitsFor != "in Support" {
		t.Errorf("k2's conversation after erasing: %+v, %v", conv, ok)
	}

	// The unanswered timer still fires, on an erased contact; its trace
	// and its decision hold nothing erased.
	back, err := engine.Restore(rs, after)
	if err != nil {
		t.Fatal(err)
	}
	for _, eng := range []*engine.Engine{eng, back} {
		tick, _ := triggers.DecodeEvent([]byte(`{"id":"e3","type":"tick","at":"2026-01-05T09:07:00Z"}`), true)
		d, trace, err := eng.Explain(tick)
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		trace.WriteText(&text)
		out, _ := json.Marshal(trace)
		decision := string(d.AppendJSON(nil))
		if want := `"conversation":"e2","target":"ben","via":"email","text":" (, ) wrote , plan "}`; !strings.Contains(decision, want) {
			t.Errorf("decision after erasing: %s\nwant the notify %s", decision, want)
		}
		for _, s := range personal {
			if strings.Contains(text.String(), s) || bytes.Contains(out, []byte(s)) || strings.Contains(decision, s) {
				t.Errorf("the trace after erasing holds %q:\n%s", s, text.String())
			}
		}
	}
}
