package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sebdah/goldie/v2"
	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
	"golang.org/x/tools/txtar"
)

const scenarios = "../testdata/engine"

// scenario is a txtar archive: team.yaml, *.rules, events.jsonl, and
// optionally seed and explain (event ids whose traces are pinned too).
type scenario struct {
	rs      *dsl.RuleSet
	src     dsl.Sources
	events  []byte
	seed    uint64
	explain []string
}

func loadScenario(t testing.TB, path string) scenario {
	t.Helper()
	ar, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sc scenario
	var rules []dsl.Source
	var team, mappings *dsl.Source
	for _, f := range ar.Files {
		switch {
		case f.Name == dsl.TeamFile:
			team = &dsl.Source{Name: f.Name, Text: f.Data}
		case f.Name == dsl.MappingsCSV || f.Name == dsl.MappingsYAML:
			mappings = &dsl.Source{Name: f.Name, Text: f.Data}
		case strings.HasSuffix(f.Name, ".rules"):
			rules = append(rules, dsl.Source{Name: f.Name, Text: f.Data})
		case f.Name == "events.jsonl":
			sc.events = f.Data
		case f.Name == "seed":
			sc.seed, err = strconv.ParseUint(strings.TrimSpace(string(f.Data)), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
		case f.Name == "explain":
			sc.explain = strings.Fields(string(f.Data))
		}
	}
	sc.src = dsl.Sources{Rules: rules, Team: team, Mappings: mappings}
	rs, ds := dsl.Build(sc.src)
	if rs == nil {
		t.Fatalf("rules do not compile:\n%v", ds)
	}
	sc.rs = rs
	return sc
}

// run replays the events and renders the decisions, bad lines and traces.
func (sc scenario) run() []byte {
	var out bytes.Buffer
	eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
	errs := eng.Replay(bytes.NewReader(sc.events), "events.jsonl", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
		out.Write(d.AppendJSON(nil))
		out.WriteByte('\n')
		return true
	})
	for _, err := range errs {
		out.WriteString("error: " + err.Error() + "\n")
	}
	for _, id := range sc.explain {
		eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
		var trace *engine.Trace
		eng.ReplayUntil(bytes.NewReader(sc.events), "events.jsonl", id, func(ev *triggers.Event) {
			_, trace, _ = eng.Explain(ev)
		})
		out.WriteString("\n")
		if trace == nil {
			out.WriteString("explain " + id + ": no such event\n")
			continue
		}
		trace.WriteText(&out)
	}
	return out.Bytes()
}

// TestScenarios pins the decisions of every scenario. A scenario runs
// twice: the same events and seed must give the same bytes.
func TestScenarios(t *testing.T) {
	g := goldie.New(t, goldie.WithFixtureDir(filepath.Join(scenarios, "golden")))
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	if len(paths) == 0 {
		t.Fatal("no scenarios")
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".txtar")
		t.Run(name, func(t *testing.T) {
			sc := loadScenario(t, path)
			first := sc.run()
			if second := sc.run(); !bytes.Equal(first, second) {
				t.Fatal("two runs of the same events differ")
			}
			g.Assert(t, name, first)
		})
	}
}

// TestScenariosFewViews: with the views of one unlisted channel kept at a
// time (a client sending many channel names), views are let go and built
// again between and within events, and every scenario decides as its
// golden file says.
func TestScenariosFewViews(t *testing.T) {
	defer func(n int) { actions.MaxOtherChannels = n }(actions.MaxOtherChannels)
	actions.MaxOtherChannels = 1
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".txtar")
		want, err := os.ReadFile(filepath.Join(scenarios, "golden", name+".golden"))
		if err != nil {
			t.Fatal(err)
		}
		if got := loadScenario(t, path).run(); !bytes.Equal(got, want) {
			t.Errorf("%s decides otherwise with few views kept", name)
		}
	}
}

// step decides a stream's events one line at a time, as Replay does (bad
// lines and repeated ids are reported and skipped), and renders every
// decision and error. After each line next returns the engine to go on
// with.
func step(events []byte, eng *engine.Engine, next func(line int, eng *engine.Engine) *engine.Engine) []byte {
	var out bytes.Buffer
	seen := map[string]bool{}
	for i, line := range bytes.Split(events, []byte("\n")) {
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		ev, err := triggers.DecodeEvent(line, true)
		switch {
		case err != nil:
		case seen[ev.ID]:
			err = fmt.Errorf("duplicate event id %q", ev.ID)
		default:
			if tick := eng.DueBefore(ev, ev.At); tick != nil && !seen[tick.ID] {
				if d, err := eng.Decide(tick); err == nil {
					seen[tick.ID] = true
					if len(d.Actions) > 0 {
						out.Write(d.AppendJSON(nil))
						out.WriteByte('\n')
					}
				}
			}
			var d engine.Decision
			if d, err = eng.Decide(ev); err == nil {
				seen[ev.ID] = true
				out.Write(d.AppendJSON(nil))
				out.WriteByte('\n')
			}
		}
		if err != nil {
			fmt.Fprintf(&out, "error: line %d: %v\n", i+1, err)
		}
		eng = next(i+1, eng)
	}
	return out.Bytes()
}

func same(_ int, eng *engine.Engine) *engine.Engine { return eng }

// roundTrip snapshots eng, restores the snapshot, checks that the restored
// engine shows the same state and snapshots to the same bytes, and returns
// it.
func roundTrip(t *testing.T, rs *dsl.RuleSet, eng *engine.Engine) *engine.Engine {
	t.Helper()
	data, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := eng.Snapshot(); !bytes.Equal(data, again) {
		t.Fatal("two snapshots of the same state differ")
	}
	back, err := engine.Restore(rs, data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := back.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Fatalf("the restored engine's snapshot differs: %d bytes, was %d", len(again), len(data))
	}
	if want, got := views(eng), views(back); want != got {
		t.Fatalf("the restored engine shows another state:\nwant %s\ngot  %s", want, got)
	}
	return back
}

// views renders what an engine shows of its state.
func views(eng *engine.Engine) string {
	due, ok := eng.NextDue()
	v, err := json.Marshal(map[string]any{"agents": eng.Agents(), "queues": eng.Queues(eng.Clock()), "stats": eng.Stats(),
		"clock": eng.Clock(), "due": due, "pending": ok})
	if err != nil {
		panic(err)
	}
	return string(v)
}

// TestSnapshotEveryEvent: in every scenario, snapshotting the engine after
// every event and going on with an engine restored from the snapshot gives
// the decisions of the plain run, byte for byte.
func TestSnapshotEveryEvent(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			sc := loadScenario(t, path)
			want := step(sc.events, engine.New(sc.rs, engine.Options{Seed: sc.seed}), same)
			if got, plain := decisionLines(want), decisionLines(sc.run()); got != plain {
				t.Fatalf("stepping differs from Replay:\n%s\nReplay:\n%s", got, plain)
			}
			got := step(sc.events, engine.New(sc.rs, engine.Options{Seed: sc.seed}), func(_ int, eng *engine.Engine) *engine.Engine {
				return roundTrip(t, sc.rs, eng)
			})
			if !bytes.Equal(want, got) {
				t.Errorf("decisions differ with a snapshot after every event:\nwant:\n%s\ngot:\n%s", want, got)
			}
		})
	}
}

func decisionLines(out []byte) string {
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "{") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestSnapshotExplain: an event is explained the same from a snapshot
// taken just before it as from a replay of every event before it.
func TestSnapshotExplain(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		sc := loadScenario(t, path)
		for _, id := range sc.explain {
			t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar")+"/"+id, func(t *testing.T) {
				explain := func(fromSnapshot bool) string {
					eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
					var out bytes.Buffer
					eng.ReplayUntil(bytes.NewReader(sc.events), "events.jsonl", id, func(ev *triggers.Event) {
						if fromSnapshot {
							eng = roundTrip(t, sc.rs, eng)
						}
						_, trace, err := eng.Explain(ev)
						if err != nil {
							t.Fatal(err)
						}
						trace.WriteText(&out)
					})
					return out.String()
				}
				if want, got := explain(false), explain(true); want != got {
					t.Errorf("explained from a snapshot:\n%s\nwant:\n%s", got, want)
				}
			})
		}
	}
}

// TestSnapshotAcrossReload: a run reloaded to an edited rule set after any
// event, then snapshotted and restored after every event, decides as the
// run reloaded at the same point. Work waiting when the rules change keeps
// the greeting of the rules that queued it.
func TestSnapshotAcrossReload(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			sc := loadScenario(t, path)
			edited := editRules(t, sc.src)
			lines := bytes.Count(sc.events, []byte("\n")) + 1
			for at := 1; at < lines; at++ {
				reload := func(snapshot bool) func(int, *engine.Engine) *engine.Engine {
					rs := sc.rs
					return func(line int, eng *engine.Engine) *engine.Engine {
						if line >= at && rs != edited {
							rs = edited
							n, _ := eng.Reload(rs)
							return n
						}
						if snapshot {
							eng = roundTrip(t, rs, eng)
						}
						return eng
					}
				}
				want := step(sc.events, engine.New(sc.rs, engine.Options{Seed: sc.seed}), reload(false))
				got := step(sc.events, engine.New(sc.rs, engine.Options{Seed: sc.seed}), reload(true))
				if !bytes.Equal(want, got) {
					t.Fatalf("reloaded after line %d: decisions differ with snapshots:\nwant:\n%s\ngot:\n%s", at, want, got)
				}
			}
		})
	}
}

// editRules returns the rule set with a rule more (first, so that every
// other rule moves), its unanswered rules a minute later, and its greetings
// and replies reworded.
func editRules(t *testing.T, src dsl.Sources) *dsl.RuleSet {
	t.Helper()
	edit := func(s dsl.Source) dsl.Source {
		text := string(s.Text)
		text = strings.ReplaceAll(text, "Hola", "Buenas")
		text = strings.ReplaceAll(text, "Welcome", "Hello")
		text = strings.ReplaceAll(text, "unanswered 5m", "unanswered 6m")
		return dsl.Source{Name: s.Name, Text: []byte(text)}
	}
	var out dsl.Sources
	out.Rules = append(out.Rules, dsl.Source{Name: "000_edit.rules", Text: []byte("rule \"edit\" on incoming message where text == 'no such text' -> tag edited\n")})
	for _, r := range src.Rules {
		out.Rules = append(out.Rules, edit(r))
	}
	out.Team = src.Team
	if src.Mappings != nil {
		m := edit(*src.Mappings)
		out.Mappings = &m
	}
	rs, ds := dsl.Build(out)
	if rs == nil {
		t.Fatalf("edited rules do not compile:\n%v", ds)
	}
	return rs
}
