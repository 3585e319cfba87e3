package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
)

// errNoContact: an erasure of a contact the service never saw.
var errNoContact = errors.New("no such contact")

// erasedText replaces erased text in stored decisions.
const erasedText = "[erased]"

// EraseResult is the answer to an erasure.
type EraseResult struct {
	Contact string `json:"contact"`
	Record  int64  `json:"record"` // the erasure's record in the log
}

// pendingErase marks, in the store's meta data, an erasure whose history
// is not rewritten yet: a restart finishes it.
const pendingErase = "erase:"

// EraseContact erases a contact's personal data (name, email, phone,
// custom attributes, message texts) from the live state, the log and the
// snapshots. Routing is left as it is: conversations keep their agents and
// their places in line. It returns once the data is gone from the
// database's files.
func (s *Service) EraseContact(ctx context.Context, id string) (EraseResult, error) {
	r := &request{erase: id, done: make(chan struct{}), start: time.Now()}
	if err := s.enqueue(ctx, r); err != nil {
		return EraseResult{}, err
	}
	if r.err != nil {
		return EraseResult{}, r.err
	}
	res := EraseResult{Contact: id, Record: r.seq}
	if err := s.cfg.Store.SetMeta(ctx, pendingErase+id, strconv.FormatInt(r.seq, 10)); err != nil {
		return res, err
	}
	err := s.snap.do(ctx, func(ctx context.Context) error { return s.eraseHistory(ctx, id, r.seq) })
	return res, err
}

// finishErasures completes the erasures a stop cut short.
func (s *Service) finishErasures(ctx context.Context) error {
	pending, err := s.cfg.Store.Meta(ctx, pendingErase)
	if err != nil {
		return err
	}
	for key, v := range pending {
		seq, _ := strconv.ParseInt(v, 10, 64)
		id := strings.TrimPrefix(key, pendingErase)
		s.log.Info("finishing an erasure a stop cut short", "contact", id)
		if err := s.eraseHistory(ctx, id, seq); err != nil {
			return fmt.Errorf("erasing contact %q: %w", id, err)
		}
	}
	return nil
}

// eraseHistory rewrites the log and the snapshots for an erasure recorded
// at record seq. It first makes sure a snapshot after the erasure exists,
// so that a restart never replays the redacted events before it (their
// decisions could differ without the erased data). It runs on the
// snapshotter's goroutine, or before the service runs.
func (s *Service) eraseHistory(ctx context.Context, id string, seq int64) error {
	if s.snap.last.Load() < seq {
		if s.snap.committed.Load() < seq {
			s.snap.committed.Store(seq)
		}
		if err := s.snap.take(ctx); err != nil {
			return err
		}
	}
	convs := map[string]bool{}
	redact := func(r store.Record) ([]byte, []byte, error) {
		own := len(r.Contacts) > 0 && r.Contacts[0] == id
		ev := r.Event
		if own {
			var err error
			if ev, err = redactEvent(r.Event, convs); err != nil {
				return nil, nil, err
			}
		}
		dec, err := redactDecision(r.Decision, convs, own)
		return ev, dec, err
	}
	rewrite := func(in store.SnapshotInfo, data []byte) ([]byte, error) {
		rs, err := s.j.RuleSet(ctx, in.RuleSet)
		if err != nil {
			return nil, err
		}
		eng, err := engine.Restore(rs, data)
		if err != nil {
			return nil, err
		}
		eng.EraseContact(id)
		return eng.Snapshot()
	}
	if err := s.cfg.Store.Erase(ctx, id, redact, rewrite); err != nil {
		return err
	}
	s.log.Info("contact erased", "contact", id, "record", seq)
	return s.cfg.Store.SetMeta(ctx, pendingErase+id, "")
}

// redactEvent removes the personal fields of a stored event, and notes its
// conversation.
func redactEvent(raw []byte, convs map[string]bool) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return nil, err
	}
	if c, ok := ev["conversation"].(string); ok {
		convs[c] = true
	}
	if c, ok := ev["contact"].(map[string]any); ok {
		for _, k := range []string{"name", "email", "phone", "attrs"} {
			delete(c, k)
		}
	}
	if m, ok := ev["message"].(map[string]any); ok {
		delete(m, "text")
	}
	return json.Marshal(ev)
}

// redactDecision replaces the texts of the actions on the contact's
// conversations, keeping the decision's shape and its keys' order.
func redactDecision(raw []byte, convs map[string]bool, own bool) ([]byte, error) {
	var d struct {
		Event        string            `json:"event"`
		Conversation *string           `json:"conversation"`
		Actions      []json.RawMessage `json:"actions"`
		Rules        string            `json:"rules,omitempty"`
	}
	if len(bytes.TrimSpace(raw)) == 0 || string(raw) == "{}" {
		return raw, nil
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, err
	}
	if own && d.Conversation != nil {
		convs[*d.Conversation] = true
	}
	for i, a := range d.Actions {
		var conv struct {
			Conversation string `json:"conversation"`
			Path         string `json:"path"`
		}
		json.Unmarshal(a, &conv)
		if !convs[conv.Conversation] {
			continue
		}
		personalSet := conv.Path == "contact.name" || conv.Path == "contact.email" || conv.Path == "contact.phone" || strings.HasPrefix(conv.Path, "contact.attrs.")
		out, err := rewriteObject(a, func(key string, v json.RawMessage) json.RawMessage {
			if key == "text" || key == "value" && personalSet {
				return json.RawMessage(`"` + erasedText + `"`)
			}
			return v
		})
		if err != nil {
			return nil, err
		}
		d.Actions[i] = out
	}
	return json.Marshal(d)
}

// rewriteObject rewrites a JSON object's values in place, keeping its keys
// in order.
func rewriteObject(raw []byte, fn func(key string, v json.RawMessage) json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(fn(key, v))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
