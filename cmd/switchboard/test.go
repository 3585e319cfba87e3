package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
	"golang.org/x/tools/txtar"
)

func runTest(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("test", flag.ContinueOnError)
	fl.SetOutput(stderr)
	update := fl.Bool("update", false, "rewrite each test's want.jsonl with what the rules decide now")
	verbose := fl.Bool("v", false, "list every test")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard test [-update] [-v] DIR...\n\nRuns a rule set's tests: each DIR/tests/*.txtar holds events.jsonl and want.jsonl\n(and optionally seed); the decisions must equal want.jsonl. DIR/... tests every rule set below DIR.")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	targets := fl.Args()
	if len(targets) == 0 {
		targets = []string{"."}
	}
	sets, err := ruleSets(targets)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard test: %v\n", err)
		return 2
	}
	failed := false
	for _, s := range sets {
		files, _ := filepath.Glob(filepath.Join(s.dir, "tests", "*.txtar"))
		if len(files) == 0 {
			fmt.Fprintf(stdout, "?\t%s\t[no tests]\n", s.dir)
			continue
		}
		rs := loadRules(s.dir, stdout)
		if rs == nil {
			fmt.Fprintf(stdout, "FAIL\t%s\t[rules do not compile]\n", s.dir)
			failed = true
			continue
		}
		setFailed := false
		for _, f := range files {
			ok, msg := runTestFile(rs, f, *update)
			if !ok {
				setFailed = true
				fmt.Fprintf(stdout, "--- FAIL: %s\n%s", f, msg)
			} else if *verbose {
				fmt.Fprintf(stdout, "--- ok: %s%s\n", f, msg)
			}
		}
		if setFailed {
			failed = true
			fmt.Fprintf(stdout, "FAIL\t%s\n", s.dir)
		} else {
			fmt.Fprintf(stdout, "ok\t%s\t%d tests\n", s.dir, len(files))
		}
	}
	if failed {
		return 1
	}
	return 0
}

// runTestFile runs one test archive; it returns whether it passed and, when
// not, a readable report.
func runTestFile(rs *dsl.RuleSet, path string, update bool) (bool, string) {
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
	eng := engine.New(rs, engine.Options{Seed: seed})
	var got bytes.Buffer
	var ids []string
	errs := eng.Replay(bytes.NewReader(events), path+":events.jsonl", func(_ int, ev *triggers.Event, d *engine.Decision) bool {
		got.Write(d.AppendJSON(nil))
		got.WriteByte('\n')
		ids = append(ids, ev.ID)
		return true
	})
	var report strings.Builder
	for _, err := range errs {
		fmt.Fprintf(&report, "    %v\n", err)
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
		return len(errs) == 0, report.String()
	}
	if want == nil {
		report.WriteString("    no want.jsonl section (run with -update to write it)\n")
		return false, report.String()
	}
	diff := diffDecisions(splitLines(string(want)), splitLines(got.String()), ids)
	report.WriteString(diff)
	return len(errs) == 0 && diff == "", report.String()
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
