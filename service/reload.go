package service

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

// ReloadResult is the answer to a reload.
type ReloadResult struct {
	Version     string          `json:"version"`
	Previous    string          `json:"previous"`
	Changed     bool            `json:"changed"`
	Diagnostics dsl.Diagnostics `json:"diagnostics,omitempty"`
}

// errReloadRefused is returned when the new rules do not compile.
var errReloadRefused = errors.New("the rules have errors; the running rules are kept")

// Reload compiles the rule directory again and, if it is clean, swaps it
// in between two events: a record in the log, committed like an event.
// With any diagnostic, or if the commit fails, the running rules stay.
func (s *Service) Reload(ctx context.Context) (ReloadResult, error) {
	if s.cfg.Load == nil {
		return ReloadResult{}, errors.New("this service cannot reload its rules")
	}
	rs, ds := s.cfg.Load()
	prev := *s.version.Load()
	if rs == nil {
		s.m.reloads.WithLabelValues("refused").Inc()
		s.log.Warn("reload refused: the rules have errors", "diagnostics", len(ds))
		return ReloadResult{Version: prev, Previous: prev, Diagnostics: ds}, errReloadRefused
	}
	if rs.Version == prev {
		s.m.reloads.WithLabelValues("unchanged").Inc()
		return ReloadResult{Version: prev, Previous: prev, Diagnostics: ds}, nil
	}
	// The files are kept first, so that the log can name them; a rule set
	// stored but never switched to is harmless.
	if err := s.cfg.Store.SaveRuleSet(ctx, rs.Version, ruleSetFiles(rs)); err != nil {
		s.m.reloads.WithLabelValues("failed").Inc()
		return ReloadResult{Version: prev, Previous: prev}, errNotStored
	}
	r := &request{reload: rs, done: make(chan struct{}), start: time.Now()}
	if err := s.enqueue(ctx, r); err != nil {
		return ReloadResult{Version: prev, Previous: prev}, err
	}
	if r.err != nil {
		s.m.reloads.WithLabelValues("failed").Inc()
		return ReloadResult{Version: prev, Previous: prev}, r.err
	}
	s.m.reloads.WithLabelValues("reloaded").Inc()
	s.log.Info("rules reloaded", "version", rs.Version, "previous", prev, "record", r.seq)
	return ReloadResult{Version: rs.Version, Previous: prev, Changed: true, Diagnostics: ds}, nil
}
