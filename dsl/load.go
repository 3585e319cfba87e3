package dsl

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// TeamFile is the name of the team file in a rule set directory.
const TeamFile = "team.yaml"

// RuleFiles lists the *.rules files of dir in lexical order.
func RuleFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.rules"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}

// Load reads and compiles the rule set in dir: every *.rules file, in
// lexical order, and team.yaml when there is one.
func Load(dir string) (*RuleSet, Diagnostics) {
	files, err := RuleFiles(dir)
	if err != nil {
		return nil, Diagnostics{ioError(dir, err)}
	}
	if len(files) == 0 {
		return nil, Diagnostics{{Pos: Pos{File: dir}, Severity: Error, Code: CodeIO, Message: "no .rules files in this directory"}}
	}
	return LoadFiles(dir, files)
}

// LoadFiles compiles the given rule files as one rule set, with dir's
// team.yaml when there is one.
func LoadFiles(dir string, paths []string) (*RuleSet, Diagnostics) {
	var all Diagnostics
	var team *Source
	p := filepath.Join(dir, TeamFile)
	switch data, err := os.ReadFile(p); {
	case err == nil:
		team = &Source{Name: p, Text: data}
	case !errors.Is(err, fs.ErrNotExist):
		all = append(all, ioError(p, err))
	}
	var sources []Source
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			all = append(all, ioError(p, err))
			continue
		}
		sources = append(sources, Source{Name: p, Text: data})
	}
	rs, ds := Build(sources, team)
	all = append(all, ds...)
	all.Sort()
	if all.HasErrors() {
		return nil, all
	}
	rs.Dir = dir
	return rs, all
}

// Source is a file's name, as diagnostics will show it, and its content.
type Source struct {
	Name string
	Text []byte
}

// Build parses and compiles rule files, in the order given, and a team
// (nil for none) into one rule set. Every problem is reported, and the rule
// set is nil if any of them is an error.
func Build(rules []Source, team *Source) (*RuleSet, Diagnostics) {
	var all Diagnostics
	var t *Team
	teamOK := true
	if team != nil {
		var ds Diagnostics
		t, ds = ParseTeam(team.Name, team.Text)
		all = append(all, ds...)
		teamOK = !ds.HasErrors()
	}
	files := make([]*File, 0, len(rules))
	for _, src := range rules {
		f, ds := ParseFile(src.Name, string(src.Text))
		all = append(all, ds...)
		files = append(files, f)
	}
	// A team that failed to load is left out (t is nil), so that its users
	// are not all reported as unknown; the rules are still checked.
	rs, ds := Compile(files, t)
	all = append(all, ds...)
	all.Sort()
	if !teamOK || all.HasErrors() {
		return nil, all
	}
	return rs, all
}

func ioError(path string, err error) Diagnostic {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return Diagnostic{Pos: Pos{File: path}, Severity: Error, Code: CodeIO, Message: "cannot read: " + err.Error()}
}
