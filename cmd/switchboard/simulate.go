package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// replayFlags are the flags simulate and explain share.
type replayFlags struct {
	rules, events, data *string
	seed                *uint64
}

func addReplayFlags(fl *flag.FlagSet) replayFlags {
	return replayFlags{
		rules:  fl.String("rules", "", "rule set `directory`"),
		events: fl.String("events", "", "JSON-lines event `file` (- for stdin)"),
		seed:   fl.Uint64("seed", 0, "seed for the random algorithm"),
		data:   fl.String("data", "", "a service's database `file`: replay its log, with the rules, clock and seed it was decided with, instead of --rules and --events"),
	}
}

// missing names what a simulate or explain command line lacks; "" when
// nothing. target is explain's --event.
func (f replayFlags) missing(cmd string, fl *flag.FlagSet, target *string) string {
	p := "switchboard " + cmd + ": "
	switch {
	case fl.NArg() > 0:
		return p + fmt.Sprintf("unexpected argument %q: the events come with --events FILE; see switchboard help %s", fl.Arg(0), cmd)
	case *f.rules == "":
		return p + "--rules DIR is missing: the rule set to run (or --data FILE for a service's stored log)"
	case *f.events == "":
		return p + "--events FILE is missing: the events, as JSON lines (- for stdin)"
	case target != nil && *target == "":
		return p + "--event ID is missing: the id of the event to explain"
	}
	return ""
}

// start compiles the rules and opens the events. A non-zero code is the
// exit status when it could not.
func (f replayFlags) start(cmd string, stdin io.Reader, stderr io.Writer) (eng *engine.Engine, in io.Reader, done func(), code int) {
	rs := loadRules(*f.rules, stderr)
	if rs == nil {
		return nil, nil, nil, 1
	}
	in, done, err := openEvents(*f.events, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard %s: %v\n", cmd, err)
		return nil, nil, nil, 2
	}
	return engine.New(rs, engine.Options{Seed: *f.seed}), in, done, 0
}

// loadRules compiles a rule set directory, printing its diagnostics.
func loadRules(dir string, stderr io.Writer) *dsl.RuleSet {
	rs, ds := dsl.Load(dir)
	for _, d := range ds {
		fmt.Fprintln(stderr, d)
	}
	return rs
}

// openEvents opens an event file, "-" for stdin.
func openEvents(name string, stdin io.Reader) (io.Reader, func(), error) {
	if name == "-" {
		return stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func runSimulate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fl.SetOutput(stderr)
	rf := addReplayFlags(fl)
	quiet := fl.Bool("q", false, "no summary on stderr")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard simulate --rules DIR --events FILE [--seed N]\n       switchboard simulate --data FILE\n\nDecides every event and prints the decisions as JSON lines; a summary goes to stderr.\nThe same rules, events and seed always give the same bytes. With --data, replays a\nservice's stored log and reports any decision that differs from the stored one.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	if *rf.data != "" && fl.NArg() == 0 && *rf.rules == "" && *rf.events == "" {
		return simulateStored(*rf.data, *quiet, stdout, stderr)
	}
	if msg := rf.missing("simulate", fl, nil); msg != "" {
		fmt.Fprintln(stderr, msg)
		return 2
	}
	eng, in, done, code := rf.start("simulate", stdin, stderr)
	if code != 0 {
		return code
	}
	defer done()
	w := bufio.NewWriterSize(stdout, 64*1024)
	var buf []byte
	n := 0
	errs := eng.Replay(in, *rf.events, func(_ int, _ *triggers.Event, d *engine.Decision) bool {
		buf = append(d.AppendJSON(buf[:0]), '\n')
		w.Write(buf)
		n++
		return true
	})
	w.Flush()
	for _, err := range errs {
		fmt.Fprintln(stderr, err)
	}
	writeFailures(stderr, eng.TakeFailures())
	if !*quiet {
		writeSummary(stderr, n, len(errs), eng.Stats())
	}
	if len(errs) > 0 {
		return 1
	}
	return 0
}

// writeFailures says which rules' conditions failed at run time: they
// did not match, which check could not foresee (a custom attribute of an
// unexpected type).
func writeFailures(w io.Writer, fs []engine.CondFailure) {
	for _, f := range fs {
		fmt.Fprintf(w, "%s: rule %q: the condition failed at run time on %s, which it did not match (first %s: %s); explain --event %s shows why\n",
			f.Pos, f.Rule, plural(f.Count, "event"), f.Event, f.Err, f.Event)
	}
}

func writeSummary(w io.Writer, events, bad int, s engine.Stats) {
	fmt.Fprintf(w, "\n%s decided", plural(events, "event"))
	if bad > 0 {
		fmt.Fprintf(w, ", %d bad lines skipped", bad)
	}
	fmt.Fprintln(w)
	if len(s.Agents) > 0 {
		fmt.Fprintf(w, "%-16s %8s %10s %6s\n", "agent", "assigned", "peak load", "open")
		for _, a := range s.Agents {
			fmt.Fprintf(w, "%-16s %8d %10s %6d\n", a.Agent, a.Assigned, a.PeakLoad, a.Open)
		}
	}
	fmt.Fprintf(w, "placed from a waiting line: %d", s.Waited)
	if s.Waited > 0 {
		fmt.Fprintf(w, " (mean wait %s, longest %s)", (s.WaitTotal / time.Duration(s.Waited)).Round(time.Second), s.WaitMax)
	}
	fmt.Fprintln(w)
	if s.StillWaiting > 0 {
		fmt.Fprintf(w, "still waiting: %d (oldest %s)\n", s.StillWaiting, s.OldestStillWaiting)
	}
}

func runExplain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("explain", flag.ContinueOnError)
	fl.SetOutput(stderr)
	rf := addReplayFlags(fl)
	target := fl.String("event", "", "the `id` of the event to explain")
	asJSON := fl.Bool("json", false, "print the trace as JSON")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard explain --rules DIR --events FILE --event ID\n       switchboard explain --data FILE --event ID\n\nReplays the events up to ID and shows why that one went where it went:\nevery rule, matched or not and why; every action and its outcome; for a group, every member.\nWith --data, explains an event of a service's stored log as the service decided it.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	if *rf.data != "" && *target != "" && fl.NArg() == 0 && *rf.rules == "" && *rf.events == "" {
		return explainStored(*rf.data, *target, *asJSON, stdout, stderr)
	}
	if msg := rf.missing("explain", fl, target); msg != "" {
		fmt.Fprintln(stderr, msg)
		return 2
	}
	eng, in, done, code := rf.start("explain", stdin, stderr)
	if code != 0 {
		return code
	}
	defer done()
	var trace *engine.Trace
	var explainErr error
	errs := eng.ReplayUntil(in, *rf.events, *target, func(ev *triggers.Event) {
		_, trace, explainErr = eng.Explain(ev)
	})
	for _, err := range errs {
		fmt.Fprintln(stderr, err)
	}
	switch {
	case explainErr != nil:
		fmt.Fprintf(stderr, "event %s: %v\n", *target, explainErr)
		return 1
	case trace == nil:
		fmt.Fprintf(stderr, "switchboard explain: no event %q in %s\n", *target, *rf.events)
		return 1
	}
	printTrace(stdout, trace, *asJSON)
	return 0
}

// printTrace prints an explanation as text, or as indented JSON.
func printTrace(w io.Writer, trace *engine.Trace, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(trace)
		return
	}
	trace.WriteText(w)
}
