package engine_test

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sebdah/goldie/v2"
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
	rs, ds := dsl.Build(dsl.Sources{Rules: rules, Team: team, Mappings: mappings})
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
