package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// RuleVersion is one switch of rule set in the log: a reload, with who
// made it and why.
type RuleVersion struct {
	Seq      int64     `json:"seq"` // the reload's record
	At       time.Time `json:"at"`  // when the service switched
	Version  string    `json:"version"`
	Previous string    `json:"previous,omitempty"`
	ReloadNote
}

// Journal reads the service's log as the service decided it: for what-if
// replays beside the service.
func (s *Service) Journal() *journal.Journal { return s.j }

// getRules is the rule set the service runs: its version and files.
func (s *Service) getRules(w http.ResponseWriter, r *http.Request) {
	v := *s.version.Load()
	files, err := s.cfg.Store.RuleSet(r.Context(), v)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Version string              `json:"version"`
		Files   []store.RuleSetFile `json:"files"`
	}{v, files})
}

// getRuleVersions lists the reloads in the log, newest first: the rule
// set's history, as far back as retention keeps the log. Page with
// ?before=SEQ (the last seq of a page).
func (s *Service) getRuleVersions(w http.ResponseWriter, r *http.Request) {
	before, ok := seqParam(w, r.URL.Query().Get("before"), "before")
	if !ok {
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	recs, err := s.cfg.Store.Reloads(r.Context(), before, limit)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	out := struct {
		Running  string        `json:"running"`
		Versions []RuleVersion `json:"versions"`
	}{Running: *s.version.Load(), Versions: []RuleVersion{}}
	for _, rec := range recs {
		out.Versions = append(out.Versions, ruleVersion(rec))
	}
	writeJSON(w, http.StatusOK, out)
}

// ruleVersion reads a reload record. Records written before reloads had
// notes carry only the versions.
func ruleVersion(rec store.Record) RuleVersion {
	var b reloadBody
	json.Unmarshal(rec.Event, &b)
	v := RuleVersion{Seq: rec.Seq, At: rec.Clock.UTC(), Version: rec.RuleSet, Previous: b.Previous, ReloadNote: b.ReloadNote}
	if v.Previous == v.Version {
		v.Previous = ""
	}
	return v
}

// getRuleVersion is a stored rule set's files.
func (s *Service) getRuleVersion(w http.ResponseWriter, r *http.Request) {
	v := r.PathValue("version")
	files, err := s.cfg.Store.RuleSet(r.Context(), v)
	switch {
	case errors.Is(err, store.ErrNoRuleSet):
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no rule set %q is stored; GET /v1/rules/versions lists the versions the log ran", v), Field: "version"})
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	default:
		writeJSON(w, http.StatusOK, struct {
			Version string              `json:"version"`
			Files   []store.RuleSetFile `json:"files"`
		}{v, files})
	}
}
