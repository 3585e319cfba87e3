package dsl_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sebdah/goldie/v2"
	"github.com/switchboard-dev/switchboard/dsl"
	"golang.org/x/tools/txtar"
)

const corpus = "../testdata/dsl"

// compileArchive compiles the files of a txtar archive as one rule set:
// every *.rules file in archive order, team.yaml when present, and the
// service's webhook endpoints when an "endpoints" file lists them.
func compileArchive(t testing.TB, ar *txtar.Archive) (*dsl.RuleSet, dsl.Diagnostics, []*dsl.File) {
	t.Helper()
	var rules []dsl.Source
	var team, mappings *dsl.Source
	var endpoints []string
	for _, f := range ar.Files {
		switch {
		case f.Name == "endpoints":
			endpoints = append([]string{}, strings.Fields(string(f.Data))...)
		case f.Name == dsl.TeamFile:
			team = &dsl.Source{Name: f.Name, Text: f.Data}
		case f.Name == dsl.MappingsCSV || f.Name == dsl.MappingsYAML:
			mappings = &dsl.Source{Name: f.Name, Text: f.Data}
		case strings.HasSuffix(f.Name, ".rules"):
			rules = append(rules, dsl.Source{Name: f.Name, Text: f.Data})
		}
	}
	rs, ds := dsl.Build(dsl.Sources{Rules: rules, Team: team, Mappings: mappings, Endpoints: endpoints})
	var files []*dsl.File
	if rs != nil {
		files = rs.Files
	}
	return rs, ds, files
}

func cases(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(corpus, dir, "*.txtar"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cases in %s: %v", dir, err)
	}
	return paths
}

func caseName(path string) string { return strings.TrimSuffix(filepath.Base(path), ".txtar") }

// TestValid pins the compiled form of every valid rule set in the corpus.
func TestValid(t *testing.T) {
	g := goldie.New(t, goldie.WithFixtureDir(filepath.Join(corpus, "golden", "valid")))
	for _, path := range cases(t, "valid") {
		t.Run(caseName(path), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rs, ds, files := compileArchive(t, ar)
			if rs == nil || len(ds) > 0 {
				t.Fatalf("want a clean rule set, got:\n%s", ds)
			}
			got, err := json.MarshalIndent(rs, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			g.Assert(t, caseName(path), append(got, '\n'))
			// Every valid file is already canonical or formats idempotently.
			for _, f := range files {
				once, err := dsl.Format(f)
				if err != nil {
					t.Fatalf("%s: %v", f.Name, err)
				}
				twice, err := dsl.FormatSource(f.Name, string(once))
				if err != nil {
					t.Fatalf("%s: formatted output does not parse: %v\n%s", f.Name, err, once)
				}
				if string(once) != string(twice) {
					t.Errorf("%s: fmt is not idempotent:\nonce:\n%s\ntwice:\n%s", f.Name, once, twice)
				}
			}
		})
	}
}

// TestBroken pins the exact diagnostics of every broken rule set.
func TestBroken(t *testing.T) {
	g := goldie.New(t, goldie.WithFixtureDir(filepath.Join(corpus, "golden", "broken")))
	for _, path := range cases(t, "broken") {
		t.Run(caseName(path), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rs, ds, _ := compileArchive(t, ar)
			if rs != nil {
				t.Fatalf("want errors, got a rule set (diagnostics: %v)", ds)
			}
			if !ds.HasErrors() {
				t.Fatal("want at least one error")
			}
			for _, d := range ds {
				if d.Pos.File == "" || d.Pos.Line == 0 || d.Pos.Col == 0 {
					t.Errorf("diagnostic without file:line:col: %s", d)
				}
			}
			g.Assert(t, caseName(path), []byte(ds.Error()+"\n"))
		})
	}
}

// TestFormat pins the canonical form of every rule file in the valid corpus.
func TestFormat(t *testing.T) {
	g := goldie.New(t, goldie.WithFixtureDir(filepath.Join(corpus, "golden", "fmt")))
	for _, path := range cases(t, "valid") {
		ar, err := txtar.ParseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ar.Files {
			if !strings.HasSuffix(f.Name, ".rules") {
				continue
			}
			name := caseName(path) + "." + strings.TrimSuffix(f.Name, ".rules")
			t.Run(name, func(t *testing.T) {
				out, err := dsl.FormatSource(f.Name, string(f.Data))
				if err != nil {
					t.Fatal(err)
				}
				g.Assert(t, name, out)
			})
		}
	}
}
