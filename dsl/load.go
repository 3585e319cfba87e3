package dsl

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
// lexical order, team.yaml and mappings.csv (or mappings.yaml) when there
// are.
func Load(dir string) (*RuleSet, Diagnostics) { return LoadStrict(dir, false) }

// LoadStrict is Load; with strict, a mapping table may only use the custom
// attributes team.yaml declares.
func LoadStrict(dir string, strict bool) (*RuleSet, Diagnostics) {
	return LoadWith(dir, Options{Strict: strict})
}

// Options are what a rule set is checked against beyond its own files.
type Options struct {
	// Strict makes a mapping table use only the custom attributes
	// team.yaml declares.
	Strict bool
	// Endpoints are the webhook endpoints of the service's configuration,
	// which notify webhook NAME may name; nil when not known (no
	// configuration given), and then NAME is not checked.
	Endpoints []string
}

// LoadWith is Load with options.
func LoadWith(dir string, o Options) (*RuleSet, Diagnostics) {
	switch info, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return nil, Diagnostics{{Pos: Pos{File: dir}, Severity: Error, Code: CodeIO,
			Message: "the rule set directory does not exist"}}
	case err != nil:
		return nil, Diagnostics{ioError(dir, err)}
	case !info.IsDir():
		return nil, Diagnostics{{Pos: Pos{File: dir}, Severity: Error, Code: CodeIO,
			Message: "is a file; a rule set is a directory", Hint: "name the directory that holds it: " + filepath.Dir(dir)}}
	}
	files, err := RuleFiles(dir)
	if err != nil {
		return nil, Diagnostics{ioError(dir, err)}
	}
	if len(files) == 0 && tableFile(dir) == "" {
		return nil, Diagnostics{{Pos: Pos{File: dir}, Severity: Error, Code: CodeIO, Message: "no .rules files and no mappings.csv in this directory"}}
	}
	return loadFiles(dir, files, o)
}

// IsRuleSet reports whether dir holds a rule set: .rules files or a table.
func IsRuleSet(dir string) bool {
	files, _ := RuleFiles(dir)
	return len(files) > 0 || tableFile(dir) != ""
}

// tableFile returns the path of dir's mapping table, or "".
func tableFile(dir string) string {
	for _, name := range []string{MappingsCSV, MappingsYAML} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// LoadFiles compiles the given rule files as one rule set, with dir's
// team.yaml and mapping table when there are.
func LoadFiles(dir string, paths []string) (*RuleSet, Diagnostics) {
	return loadFiles(dir, paths, Options{})
}

// LoadFilesWith is LoadFiles with options.
func LoadFilesWith(dir string, paths []string, o Options) (*RuleSet, Diagnostics) {
	return loadFiles(dir, paths, o)
}

func loadFiles(dir string, paths []string, o Options) (*RuleSet, Diagnostics) {
	set, all := readSources(dir, paths, o)
	rs, ds := Build(set)
	all = append(all, ds...)
	all.Sort()
	if all.HasErrors() {
		return nil, all
	}
	rs.Dir = dir
	return rs, all
}

// ReadDir reads the sources of the rule set in dir as Load does (every
// *.rules file, team.yaml, the mapping table), without compiling them: for
// a caller that changes one before Build, as the console's table editor
// does. The diagnostics are the files that could not be read.
func ReadDir(dir string, o Options) (Sources, Diagnostics) {
	paths, err := RuleFiles(dir)
	if err != nil {
		return Sources{Strict: o.Strict, Endpoints: o.Endpoints}, Diagnostics{ioError(dir, err)}
	}
	return readSources(dir, paths, o)
}

func readSources(dir string, paths []string, o Options) (Sources, Diagnostics) {
	var all Diagnostics
	set := Sources{Strict: o.Strict, Endpoints: o.Endpoints}
	read := func(p string) *Source {
		data, err := os.ReadFile(p)
		if err != nil {
			all = append(all, ioError(p, err))
			return nil
		}
		return &Source{Name: p, Text: data}
	}
	if p := filepath.Join(dir, TeamFile); fileExists(p) {
		set.Team = read(p)
	}
	if _, err := os.Stat(filepath.Join(dir, MappingsCSV)); err == nil {
		if fileExists(filepath.Join(dir, MappingsYAML)) {
			all = append(all, Diagnostic{Pos: Pos{File: filepath.Join(dir, MappingsYAML), Line: 1, Col: 1}, Severity: Error, Code: CodeTable,
				Message: "there are both mappings.csv and mappings.yaml", Hint: "keep one table"})
		}
	}
	if p := tableFile(dir); p != "" {
		set.Mappings = read(p)
	}
	for _, p := range paths {
		if src := read(p); src != nil {
			set.Rules = append(set.Rules, *src)
		}
	}
	return set, all
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Source is a file's name, as diagnostics will show it, and its content.
type Source struct {
	Name string
	Text []byte
}

// Sources are a rule set's files.
type Sources struct {
	Rules    []Source // *.rules, in order
	Team     *Source  // team.yaml, if any
	Mappings *Source  // mappings.csv or mappings.yaml, if any
	// Strict makes a mapping table use only the custom attributes team.yaml
	// declares (as listing attributes: there does).
	Strict bool
	// Endpoints, when not nil, are the webhook endpoints rules may name.
	// They are the service's, not the rule set's: not part of its version.
	Endpoints []string
}

// Build parses and compiles a rule set from its sources. Every problem is
// reported, and the rule set is nil if any of them is an error.
func Build(set Sources) (*RuleSet, Diagnostics) {
	var all Diagnostics
	var t *Team
	teamOK := true
	if set.Team != nil {
		var ds Diagnostics
		t, ds = ParseTeam(set.Team.Name, set.Team.Text)
		all = append(all, ds...)
		teamOK = !ds.HasErrors()
	}
	files := make([]*File, 0, len(set.Rules))
	for _, src := range set.Rules {
		f, ds := ParseFile(src.Name, string(src.Text))
		all = append(all, ds...)
		files = append(files, f)
	}
	// A team that failed to load is left out (t is nil), so that its users
	// are not all reported as unknown; the rules are still checked.
	rs, ds := compile(files, t, set)
	all = append(all, ds...)
	all.Sort()
	if !teamOK || all.HasErrors() {
		return nil, all
	}
	rs.Version = set.Version()
	rs.Sources = set
	return rs, all
}

// Files lists the sources, team and table included, by base name.
func (set Sources) Files() []Source {
	var out []Source
	for _, s := range set.Rules {
		out = append(out, Source{Name: filepath.Base(s.Name), Text: s.Text})
	}
	for _, s := range []*Source{set.Team, set.Mappings} {
		if s != nil {
			out = append(out, Source{Name: filepath.Base(s.Name), Text: s.Text})
		}
	}
	return out
}

// Version is a content hash of the sources: the same files give the same
// version wherever they live.
func (set Sources) Version() string {
	h := sha256.New()
	for _, f := range set.Files() {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Name, len(f.Text))
		h.Write(f.Text)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func ioError(path string, err error) Diagnostic {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return Diagnostic{Pos: Pos{File: path}, Severity: Error, Code: CodeIO, Message: "cannot read: " + err.Error()}
}
