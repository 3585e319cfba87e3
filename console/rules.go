package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/switchboard-dev/switchboard/dsl"
)

// ruleFile is a file of a rule set, as GET /v1/rules gives it.
type ruleFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// ruleVersion is one reload of the log, as GET /v1/rules/versions lists it.
type ruleVersion struct {
	Seq      int64           `json:"seq"`
	At       time.Time       `json:"at"`
	Version  string          `json:"version"`
	Previous string          `json:"previous"`
	By       string          `json:"by"`
	Reason   string          `json:"reason"`
	Change   json.RawMessage `json:"change"`
}

// historyLimit is how many versions the rules page lists.
const historyLimit = 100

// diskFile is a file of the rule set's directory with what check says of
// it.
type diskFile struct {
	Name  string
	Lines []diskLine
	Notes []note
	Bad   int // errors
}

type diskLine struct {
	N     int
	Text  string
	Notes []note
}

// rulesView is what the rules page shows.
type rulesView struct {
	Running  string
	Disk     string // the version of the files on disk; "" when they do not build
	Files    []diskFile
	Others   []note // diagnostics of no file shown
	Errors   int
	Versions []ruleVersion
	Error    string
}

// Described is a version's change, line by line.
func (v ruleVersion) Described() []string { return describeChange(v.Change) }

// rules shows the rule set: the files on disk with what check says of
// them, and the versions the log ran, each comparable with another.
func (c *Console) rules(w http.ResponseWriter, r *http.Request, v *view) {
	v.Title = "Rules"
	rv := &rulesView{}
	var running struct {
		Version string `json:"version"`
	}
	var errs []string
	if _, err := c.api(r.Context(), "GET", "/v1/rules", nil, &running); err != nil {
		errs = append(errs, "the running rules: "+err.Error())
	}
	rv.Running = running.Version
	var hist struct {
		Versions []ruleVersion `json:"versions"`
	}
	if _, err := c.api(r.Context(), "GET", fmt.Sprintf("/v1/rules/versions?limit=%d", historyLimit), nil, &hist); err != nil {
		errs = append(errs, "the history: "+err.Error())
	}
	rv.Versions = hist.Versions
	// The rules the log starts on were not reloaded: they have no record.
	if hist.Versions != nil && len(rv.Versions) < historyLimit {
		first := rv.Running
		if n := len(rv.Versions); n > 0 {
			first = rv.Versions[n-1].Previous
		}
		if first != "" {
			rv.Versions = append(rv.Versions, ruleVersion{Version: first, Reason: "The rules the log starts on (or the oldest part of it that retention keeps)."})
		}
	}
	if len(errs) > 0 {
		rv.Error = "The service did not answer for " + strings.Join(errs, "; ")
	}
	if c.cfg.Rules != "" {
		c.diskFiles(rv)
	}
	v.Data = rv
	c.render(w, r, http.StatusOK, "rules", v)
}

// diskFiles reads the rule set's directory and checks it as a reload
// would.
func (c *Console) diskFiles(rv *rulesView) {
	rs, ds := dsl.LoadWith(c.cfg.Rules, c.cfg.Options)
	if rs != nil {
		rv.Disk = rs.Version
	}
	paths, _ := dsl.RuleFiles(c.cfg.Rules)
	for _, name := range []string{dsl.TeamFile, dsl.MappingsCSV, dsl.MappingsYAML} {
		if p := filepath.Join(c.cfg.Rules, name); fileExists(p) {
			paths = append(paths, p)
		}
	}
	byPath := map[string]*diskFile{}
	for _, p := range paths {
		f := diskFile{Name: filepath.Base(p)}
		data, err := os.ReadFile(p)
		if err != nil {
			f.Notes = append(f.Notes, note{Text: "cannot read: " + err.Error()})
		}
		for i, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			f.Lines = append(f.Lines, diskLine{N: i + 1, Text: l})
		}
		rv.Files = append(rv.Files, f)
	}
	for i, p := range paths {
		byPath[p] = &rv.Files[i]
	}
	for _, d := range ds {
		n := note{Warning: d.Severity == dsl.Warning, Text: d.String()}
		if !n.Warning {
			rv.Errors++
		}
		f := byPath[d.Pos.File]
		if f == nil {
			rv.Others = append(rv.Others, n)
			continue
		}
		if !n.Warning {
			f.Bad++
		}
		f.Notes = append(f.Notes, n)
		if d.Pos.Line >= 1 && d.Pos.Line <= len(f.Lines) {
			l := &f.Lines[d.Pos.Line-1]
			l.Notes = append(l.Notes, n)
		}
	}
}

// fileDiff is one file's difference between two rule sets.
type fileDiff struct {
	Name  string
	State string // "changed", "added", "removed", "unchanged"
	Lines []diffLine
}

type diffLine struct {
	Kind string // "add", "del", "hunk", ""
	Text string
}

// rulesDiff shows what changed between two rule set versions, file by
// file.
func (c *Console) rulesDiff(w http.ResponseWriter, r *http.Request, v *view) {
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	v.Title = "Rules: what changed"
	if from == "" || to == "" {
		c.fail(w, r, http.StatusBadRequest, "Choose two rule set versions to compare (from and to), on the rules page.")
		return
	}
	for _, v := range []string{from, to} {
		if !isVersion(v) {
			c.fail(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a rule set version: versions are 16 letters and digits (0-9, a-f), as the rules page lists them.", v))
			return
		}
	}
	files := func(version string) (map[string]string, error) {
		var rs struct {
			Files []ruleFile `json:"files"`
		}
		if _, err := c.api(r.Context(), "GET", "/v1/rules/versions/"+url.PathEscape(version), nil, &rs); err != nil {
			return nil, err
		}
		out := map[string]string{}
		for _, f := range rs.Files {
			out[f.Name] = f.Text
		}
		return out, nil
	}
	a, err := files(from)
	if err != nil {
		c.fail(w, r, http.StatusNotFound, err.Error())
		return
	}
	b, err := files(to)
	if err != nil {
		c.fail(w, r, http.StatusNotFound, err.Error())
		return
	}
	var names []string
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var diffs []fileDiff
	for _, n := range names {
		before, inA := a[n]
		after, inB := b[n]
		fd := fileDiff{Name: n, State: "changed"}
		switch {
		case !inA:
			fd.State = "added"
		case !inB:
			fd.State = "removed"
		case before == after:
			fd.State = "unchanged"
		}
		if fd.State != "unchanged" {
			fd.Lines, err = unified(n, from, to, before, after)
			if err != nil {
				c.fail(w, r, http.StatusInternalServerError, err.Error())
				return
			}
		}
		diffs = append(diffs, fd)
	}
	v.Data = map[string]any{"From": from, "To": to, "Files": diffs}
	c.render(w, r, http.StatusOK, "diff", v)
}

// isVersion says whether s is a rule set version: 16 hexadecimal digits.
func isVersion(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// unified is a unified diff of a file, line by line.
func unified(name, from, to, a, b string) ([]diffLine, error) {
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b),
		FromFile: from + "/" + name, ToFile: to + "/" + name, Context: 3,
	})
	if err != nil {
		return nil, errors.New("the difference could not be computed: " + err.Error())
	}
	var out []diffLine
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if i < 2 {
			continue // the ---/+++ header: the page says which versions
		}
		k := ""
		switch {
		case strings.HasPrefix(l, "+"):
			k = "add"
		case strings.HasPrefix(l, "-"):
			k = "del"
		case strings.HasPrefix(l, "@@"):
			k = "hunk"
		}
		out = append(out, diffLine{Kind: k, Text: l})
	}
	return out, nil
}
