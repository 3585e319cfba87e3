package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/whatif"
)

func runWhatif(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("whatif", flag.ContinueOnError)
	fl.SetOutput(stderr)
	data := fl.String("data", "switchboard.db", "the service's database `file` (or postgres:// URL)")
	rules := fl.String("rules", "", "the candidate rule set `directory`")
	table := fl.String("table", "", "a candidate mapping table `file` (CSV or YAML), tried with the rules the service runs")
	since := fl.String("since", "", "the window: the last `duration` (7d, 36h); the default is 7d")
	from := fl.String("from", "", "the window's start, `time` (RFC 3339, or a date: 2026-11-01)")
	to := fl.String("to", "", "the window's end, `time` (default: now)")
	asJSON := fl.Bool("json", false, "the report as JSON, for tools")
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard whatif --rules CANDIDATE_DIR | --table FILE [--data FILE] [--since 7d | --from T [--to T]] [--json]\n\nReplays the traffic a service stored in the window twice, from the state at its start:\nunder the rules that decided it and under the candidate (a rule folder, or a mapping table\ntried with the rules the service runs), and reports what would change:\nthe conversations that would go elsewhere, matches per rule and table row, per agent\nassignments and peak load, waits, notifications and replies. It only reads the\ndatabase, and may run beside the service.")
		fl.PrintDefaults()
	}
	if code, done := parseFlags(fl, args, stdout); done {
		return code
	}
	const p = "switchboard whatif: "
	switch {
	case fl.NArg() > 0:
		fmt.Fprintf(stderr, p+"unexpected argument %q: the candidate comes with --rules DIR\n", fl.Arg(0))
		return 2
	case *rules == "" && *table == "":
		fmt.Fprintln(stderr, p+"--rules DIR or --table FILE is missing: the candidate rule set, or mapping table, to try on the stored traffic")
		return 2
	case *rules != "" && *table != "":
		fmt.Fprintln(stderr, p+"give the candidate as --rules DIR or as --table FILE, not both")
		return 2
	case *since != "" && (*from != "" || *to != ""):
		fmt.Fprintln(stderr, p+"give the window as --since DURATION or as --from TIME [--to TIME], not both")
		return 2
	}
	now := time.Now().UTC()
	window := [2]time.Time{now.Add(-7 * 24 * time.Hour), now}
	if *since != "" {
		d, err := parseDays(*since)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, p+"--since %q: not a duration; write it as 7d, 36h or 90m\n", *since)
			return 2
		}
		window[0] = now.Add(-d)
	}
	for i, s := range []string{*from, *to} {
		if s == "" {
			continue
		}
		t, err := parseWhen(s)
		if err != nil {
			fmt.Fprintf(stderr, p+"--%s %q: not a time; write it as 2026-11-01 or 2026-11-01T09:30:00Z\n", []string{"from", "to"}[i], s)
			return 2
		}
		window[i] = t
	}
	if *to != "" && *from == "" {
		window[0] = window[1].Add(-7 * 24 * time.Hour)
	}
	if !window[0].Before(window[1]) {
		fmt.Fprintf(stderr, p+"the window ends (%s) before it starts (%s)\n", stampUTC(window[1]), stampUTC(window[0]))
		return 2
	}
	var cand *dsl.RuleSet
	var text []byte
	if *rules != "" {
		if cand = loadRules(*rules, stderr); cand == nil {
			return 1
		}
	} else {
		var err error
		if text, err = os.ReadFile(*table); err != nil {
			fmt.Fprintf(stderr, p+"%v\n", err)
			return 1
		}
	}
	st, j, err := openLog(*data)
	if err != nil {
		fmt.Fprintf(stderr, p+"%v\n", err)
		return 1
	}
	defer st.Close()
	ctx := context.Background()
	source := *rules
	if *table != "" {
		source = *table
		running, err := whatif.Current(ctx, st, j, window[1])
		if errors.Is(err, whatif.ErrEmptyWindow) {
			fmt.Fprintf(stderr, p+"%s holds no traffic before %s to try a table on\n", *data, stampUTC(window[1]))
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, p+"%s: %v\n", *data, err)
			return 1
		}
		var ds dsl.Diagnostics
		cand, ds = whatif.WithTable(running, dsl.Source{Name: *table, Text: text})
		for _, d := range ds {
			fmt.Fprintln(stderr, d)
		}
		if cand == nil {
			return 1
		}
	}
	rep, err := whatif.Run(ctx, st, j, whatif.Options{From: window[0], To: window[1], Candidate: cand, Source: filepath.Clean(source)})
	if errors.Is(err, whatif.ErrEmptyWindow) {
		fmt.Fprintf(stderr, p+"%s holds no traffic from %s to %s; widen the window (--since 30d, or --from and --to)\n", *data, stampUTC(window[0]), stampUTC(window[1]))
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, p+"%s: %v\n", *data, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, p+"%v\n", err)
			return 1
		}
		return 0
	}
	if err := rep.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, p+"%v\n", err)
		return 1
	}
	return 0
}

// parseWhen reads a time as RFC 3339, or a date (midnight UTC).
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, s)
}

func stampUTC(t time.Time) string { return t.UTC().Format(time.RFC3339) }
