package whatif

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// Current is the rule set the log ran last before t: the rules a changed
// mapping table is tried with.
func Current(ctx context.Context, st store.Store, j *journal.Journal, t time.Time) (*dsl.RuleSet, error) {
	last, err := st.SeqBefore(ctx, t)
	if err != nil {
		return nil, err
	}
	if last == 0 {
		return nil, ErrEmptyWindow
	}
	recs, err := st.Records(ctx, last-1, 1)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, ErrEmptyWindow
	}
	return j.RuleSet(ctx, recs[0].RuleSet)
}

// WithTable is rs with its mapping table replaced by table (or given
// one, if it had none), as a team lead edits it: diagnostics name table as given; the rows are named as the
// running table's are (mappings.csv:ROW (segment)), so that a row's matches
// before and after line up.
func WithTable(rs *dsl.RuleSet, table dsl.Source) (*dsl.RuleSet, dsl.Diagnostics) {
	src := rs.Sources
	src.Mappings = &table
	cand, ds := dsl.Build(src)
	if cand == nil || ds.HasErrors() {
		return nil, ds
	}
	named := dsl.MappingsCSV
	if ext := strings.ToLower(filepath.Ext(table.Name)); ext == ".yaml" || ext == ".yml" {
		named = dsl.MappingsYAML
	}
	src.Mappings = &dsl.Source{Name: named, Text: table.Text}
	cand, more := dsl.Build(src)
	if cand == nil {
		return nil, append(ds, more...)
	}
	return cand, ds
}
