package dsl

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/switchboard-dev/switchboard/internal/suggest"
	"golang.org/x/text/unicode/norm"
)

// Pos is a place in a source file. Line and Col are 1-based; Col counts
// characters (runes), not bytes.
type Pos struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Col    int    `json:"col"`
	Offset int    `json:"-"`
}

// MarshalText renders the position as "file:line:col".
func (p Pos) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Severity of a diagnostic. Only errors make a rule set unusable.
type Severity string

const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Diagnostic is one problem found in a rule set, at a position.
type Diagnostic struct {
	Pos      Pos      `json:"pos"`
	Severity Severity `json:"severity"`
	// Code is stable across releases, for editors and CI filters.
	Code string `json:"code"`
	// Message says what is wrong in plain words.
	Message string `json:"message"`
	// Hint suggests a fix when there is a likely one.
	Hint string `json:"hint,omitempty"`
}

// MarshalJSON gives editors the position as separate fields.
func (d Diagnostic) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		File     string   `json:"file"`
		Line     int      `json:"line"`
		Col      int      `json:"col"`
		Severity Severity `json:"severity"`
		Code     string   `json:"code"`
		Message  string   `json:"message"`
		Hint     string   `json:"hint,omitempty"`
	}{d.Pos.File, d.Pos.Line, d.Pos.Col, d.Severity, d.Code, d.Message, d.Hint})
}

// String formats the diagnostic as "file:line:col: message (hint)", the
// go vet convention.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.Pos.String())
	b.WriteString(": ")
	if d.Severity == Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(d.Message)
	if d.Hint != "" {
		b.WriteString("; ")
		b.WriteString(d.Hint)
	}
	return b.String()
}

// Diagnostic codes.
const (
	CodeSyntax          = "syntax"
	CodeTrigger         = "unknown-trigger"
	CodeDuration        = "bad-duration"
	CodeCondition       = "condition"
	CodeNotBool         = "not-boolean"
	CodeDuplicate       = "duplicate"
	CodeSegment         = "unknown-segment"
	CodePlaceholder     = "placeholder"
	CodeAlgorithm       = "unknown-algorithm"
	CodeAction          = "action"
	CodeUnknownGroup    = "unknown-group"
	CodeUnknownUser     = "unknown-user"
	CodeUnknownSkill    = "unknown-skill"
	CodeUnknownQueue    = "unknown-queue"
	CodeTeam            = "team"
	CodeHours           = "business-hours"
	CodeUnreachable     = "unreachable"
	CodeIO              = "io"
	CodeSegmentCycle    = "segment-cycle"
	CodeAgentOnlyField  = "agent-field"
	CodeSettablePath    = "set-path"
	CodeModifier        = "modifier"
	CodeNotifyRecipient = "notify-recipient"
	CodeTable           = "table"
)

// Diagnostics is a list of problems. It implements error.
type Diagnostics []Diagnostic

func (ds Diagnostics) Error() string {
	lines := make([]string, len(ds))
	for i, d := range ds {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// HasErrors reports whether any diagnostic is an error (not a warning).
func (ds Diagnostics) HasErrors() bool {
	return slices.ContainsFunc(ds, func(d Diagnostic) bool { return d.Severity == Error })
}

// Sort orders diagnostics by file, line, column, then message.
func (ds Diagnostics) Sort() {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Col, b.Pos.Col),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// diags collects diagnostics while compiling.
type diags struct{ list Diagnostics }

func (d *diags) errorf(pos Pos, code, hint, format string, args ...any) {
	d.list = append(d.list, Diagnostic{Pos: pos, Severity: Error, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint})
}

func (d *diags) warnf(pos Pos, code, hint, format string, args ...any) {
	d.list = append(d.list, Diagnostic{Pos: pos, Severity: Warning, Code: code, Message: fmt.Sprintf(format, args...), Hint: hint})
}

// didYouMean returns `did you mean "x"?` for the candidate closest to word,
// or "" when none is close enough to be a likely typo.
func didYouMean(word string, candidates []string) string {
	if s := suggest.Closest(word, candidates); s != "" {
		if norm.NFC.String(s) == norm.NFC.String(word) {
			return fmt.Sprintf("it looks like %q but is written with other Unicode characters (an accent apart from its letter, say); retype it, or save the files as NFC", s)
		}
		return fmt.Sprintf("did you mean %q?", s)
	}
	return ""
}

// quoteList renders words as `"a", "b" or "c"`.
func quoteList(words []string, conj string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	switch len(q) {
	case 0:
		return ""
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " " + conj + " " + q[len(q)-1]
}
