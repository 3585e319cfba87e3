package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/dsl"
)

// ReloadResult is the answer to a reload.
type ReloadResult struct {
	Version     string          `json:"version"`
	Previous    string          `json:"previous"`
	Changed     bool            `json:"changed"`
	Seq         int64           `json:"seq,omitempty"` // the reload's record in the log
	Diagnostics dsl.Diagnostics `json:"diagnostics,omitempty"`
	// Decision, when the new rules removed agents or groups that had
	// work, lets it go: an unassign from each agent removed, a cancel from
	// each line removed. The platform gets it like any decision.
	Decision json.RawMessage `json:"decision,omitempty"`
}

// ReloadNote says who reloaded and why. It is stored with the reload's
// record, for the rule set's history.
type ReloadNote struct {
	// By is who: a person's name as they gave it, or what reloaded
	// ("SIGHUP", "files changed", "serve").
	By string `json:"by,omitempty"`
	// Reason is why, in their words.
	Reason string `json:"reason,omitempty"`
	// Change is what changed, as the one who changed it describes it (the
	// console's table editor: the rows added, removed, changed and moved).
	Change json.RawMessage `json:"change,omitempty"`
}

// Limits of a note, so that the log holds history, not documents.
const (
	maxNoteText   = 500
	maxNoteChange = 256 << 10
)

func (n ReloadNote) check() error {
	for _, f := range []struct{ name, text string }{{"by", n.By}, {"reason", n.Reason}} {
		if at := plainText(f.text, f.name == "reason"); at >= 0 {
			return fmt.Errorf("%s holds a control character or a byte that is not UTF-8 (byte %d); write plain text", f.name, at+1)
		}
	}
	switch {
	case len(n.By) > maxNoteText:
		return fmt.Errorf("by is %d bytes long; keep it under %d", len(n.By), maxNoteText)
	case len(n.Reason) > maxNoteText:
		return fmt.Errorf("reason is %d bytes long; keep it under %d", len(n.Reason), maxNoteText)
	case len(n.Change) > maxNoteChange:
		return fmt.Errorf("change is %d bytes long; keep it under %d", len(n.Change), maxNoteChange)
	case len(n.Change) > 0 && !json.Valid(n.Change):
		return errors.New("change is not JSON")
	}
	return nil
}

// reloadBody is a reload record's event.
type reloadBody struct {
	Version  string `json:"version"`
	Previous string `json:"previous"`
	ReloadNote
}

// errReloadRefused is returned when the new rules do not compile.
var errReloadRefused = errors.New("the rules have errors; the running rules are kept")

// ErrReloadRefused is errReloadRefused, for callers outside the package.
var ErrReloadRefused = errReloadRefused

// Reload compiles the rule directory again and, if it is clean, swaps it
// in between two events: a record in the log, committed like an event,
// which carries note. With any diagnostic, or if the commit fails, the
// running rules stay.
func (s *Service) Reload(ctx context.Context, note ReloadNote) (ReloadResult, error) {
	return s.Publish(ctx, note, nil, nil)
}

// Publish runs write, which changes the rule set's files, and reloads,
// with no other reload in between. When the reload does not happen (the
// rules have errors, nothing changed, the commit failed), undo, which
// write returned, puts the files back as they were. Nothing is reloaded
// when write fails, or when verify, given the rule set as loaded, says it
// is not what was written (someone else changed the files meanwhile; they
// are left as they are). A nil write is a plain reload.
func (s *Service) Publish(ctx context.Context, note ReloadNote, write func() (undo func() error, err error), verify func(*dsl.RuleSet) error) (ReloadResult, error) {
	if s.cfg.Load == nil {
		return ReloadResult{}, errors.New("this service cannot reload its rules")
	}
	if err := note.check(); err != nil {
		return ReloadResult{}, err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	prev := *s.version.Load()
	undo := func() error { return nil }
	if write != nil {
		u, err := write()
		if err != nil {
			return ReloadResult{Version: prev, Previous: prev}, err
		}
		undo = u
	}
	res, err := s.reload(ctx, note, prev, verify)
	if errors.Is(err, errNotWritten) {
		return res, err
	}
	if write != nil && (err != nil || !res.Changed) {
		if uerr := undo(); uerr != nil {
			s.log.Error("publish: the files could not be put back after the reload did not happen", "err", uerr)
			return res, fmt.Errorf("%w; and the files could not be put back as they were: %v", err, uerr)
		}
	}
	return res, err
}

// errNotWritten: the files loaded are not those written.
var errNotWritten = errors.New("the files changed again before the service read them")

func (s *Service) reload(ctx context.Context, note ReloadNote, prev string, verify func(*dsl.RuleSet) error) (ReloadResult, error) {
	rs, ds := s.cfg.Load()
	if rs != nil && verify != nil {
		if err := verify(rs); err != nil {
			s.m.reloads.WithLabelValues("refused").Inc()
			return ReloadResult{Version: prev, Previous: prev, Diagnostics: ds}, fmt.Errorf("%w: %v", errNotWritten, err)
		}
	}
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
	r := &request{reload: rs, note: note, done: make(chan struct{}), start: time.Now()}
	if err := s.enqueue(ctx, r); err != nil {
		return ReloadResult{Version: prev, Previous: prev}, err
	}
	if r.err != nil {
		s.m.reloads.WithLabelValues("failed").Inc()
		return ReloadResult{Version: prev, Previous: prev}, r.err
	}
	s.m.reloads.WithLabelValues("reloaded").Inc()
	s.log.Info("rules reloaded", "version", rs.Version, "previous", prev, "record", r.seq, "by", note.By)
	if r.letGo != nil {
		s.log.Warn("the reload let work go: agents or groups that had it are gone", "record", r.seq, "decision", string(r.letGo))
	}
	return ReloadResult{Version: rs.Version, Previous: prev, Changed: true, Seq: r.seq, Diagnostics: ds, Decision: r.letGo}, nil
}

// plainText is the offset of the first byte of s that is not UTF-8 or is a
// control character (but for line breaks and tabs when multiline), or -1.
func plainText(s string, multiline bool) int {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return i
			}
		case multiline && (r == '\n' || r == '\r' || r == '\t'):
		case unicode.IsControl(r):
			return i
		}
	}
	return -1
}
