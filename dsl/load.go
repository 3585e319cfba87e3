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
	team, ds := LoadTeam(dir)
	all = append(all, ds...)
	var files []*File
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			all = append(all, ioError(p, err))
			continue
		}
		f, ds := ParseFile(p, string(src))
		all = append(all, ds...)
		files = append(files, f)
	}
	if all.HasErrors() {
		// Still compile what parsed, to report every problem at once; a team
		// that failed to load is left out so its users are not all flagged.
		_, more := Compile(files, team)
		all = append(all, more...)
		all.Sort()
		return nil, all
	}
	rs, ds := Compile(files, team)
	all = append(all, ds...)
	all.Sort()
	if rs != nil {
		rs.Dir = dir
	}
	return rs, all
}

// LoadTeam reads dir/team.yaml. A missing file is no team, not an error.
func LoadTeam(dir string) (*Team, Diagnostics) {
	p := filepath.Join(dir, TeamFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, Diagnostics{ioError(p, err)}
	}
	return ParseTeam(p, data)
}

func ioError(path string, err error) Diagnostic {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return Diagnostic{Pos: Pos{File: path}, Severity: Error, Code: CodeIO, Message: "cannot read: " + err.Error()}
}
