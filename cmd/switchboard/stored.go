package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// openLog opens a service's database to read its log, beside a running
// service if need be.
func openLog(path string) (store.Store, *journal.Journal, error) {
	ctx := context.Background()
	var st store.Store
	var err error
	if isPostgres(path) {
		st, err = store.ReadPostgres(ctx, path)
	} else {
		st, err = store.OpenSQLiteReadOnly(ctx, path)
	}
	if err != nil {
		return nil, nil, err
	}
	meta, err := st.Meta(ctx, journal.SeedKey)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	seed, _ := strconv.ParseUint(meta[journal.SeedKey], 10, 64)
	return st, journal.New(st, nil, seed), nil
}

// simulateStored replays a service's whole log (as much as retention
// left) and prints the decision of every event as the replay gives it. A
// decision that differs from the stored one is reported: the replay must
// reproduce what the service decided.
func simulateStored(path string, quiet bool, stdout, stderr io.Writer) int {
	st, j, err := openLog(path)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard simulate: %v\n", err)
		return 1
	}
	defer st.Close()
	meta, err := st.Meta(context.Background(), journal.ErasedKey)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard simulate: %s: %v\n", path, err)
		return 1
	}
	erased := map[string]int64{}
	for k, v := range meta {
		erased[strings.TrimPrefix(k, journal.ErasedKey)], _ = strconv.ParseInt(v, 10, 64)
	}
	w := bufio.NewWriterSize(stdout, 64*1024)
	n, differ, redacted := 0, 0, 0
	state, err := j.Load(context.Background(), journal.Options{FromStart: true, Each: func(r store.Record, d []byte) error {
		if d == nil {
			return nil // a reload that let nothing go, a prune or an erasure
		}
		w.Write(d)
		w.WriteByte('\n')
		if r.Type != store.TypeReload {
			n++ // events; a reload's decision is the work it let go
		}
		if string(d) != string(r.Decision) && journal.Erased(r, erased) {
			redacted++ // its data was erased: not a difference of the replay
		} else if string(d) != string(r.Decision) {
			differ++
			fmt.Fprintf(stderr, "%s: event %s (record %d): the replay decided\n  %s\nthe service decided\n  %s\n", path, r.ID, r.Seq, d, r.Decision)
		}
		return nil
	}})
	w.Flush()
	if err != nil {
		fmt.Fprintf(stderr, "switchboard simulate: %s: %v\n", path, err)
		return 1
	}
	if state.FromSnapshot > 0 && !quiet {
		fmt.Fprintf(stderr, "records up to %d were pruned: replayed from the snapshot there\n", state.FromSnapshot)
	}
	if !quiet {
		writeSummary(stderr, n, 0, state.Engine.Stats())
		if redacted > 0 {
			fmt.Fprintf(stderr, "%d decisions differ where personal data was erased (their texts, or the data they were decided on)\n", redacted)
		}
	}
	if differ > 0 {
		fmt.Fprintf(stderr, "%d decisions differ from the stored ones\n", differ)
		return 1
	}
	return 0
}

// explainStored explains one event of a service's log as the service
// decided it.
func explainStored(path, id string, asJSON bool, stdout, stderr io.Writer) int {
	st, j, err := openLog(path)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard explain: %v\n", err)
		return 1
	}
	defer st.Close()
	ctx := context.Background()
	rec, ok, err := st.Get(ctx, id)
	if err != nil {
		fmt.Fprintf(stderr, "switchboard explain: %s: %v\n", path, err)
		return 1
	}
	if !ok {
		msg := fmt.Sprintf("no event %q in %s", id, path)
		if p, err := st.Pruned(ctx); err == nil && p.Through > 0 {
			msg += fmt.Sprintf("; events decided before %s were pruned by retention", p.Before.Format("2006-01-02T15:04:05Z07:00"))
		}
		fmt.Fprintf(stderr, "switchboard explain: %s\n", msg)
		return 1
	}
	trace, err := j.Explain(ctx, rec)
	if errors.Is(err, journal.ErrNotEvent) {
		fmt.Fprintf(stderr, "switchboard explain: %s is a %s record the service made, not an event\n", id, rec.Type)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "switchboard explain: %s: %v\n", path, err)
		return 1
	}
	printTrace(stdout, trace, asJSON)
	return 0
}
