package whatif_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sebdah/goldie/v2"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
	"github.com/switchboard-dev/switchboard/whatif"
	"golang.org/x/tools/txtar"
)

const (
	scenarios = "../testdata/engine"
	cases     = "../testdata/whatif"
)

// files reads a txtar archive's files by name.
func files(t testing.TB, path string) (map[string][]byte, []string) {
	t.Helper()
	ar, err := txtar.ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	var order []string
	for _, f := range ar.Files {
		out[f.Name] = f.Data
		order = append(order, f.Name)
	}
	return out, order
}

// build compiles the rule set among files (names without a directory).
func build(t testing.TB, fs map[string][]byte, order []string) *dsl.RuleSet {
	t.Helper()
	var src dsl.Sources
	for _, name := range order {
		f := &dsl.Source{Name: name, Text: fs[name]}
		switch {
		case name == dsl.TeamFile:
			src.Team = f
		case name == dsl.MappingsCSV || name == dsl.MappingsYAML:
			src.Mappings = f
		case strings.HasSuffix(name, ".rules"):
			src.Rules = append(src.Rules, *f)
		}
	}
	rs, ds := dsl.Build(src)
	if rs == nil {
		t.Fatalf("rules do not compile:\n%v", ds)
	}
	return rs
}

// testLog is a service's store being filled with events decided as the
// service decides them: each at its own time, which stands for the
// service's clock; refused events and repeated ids are not stored.
type testLog struct {
	t      testing.TB
	st     store.Store
	rs     *dsl.RuleSet
	eng    *engine.Engine
	seq    int64
	stored map[string]bool
	recs   []store.Record
}

func newLog(t testing.TB, rs *dsl.RuleSet, seed uint64) *testLog {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "sb.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var files []store.RuleSetFile
	for _, f := range rs.Sources.Files() {
		files = append(files, store.RuleSetFile{Name: f.Name, Text: string(f.Text)})
	}
	if err := st.SaveRuleSet(ctx, rs.Version, files); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMeta(ctx, journal.SeedKey, strconv.FormatUint(seed, 10)); err != nil {
		t.Fatal(err)
	}
	return &testLog{t: t, st: st, rs: rs, eng: engine.New(rs, engine.Options{Seed: seed}), stored: map[string]bool{}}
}

// add decides one event line and stores it, in groups of 5,000.
func (l *testLog) add(line []byte) {
	ev, err := triggers.DecodeEvent(line, true)
	if err != nil || l.stored[ev.ID] {
		return // refused, or answered from the log: stored once
	}
	var own string
	if ev.Conversation != "" {
		own = l.eng.ConversationContact(ev.Conversation)
	}
	d, err := l.eng.DecideAt(ev, ev.At)
	if err != nil {
		return
	}
	l.stored[ev.ID] = true
	l.seq++
	sum := sha256.Sum256(line)
	l.recs = append(l.recs, store.Record{Seq: l.seq, ID: ev.ID, Type: ev.Type, At: ev.At, Clock: ev.At.Round(0),
		Event: line, Hash: sum[:], Decision: d.AppendJSON(nil), RuleSet: l.rs.Version, Contacts: l.eng.Contacts(ev, own, &d)})
	if len(l.recs) == 5000 {
		l.flush()
	}
}

func (l *testLog) flush() {
	if err := l.st.Append(context.Background(), l.recs); err != nil {
		l.t.Fatal(err)
	}
	l.recs = l.recs[:0]
}

// done stores what is left and returns the store and its journal.
func (l *testLog) done() (store.Store, *journal.Journal) {
	l.flush()
	return l.st, journal.New(l.st, nil, 0)
}

// logged is a service's store holding a scenario's events.
func logged(t testing.TB, rs *dsl.RuleSet, events []byte, seed uint64) (store.Store, *journal.Journal) {
	t.Helper()
	l := newLog(t, rs, seed)
	for _, line := range bytes.Split(events, []byte("\n")) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			l.add(line)
		}
	}
	st, _ := l.done()
	return st, journal.New(st, nil, seed)
}

// scenario is an engine scenario stored as a service's log.
type scenario struct {
	files  map[string][]byte
	order  []string
	rs     *dsl.RuleSet
	st     store.Store
	j      *journal.Journal
	window [2]time.Time // around every event
}

func loadScenario(t testing.TB, name string) *scenario {
	t.Helper()
	fs, order := files(t, filepath.Join(scenarios, name+".txtar"))
	sc := &scenario{files: fs, order: order, rs: build(t, fs, order)}
	var seed uint64
	if s, ok := fs["seed"]; ok {
		seed, _ = strconv.ParseUint(strings.TrimSpace(string(s)), 10, 64)
	}
	sc.st, sc.j = logged(t, sc.rs, fs["events.jsonl"], seed)
	sc.window = [2]time.Time{time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	return sc
}

// candidate is the scenario's rule set with files replaced or added.
func (sc *scenario) candidate(t testing.TB, changed map[string][]byte) *dsl.RuleSet {
	t.Helper()
	fs := map[string][]byte{}
	order := sc.order
	for k, v := range sc.files {
		fs[k] = v
	}
	for k, v := range changed {
		if _, ok := fs[k]; !ok {
			order = append(order, k)
		}
		fs[k] = v
	}
	return build(t, fs, order)
}

func (sc *scenario) run(t testing.TB, cand *dsl.RuleSet) *whatif.Report {
	t.Helper()
	rep, err := whatif.Run(context.Background(), sc.st, sc.j, whatif.Options{From: sc.window[0], To: sc.window[1], Candidate: cand, Source: "candidate"})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestSameRules: every engine scenario, tried against its own rules,
// changes nothing, and says so.
func TestSameRules(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	if len(paths) == 0 {
		t.Fatal("no scenarios")
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".txtar")
		t.Run(name, func(t *testing.T) {
			sc := loadScenario(t, name)
			rep := sc.run(t, sc.candidate(t, nil))
			if len(rep.Moved) > 0 || len(rep.Refused) > 0 {
				t.Fatalf("the same rules move %d conversations and refuse %d events: %+v %+v", len(rep.Moved), len(rep.Refused), rep.Moved, rep.Refused)
			}
			for _, m := range rep.Matches {
				if m.Before != m.After {
					t.Errorf("rule %q matched %d times, and %d under the same rules", m.Rule, m.Before, m.After)
				}
			}
			for _, a := range rep.Agents {
				if a.Assigned.Before != a.Assigned.After || a.Peak.Before != a.Peak.After {
					t.Errorf("agent %s: %+v", a.Agent, a)
				}
			}
			if rep.Waiting.Before != rep.Waiting.After || rep.Notifications.Before != rep.Notifications.After || rep.Replies.Before != rep.Replies.After {
				t.Errorf("waits, notifications or replies differ: %+v %+v %+v", rep.Waiting, rep.Notifications, rep.Replies)
			}
		})
	}
}

// TestGolden pins the reports of rule changes on engine scenarios: each
// case names a scenario and gives the candidate's changed files
// (candidate/NAME), and optionally a window ("window": FROM TO).
func TestGolden(t *testing.T) {
	g := goldie.New(t, goldie.WithFixtureDir(filepath.Join(cases, "golden")))
	paths, _ := filepath.Glob(filepath.Join(cases, "*.txtar"))
	if len(paths) == 0 {
		t.Fatal("no cases")
	}
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".txtar")
		t.Run(name, func(t *testing.T) {
			fs, _ := files(t, path)
			sc := loadScenario(t, strings.TrimSpace(string(fs["scenario"])))
			changed := map[string][]byte{}
			for k, v := range fs {
				if n, ok := strings.CutPrefix(k, "candidate/"); ok {
					changed[n] = v
				}
			}
			if w := strings.Fields(string(fs["window"])); len(w) == 2 {
				for i := range w {
					tm, err := time.Parse(time.RFC3339, w[i])
					if err != nil {
						t.Fatal(err)
					}
					sc.window[i] = tm
				}
			}
			cand := sc.candidate(t, changed)
			rep := sc.run(t, cand)
			var text bytes.Buffer
			rep.WriteText(&text)
			// The same report twice: a replay is deterministic.
			var again bytes.Buffer
			sc.run(t, cand).WriteText(&again)
			if !bytes.Equal(text.Bytes(), again.Bytes()) {
				t.Fatalf("two runs differ:\n%s\n%s", text.Bytes(), again.Bytes())
			}
			// Versions are hashes of the files: the golden names them by
			// role.
			out := strings.ReplaceAll(text.String(), sc.rs.Version, "BASE")
			out = strings.ReplaceAll(out, cand.Version, "CANDIDATE")
			g.Assert(t, name, []byte(out))
			// JSON for tools says the same.
			js, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var back whatif.Report
			if err := json.Unmarshal(js, &back); err != nil || len(back.Moved) != len(rep.Moved) {
				t.Fatalf("the JSON report does not read back: %v", err)
			}
		})
	}
}

// TestWithTable: a table file tried with the running rules reports as the
// same table in a candidate folder does, its rows named as the running
// table's; its mistakes are named in the file as given.
func TestWithTable(t *testing.T) {
	fs, _ := files(t, filepath.Join(cases, "table_row.txtar"))
	sc := loadScenario(t, "table")
	running, err := whatif.Current(context.Background(), sc.st, sc.j, sc.window[1])
	if err != nil || running.Version != sc.rs.Version {
		t.Fatalf("the running rules: %v %v", running, err)
	}
	cand, ds := whatif.WithTable(running, dsl.Source{Name: "edited.csv", Text: fs["candidate/mappings.csv"]})
	if cand == nil || len(ds) > 0 {
		t.Fatalf("the edited table: %v", ds)
	}
	viaTable := sc.run(t, cand)
	viaFolder := sc.run(t, sc.candidate(t, map[string][]byte{"mappings.csv": fs["candidate/mappings.csv"]}))
	a, _ := json.Marshal(viaTable)
	b, _ := json.Marshal(viaFolder)
	if !bytes.Equal(a, b) {
		t.Fatalf("a table file and the same table in a folder report differently:\n%s\n%s", a, b)
	}
	bad := bytes.Replace(fs["candidate/mappings.csv"], []byte("German,language is de,Spanish"), []byte("German,language is de,Spanihs"), 1)
	if cand, ds := whatif.WithTable(running, dsl.Source{Name: "edited.csv", Text: bad}); cand != nil || !strings.Contains(ds.Error(), `edited.csv:4:`) || !strings.Contains(ds.Error(), `did you mean "Spanish"`) {
		t.Fatalf("a misspelt group: %v", ds)
	}
}
