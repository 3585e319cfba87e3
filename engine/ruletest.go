package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/triggers"
	"golang.org/x/tools/txtar"
)

// TestFiles lists a rule set's tests: dir/tests/*.txtar.
func TestFiles(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "tests", "*.txtar"))
	return files
}

// RunTestArchive runs one rule-set test: a txtar archive holding
// events.jsonl, want.jsonl (the expected decisions, one line per event) and
// optionally seed. It reports whether the decisions equal want.jsonl and,
// when not, a readable diff naming each event that differs. With update it
// rewrites want.jsonl with the decisions instead.
func RunTestArchive(rs *dsl.RuleSet, path string, update bool) (ok bool, report string) {
	ar, err := txtar.ParseFile(path)
	if err != nil {
		return false, fmt.Sprintf("    %v\n", err)
	}
	section := func(name string) (int, []byte) {
		for i, f := range ar.Files {
			if f.Name == name {
				return i, f.Data
			}
		}
		return -1, nil
	}
	seen := map[string]bool{}
	for _, f := range ar.Files {
		if seen[f.Name] {
			return false, fmt.Sprintf("    the archive has two %s sections; keep one\n", f.Name)
		}
		seen[f.Name] = true
	}
	_, events := section("events.jsonl")
	if events == nil {
		return false, "    no events.jsonl section\n"
	}
	var seed uint64
	if _, s := section("seed"); s != nil {
		if seed, err = strconv.ParseUint(strings.TrimSpace(string(s)), 10, 64); err != nil {
			return false, fmt.Sprintf("    seed: %q is not a whole number\n", strings.TrimSpace(string(s)))
		}
	}
	eng := New(rs, Options{Seed: seed})
	var got bytes.Buffer
	var ids []string
	errs := eng.Replay(bytes.NewReader(events), path+":events.jsonl", func(_ int, ev *triggers.Event, d *Decision) bool {
		got.Write(d.AppendJSON(nil))
		got.WriteByte('\n')
		ids = append(ids, ev.ID)
		return true
	})
	var b strings.Builder
	for _, err := range errs {
		fmt.Fprintf(&b, "    %v\n", err)
	}
	wantIdx, want := section("want.jsonl")
	if update {
		if wantIdx < 0 {
			ar.Files = append(ar.Files, txtar.File{Name: "want.jsonl", Data: got.Bytes()})
		} else {
			ar.Files[wantIdx].Data = got.Bytes()
		}
		if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
			return false, fmt.Sprintf("    %v\n", err)
		}
		return len(errs) == 0, b.String()
	}
	if want == nil {
		b.WriteString("    no want.jsonl section (run with -update to write it)\n")
		return false, b.String()
	}
	diff := diffDecisions(lines(string(want)), lines(got.String()), ids)
	b.WriteString(diff)
	return len(errs) == 0 && diff == "", b.String()
}

// lines splits s into lines, with or without carriage returns (an
// archive checked out on Windows).
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	out := strings.Split(s, "\n")
	for i, l := range out {
		out[i] = strings.TrimSuffix(l, "\r")
	}
	return out
}

// diffDecisions compares decisions line by line; each line is one event's.
func diffDecisions(want, got, ids []string) string {
	var b strings.Builder
	for i := range max(len(want), len(got)) {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			continue
		}
		id := fmt.Sprintf("line %d", i+1)
		if i < len(ids) {
			id = "event " + ids[i]
		}
		fmt.Fprintf(&b, "    %s:\n", id)
		if w != "" {
			fmt.Fprintf(&b, "      - want %s\n", w)
		}
		if g != "" {
			fmt.Fprintf(&b, "      + got  %s\n", g)
		}
	}
	return b.String()
}
