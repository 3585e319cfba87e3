package engine_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestReloadKeepsState: reloading the same rules after every event changes
// no decision, in every scenario.
func TestReloadKeepsState(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			sc := loadScenario(t, path)
			var want, got bytes.Buffer
			plain := engine.New(sc.rs, engine.Options{Seed: sc.seed})
			plain.Replay(bytes.NewReader(sc.events), "events", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
				want.Write(d.AppendJSON(nil))
				want.WriteByte('\n')
				return true
			})
			eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
			eng2 := eng
			// Replay event by event through whichever engine is current,
			// skipping repeated ids as one replay would.
			seen := map[string]bool{}
			for _, line := range bytes.Split(sc.events, []byte("\n")) {
				if len(bytes.TrimSpace(line)) == 0 {
					continue
				}
				if ev, err := triggers.DecodeEvent(line, true); err == nil {
					if seen[ev.ID] {
						continue
					}
					seen[ev.ID] = true
				}
				eng2.Replay(bytes.NewReader(line), "events", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
					got.Write(d.AppendJSON(nil))
					got.WriteByte('\n')
					return true
				})
				eng2, _ = eng2.Reload(sc.rs)
			}
			if want.String() != got.String() {
				t.Errorf("decisions differ after reloads:\nwant:\n%s\ngot:\n%s", want.String(), got.String())
			}
		})
	}
}

// TestReloadLetsGo: a reload that removes agents and groups lets their
// work go and says so, one action per conversation in id order; the
// conversations wait nowhere, remember who had them, and take no capacity.
func TestReloadLetsGo(t *testing.T) {
	const rules = "on new conversation where channel == 'sms' -> assign group B by round_robin\n" +
		"on new conversation where channel == 'voice' -> assign group V by round_robin offer 30s\n" +
		"on new conversation where channel == 'chat' -> assign group T by round_robin\n" +
		"on new conversation where channel == 'web' -> assign user c\n" +
		"on new conversation where channel == 'email' -> assign group S by round_robin\n"
	v1 := buildRules(t, "agents:\n  - {id: a, status: online}\n  - {id: b, status: online}\n  - {id: c, status: offline}\n"+
		"groups:\n  S: [a]\n  B: [b]\n  V: [b]\n  T: [c]\n", rules)
	v2 := buildRules(t, "agents:\n  - {id: a, status: online}\ngroups:\n  S: [a]\n  V: [a]\n",
		strings.NewReplacer("assign group B", "assign group S", "assign group T", "assign group S", "assign user c", "assign user a").Replace(rules))
	events := msgAt("e4", "09:00:00", "web") + "\n" + msgAt("e1", "09:01:00", "sms") + "\n" + msgAt("e3", "09:02:00", "chat") + "\n" +
		msgAt("e2", "09:03:50", "voice") + "\n" + msgAt("e5", "09:04:00", "email") + "\n"
	eng := engine.New(v1, engine.Options{})
	t.Logf("before:\n%s", step([]byte(events), eng, same))
	eng, letGo := eng.Reload(v2)
	var got []string
	for _, a := range letGo {
		d := engine.Decision{Actions: []engine.Action{a}}
		got = append(got, string(d.AppendJSON(nil)))
	}
	want := []string{
		`{"event":"","conversation":null,"actions":[{"type":"unassign","rule":"","conversation":"e1","agent":"b"}]}`,
		`{"event":"","conversation":null,"actions":[{"type":"unassign","rule":"","conversation":"e2","agent":"b"}]}`,
		`{"event":"","conversation":null,"actions":[{"type":"cancel","rule":"","conversation":"e3","group":"T"}]}`,
		`{"event":"","conversation":null,"actions":[{"type":"cancel","rule":"","conversation":"e4","agent":"c"}]}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("let go:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		v, ok := eng.Conversation(id)
		if !ok || v.Agent != "" || v.WaitsFor != "" || v.OfferedTo != "" {
			t.Errorf("%s after the reload: %+v; want open and placed nowhere", id, v)
		}
	}
	if v, _ := eng.Conversation("e1"); v.PreviousAgent != "b" {
		t.Errorf("e1's previous agent is %q; want b, who had it", v.PreviousAgent)
	}
	if v, _ := eng.Conversation("e5"); v.Agent != "a" {
		t.Errorf("e5 (a's, who stays) is with %q after the reload", v.Agent)
	}
	if len(eng.Queues(time.Time{})) != 0 {
		t.Errorf("lines after the reload: %+v; want none", eng.Queues(time.Time{}))
	}
	// Nothing of what was let go lingers: a's conversation still counts,
	// and the group the work came from is forgotten.
	more := `{"id": "x1", "type": "message.received", "at": "2026-01-05T09:10:00Z", "channel": "sms", "to": "+1", "contact": {"id": "ke1"}, "conversation": "e1", "message": {"id": "mx1", "text": "hi"}}`
	rs := buildRules(t, "agents:\n  - {id: a, status: online}\ngroups:\n  S: [a]\n",
		"on incoming message where conversation.assignee_group == '' and conversation.assignee == '' -> assign previous_agent else tag orphan\n")
	eng, _ = eng.Reload(rs)
	out := step([]byte(more), eng, same)
	if !bytes.Contains(out, []byte(`"type":"tag"`)) {
		t.Errorf("a message on e1 after the reload: %s; want it seen as unassigned, in no group", out)
	}
}
