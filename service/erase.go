package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/switchboard-dev/switchboard/delivery"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/journal"
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
	// Pending is set when the erasure is committed and the live state
	// erased, but rewriting the stored history failed: it is tried again
	// after each snapshot and at the next start.
	Pending string `json:"pending,omitempty"`
}

// pendingErase marks, in the store's meta data, an erasure whose history
// is not rewritten yet, with the id of its record: a restart finishes it
// if the record was committed, and forgets it if not.
const pendingErase = "erase:"

// markAt separates, in a pending erasure's mark, its record's id from when
// it was marked (Unix ms); markStale is how old the mark of an erasure
// never committed must be before another instance removes it.
const (
	markAt    = "@"
	markStale = 5 * time.Minute
)

// EraseContact erases a contact's personal data (name, email, phone,
// custom attributes, message texts) from the live state, the log and the
// snapshots. Routing is left as it is: conversations keep their agents and
// their places in line. It returns once the data is gone from the
// database's files. Once the erasure is committed it runs to its end even
// if the client goes away.
func (s *Service) EraseContact(ctx context.Context, id string) (EraseResult, error) {
	s.eraseMu.Lock()
	defer s.eraseMu.Unlock()
	ctx = context.WithoutCancel(ctx)
	var nonce [8]byte
	rand.Read(nonce[:])
	recID := store.IDPrefix + "erase:" + hex.EncodeToString(nonce[:])
	// Marked first: a stop between the commit and the rewrite of history
	// leaves the mark, and the next start finishes the work.
	if err := s.cfg.Store.SetMeta(ctx, pendingErase+id, recID+markAt+strconv.FormatInt(time.Now().UnixMilli(), 10)); err != nil {
		return EraseResult{}, errNotStored
	}
	r := &request{erase: id, eraseID: recID, done: make(chan struct{}), start: time.Now()}
	if err := s.enqueue(ctx, r); err != nil {
		s.cfg.Store.SetMeta(ctx, pendingErase+id, "")
		return EraseResult{}, err
	}
	if r.err != nil {
		s.cfg.Store.SetMeta(ctx, pendingErase+id, "")
		return EraseResult{}, r.err
	}
	res := EraseResult{Contact: id, Record: r.seq}
	err := s.snap.do(ctx, func(ctx context.Context) error { return s.eraseHistory(ctx, id, r.seq, r.convs) })
	// The platform's feed reads what it has not sent yet again, erased.
	s.disp.Forget()
	if err != nil {
		s.log.Error("an erasure is committed but the stored history could not be rewritten yet; it is tried again after the next snapshot", "contact", id, "err", err)
		res.Pending = "the contact is erased from the live state and the erasure is recorded; rewriting the stored history failed (" + err.Error() + ") and is tried again after the next snapshot and at the next start"
	}
	return res, nil
}

// finishErasures completes the erasures a stop cut short. One that fails
// stays marked and is tried again after the next snapshot.
func (s *Service) finishErasures(ctx context.Context) {
	if !s.eraseMu.TryLock() {
		return // an erasure is under way: its own work finishes it
	}
	defer s.eraseMu.Unlock()
	pending, err := s.cfg.Store.Meta(ctx, pendingErase)
	if err != nil {
		s.log.Error("cannot read the pending erasures", "err", err)
		return
	}
	for key, mark := range pending {
		id := strings.TrimPrefix(key, pendingErase)
		recID, at, _ := strings.Cut(mark, markAt)
		rec, ok, err := s.cfg.Store.Get(ctx, recID)
		if err != nil {
			s.log.Error("cannot finish an erasure", "contact", id, "err", err)
			continue
		}
		if !ok {
			// The erasure was never committed (it was answered 503) or,
			// when instances share the store, may be committing now on
			// another: its mark goes once it is old.
			if ms, err := strconv.ParseInt(at, 10, 64); s.sh == nil || err != nil || time.Since(time.UnixMilli(ms)) > markStale {
				s.cfg.Store.SetMeta(ctx, key, "")
			}
			continue
		}
		s.log.Info("finishing an erasure a stop cut short", "contact", id, "record", rec.Seq)
		if err := s.eraseHistory(ctx, id, rec.Seq, nil); err != nil {
			s.log.Error("cannot finish an erasure; it is tried again after the next snapshot", "contact", id, "err", err)
		}
	}
}

// eraseHistory rewrites the log up to the erasure's record seq, and the
// snapshots before it. It first makes sure a snapshot after the erasure
// exists, so that a restart never replays the redacted events before it
// (their decisions could differ without the erased data). It runs on the
// snapshotter's goroutine, or before the service runs.
func (s *Service) eraseHistory(ctx context.Context, id string, seq int64, open []string) error {
	if s.snap.last.Load() < seq {
		if s.snap.committed.Load() < seq {
			s.snap.committed.Store(seq)
		}
		if err := s.snap.take(ctx); err != nil {
			return err
		}
	}
	e := &eraser{s: s, ctx: ctx, contact: id, convs: map[string]bool{}}
	for _, c := range open {
		e.convs[c] = true
	}
	if err := s.cfg.Store.Erase(ctx, id, seq, e); err != nil {
		return err
	}
	s.log.Info("contact erased", "contact", id, "record", seq, "records_rewritten", e.redacted)
	// Kept for good: a replay of the log (simulate --data) tells the
	// decisions that differ because data was erased from real differences.
	if err := s.cfg.Store.SetMeta(ctx, journal.ErasedKey+id, strconv.FormatInt(seq, 10)); err != nil {
		return err
	}
	return s.cfg.Store.SetMeta(ctx, pendingErase+id, "")
}

// eraser redacts one contact's records: its own events, and the texts of
// the actions on its conversations wherever they are.
type eraser struct {
	s        *Service
	ctx      context.Context
	contact  string
	convs    map[string]bool // the contact's conversations
	redacted int
}

// Learn collects the contact's conversations from its own records, so that
// the actions on them are found in any record, whatever comes first.
func (e *eraser) Learn(r store.Record) error {
	if len(r.Contacts) == 0 || r.Contacts[0] != e.contact {
		return nil
	}
	var ev struct {
		Conversation string `json:"conversation"`
	}
	json.Unmarshal(r.Event, &ev)
	var d struct {
		Conversation string `json:"conversation"`
	}
	json.Unmarshal(r.Decision, &d)
	for _, c := range []string{ev.Conversation, d.Conversation} {
		if c != "" {
			e.convs[c] = true
		}
	}
	return nil
}

func (e *eraser) RedactDelivery(d store.Delivery) ([]byte, error) {
	return delivery.Redact(d, func(data []byte) ([]byte, error) { return redactDecision(data, e.convs) })
}

func (e *eraser) Redact(r store.Record) ([]byte, []byte, error) {
	e.redacted++
	ev := r.Event
	if len(r.Contacts) > 0 && r.Contacts[0] == e.contact {
		var err error
		if ev, err = redactEvent(r.Event); err != nil {
			return nil, nil, err
		}
	}
	dec, err := redactDecision(r.Decision, e.convs)
	return ev, dec, err
}

func (e *eraser) Rewrite(in store.SnapshotInfo, data []byte) ([]byte, error) {
	rs, err := e.s.j.RuleSet(e.ctx, in.RuleSet)
	if err != nil {
		return nil, err
	}
	eng, err := engine.Restore(rs, data)
	if err != nil {
		return nil, err
	}
	eng.EraseContact(e.contact)
	return eng.Snapshot()
}

// personal are the fields of an event that hold personal data, by object.
var personal = map[string][]string{
	"contact": {"name", "email", "phone", "attrs"},
	"message": {"text"},
}

// deleteKeys removes keys from m whatever their case, as the decoder
// matches them.
func deleteKeys(m map[string]any, keys []string) {
	for k := range m {
		for _, p := range keys {
			if strings.EqualFold(k, p) {
				delete(m, k)
			}
		}
	}
}

// redactEvent removes the personal fields of a stored event.
func redactEvent(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return nil, err
	}
	for k, v := range ev {
		for obj, keys := range personal {
			if m, ok := v.(map[string]any); ok && strings.EqualFold(k, obj) {
				deleteKeys(m, keys)
			}
		}
	}
	return json.Marshal(ev)
}

// redactDecision replaces the texts of the actions on the contact's
// conversations, keeping the decision's shape and its keys' order.
func redactDecision(raw []byte, convs map[string]bool) ([]byte, error) {
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
