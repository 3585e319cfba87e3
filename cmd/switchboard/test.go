package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/switchboard-dev/switchboard/engine"
)

func runTest(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("test", flag.ContinueOnError)
	fl.SetOutput(stderr)
	update := fl.Bool("update", false, "rewrite each test's want.jsonl with what the rules decide now")
	verbose := fl.Bool("v", false, "list every test")
	allowEmpty := fl.Bool("allow-empty", false, "a rule set without tests is not an error")
	var named []string
	fl.Func("rules", "a rule set `directory` to test (the same as naming it after the flags)", func(s string) error { named = append(named, s); return nil })
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard test [-update] [-v] [-allow-empty] DIR...\n\nRuns a rule set's tests: each DIR/tests/*.txtar holds events.jsonl and want.jsonl\n(and optionally seed); the decisions must equal want.jsonl. DIR/... tests every rule set below DIR.\nA rule set without tests fails (exit 1) unless -allow-empty.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	targets := append(named, fl.Args()...)
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
		files := engine.TestFiles(s.dir)
		if len(files) == 0 {
			if *allowEmpty {
				fmt.Fprintf(stdout, "?\t%s\t[no tests]\n", s.dir)
				continue
			}
			fmt.Fprintf(stdout, "FAIL\t%s\t[no tests: add %s, or pass -allow-empty]\n", s.dir, filepath.Join(s.dir, "tests", "*.txtar"))
			failed = true
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
			ok, msg := engine.RunTestArchive(rs, f, *update)
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
			fmt.Fprintf(stdout, "ok\t%s\t%s\n", s.dir, plural(len(files), "test"))
		}
	}
	if failed {
		return 1
	}
	return 0
}
