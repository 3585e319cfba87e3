package dsl_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"golang.org/x/tools/txtar"
)

var fuzzTeam = &dsl.Source{Name: dsl.TeamFile, Text: []byte(`
agents:
  - id: amelie
    capacity: 4
    skills: [fr, billing]
    status: online
  - id: bastien
groups:
  French: [amelie]
  Sales: [amelie, bastien]
`)}

// FuzzParse feeds arbitrary text to the whole front end: every input either
// compiles or yields diagnostics with positions, and whatever parses
// formats idempotently into text that still compiles.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(corpus, "*", "*.txtar"))
	for _, p := range seeds {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if strings.HasSuffix(file.Name, ".rules") {
				f.Add(string(file.Data))
			}
		}
	}
	examples, _ := filepath.Glob("../rules/examples/*/*.rules")
	for _, p := range examples {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	// Raw strings over several lines: their text is kept as written.
	f.Add("on new conversation -> set contact.name = `a\nb`; tag x\n")
	f.Add("on incoming message where text == `a\n  b` and\n  lang == 'fr'\nthen\n  tag x\n")
	f.Add("segment s where message.text == `q\n r` or\n    lang == 'x'\n")
	f.Fuzz(func(t *testing.T, src string) {
		rs, ds := dsl.Build(dsl.Sources{Rules: []dsl.Source{{Name: "f.rules", Text: []byte(src)}}, Team: fuzzTeam})
		checkOutcome(t, rs, ds)
		file, pds := dsl.ParseFile("f.rules", src)
		if pds.HasErrors() {
			return
		}
		once, err := dsl.Format(file)
		if err != nil {
			t.Fatalf("parsed but does not format: %v", err)
		}
		twice, err := dsl.FormatSource("f.rules", string(once))
		if err != nil {
			t.Fatalf("formatted text does not parse: %v\ninput:\n%q\nformatted:\n%s", err, src, once)
		}
		if string(once) != string(twice) {
			t.Fatalf("fmt is not idempotent\ninput:\n%q\nonce:\n%s\ntwice:\n%s", src, once, twice)
		}
		if m1, m2 := meaning(t, src), meaning(t, string(once)); !slices.Equal(m1, m2) {
			t.Fatalf("formatting changed the text's tokens\ninput:\n%q\nformatted:\n%q\n%q\n%q", src, once, m1, m2)
		}
		if rs != nil {
			if rs2, ds2 := dsl.Build(dsl.Sources{Rules: []dsl.Source{{Name: "f.rules", Text: once}}, Team: fuzzTeam}); rs2 == nil {
				t.Fatalf("formatted text no longer compiles: %v\ninput:\n%q\nformatted:\n%s", ds2, src, once)
			} else if len(rs2.Rules) != len(rs.Rules) || len(rs2.Segments) != len(rs.Segments) {
				t.Fatalf("formatting changed the rules: %d/%d rules, %d/%d segments\n%s", len(rs.Rules), len(rs2.Rules), len(rs.Segments), len(rs2.Segments), once)
			}
		}
	})
}

// meaning is src's tokens but for what fmt may change.
func meaning(t *testing.T, src string) []string {
	m, err := dsl.Meaning(src)
	if err != nil {
		t.Fatalf("lexing %q: %v", src, err)
	}
	return m
}

// FuzzTable feeds arbitrary text to the mapping table reader, as CSV and as
// YAML: every input compiles or yields diagnostics with positions, and a
// table with errors is never loaded.
func FuzzTable(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(corpus, "*", "table_*.txtar"))
	for _, p := range seeds {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if file.Name == dsl.MappingsCSV || file.Name == dsl.MappingsYAML {
				f.Add(file.Data, file.Name == dsl.MappingsYAML)
			}
		}
	}
	f.Fuzz(func(t *testing.T, table []byte, yaml bool) {
		name := dsl.MappingsCSV
		if yaml {
			name = dsl.MappingsYAML
		}
		rs, ds := dsl.Build(dsl.Sources{Team: fuzzTeam, Mappings: &dsl.Source{Name: name, Text: table}})
		checkOutcome(t, rs, ds)
	})
}

// checkOutcome holds for every build: a rule set or an error, never both
// or neither, and every diagnostic placed and worded.
func checkOutcome(t *testing.T, rs *dsl.RuleSet, ds dsl.Diagnostics) {
	t.Helper()
	if rs == nil && !ds.HasErrors() {
		t.Fatalf("no rule set and no error")
	}
	if rs != nil && ds.HasErrors() {
		t.Fatalf("a rule set despite errors: %v", ds)
	}
	for _, d := range ds {
		if d.Pos.File == "" || d.Pos.Line < 1 || d.Pos.Col < 1 || d.Message == "" {
			t.Fatalf("diagnostic without a place or a message: %#v", d)
		}
	}
}
