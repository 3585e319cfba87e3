package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/dsl"
)

func runCheck(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("check", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print the diagnostics as a JSON array")
	strict := fl.Bool("strict", false, "mapping tables may only use the custom attributes team.yaml declares")
	config := fl.String("config", os.Getenv("SWITCHBOARD_CONFIG"), "the service's configuration `file`: notify webhook NAME must name one of its endpoints")
	var named []string
	fl.Func("rules", "a rule set `directory` to check (the same as naming it after the flags)", func(s string) error { named = append(named, s); return nil })
	fl.Usage = func() {
		fmt.Fprintln(fl.Output(), "usage: switchboard check [--json] [--strict] [--config FILE] DIR|FILE...\n\nParses, compiles and checks rule sets; prints one line per problem as file:line:col: message.\nDIR/... checks every rule set below DIR. Exit status 1 when there is an error.")
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
		fmt.Fprintf(stderr, "switchboard check: %v\n", err)
		return 2
	}
	all := dsl.Diagnostics{}
	opts := dsl.Options{Strict: *strict}
	if *config != "" {
		// The secrets may not be where rules are checked: not read.
		cfg, ds := delivery.LoadConfig(*config, nil)
		all = append(all, ds...)
		if !*asJSON {
			for _, d := range ds {
				fmt.Fprintln(stdout, d)
			}
		}
		if cfg != nil {
			opts.Endpoints = cfg.EndpointNames()
		}
	}
	for _, s := range sets {
		var rs *dsl.RuleSet
		var ds dsl.Diagnostics
		if s.files == nil {
			rs, ds = dsl.LoadWith(s.dir, opts)
		} else {
			rs, ds = dsl.LoadFilesWith(s.dir, s.files, opts)
		}
		all = append(all, ds...)
		if *asJSON {
			continue
		}
		for _, d := range ds {
			fmt.Fprintln(stdout, d)
		}
		if rs != nil {
			fmt.Fprintf(stderr, "ok\t%s\t%s\n", s.dir, summary(rs))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			fmt.Fprintf(stderr, "switchboard check: %v\n", err)
			return 2
		}
	}
	if all.HasErrors() {
		return 1
	}
	return 0
}

func summary(rs *dsl.RuleSet) string {
	rules, rows := 0, 0
	for _, r := range rs.Rules {
		if r.Table {
			rows++
		} else {
			rules++
		}
	}
	parts := []string{plural(rules, "rule")}
	if rows > 0 {
		parts = append(parts, plural(rows, "table row"))
	}
	if n := len(rs.Segments); n > 0 {
		parts = append(parts, plural(n, "segment"))
	}
	if rs.Team != nil {
		parts = append(parts, plural(len(rs.Team.Agents), "agent"), plural(len(rs.Team.Groups), "group"))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// ruleSet is a directory to check, whole (files nil) or only some files.
type ruleSet struct {
	dir   string
	files []string
}

// ruleSets resolves command-line targets: a directory is one rule set,
// DIR/... is every directory below DIR holding .rules files, and files are
// grouped by directory.
func ruleSets(targets []string) ([]ruleSet, error) {
	var sets []ruleSet
	byDir := map[string]int{}
	add := func(dir string, file string) {
		i, ok := byDir[dir]
		if !ok {
			i = len(sets)
			byDir[dir] = i
			sets = append(sets, ruleSet{dir: dir})
		}
		if file != "" && !slices.Contains(sets[i].files, file) {
			sets[i].files = append(sets[i].files, file)
		}
	}
	for _, t := range targets {
		if root, ok := strings.CutSuffix(t, "..."); ok {
			root = filepath.Clean(strings.TrimSuffix(root, "/"))
			if root == "" {
				root = "."
			}
			if _, err := os.Stat(root); err != nil {
				return nil, missing(root, err)
			}
			var found bool
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() {
					return nil
				}
				if dsl.IsRuleSet(path) {
					add(path, "")
					found = true
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if !found {
				return nil, fmt.Errorf("%s: no rule sets (directories with .rules files or a mappings.csv) below %s", t, root)
			}
			continue
		}
		info, err := os.Stat(t)
		if err != nil {
			return nil, missing(t, err)
		}
		if info.IsDir() {
			add(filepath.Clean(t), "")
			continue
		}
		if base := filepath.Base(t); base == dsl.MappingsCSV || base == dsl.MappingsYAML || base == dsl.TeamFile {
			add(filepath.Dir(t), "") // a table or team is checked with its rule set
			continue
		}
		add(filepath.Dir(t), t)
	}
	// A directory named whole wins over some of its files.
	for i := range sets {
		for _, t := range targets {
			if filepath.Clean(t) == sets[i].dir {
				sets[i].files = nil
			}
		}
	}
	return sets, nil
}

// missing words a path that cannot be read, naming it.
func missing(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: no such file or directory", path)
	}
	return err
}
