package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// A conversation's timeline: the records of the log that concern it, found
// without reading the whole log. The store has no index by conversation,
// so the search starts where the conversation starts and reads a bounded
// stretch of the log from there.

// timelineWindow is how many records of the log one request may read past
// where it starts, when it cannot tell the conversation's records from its
// contact's. A variable so that tests can shrink it.
var timelineWindow = 10000

// timelineBatch is how many records are asked of the store at a time.
const timelineBatch = 256

// Why reading a timeline stopped (the answer's "stopped").
const (
	stopClosed = "closed" // the conversation's closing record was read
	stopLimit  = "limit"  // limit records were found
	stopWindow = "window" // timelineWindow records of the log were read
	stopEnd    = "end"    // the end of the log was reached
)

// timelineItem is one record of a conversation: the decision as the
// cursor gives it, and the event as it was stored.
type timelineItem struct {
	streamed
	Body json.RawMessage `json:"body"`
}

// timelineAnswer is GET /v1/conversations/{id}/events.
type timelineAnswer struct {
	Conversation string         `json:"conversation"`
	Contact      string         `json:"contact,omitempty"`
	Events       []timelineItem `json:"events"`
	From         int64          `json:"from"`    // records after this seq were read
	Through      int64          `json:"through"` // up to and including this seq
	// Earlier: the conversation has, or may have, records at or before
	// From (an earlier page, or a start that was not found).
	Earlier bool   `json:"earlier"`
	Closed  bool   `json:"closed"`  // its closing record is among Events
	More    bool   `json:"more"`    // stopped before the end: continue with after=Next
	Next    int64  `json:"next"`    // pass as after for the next page (or, when open, for what comes later)
	Stopped string `json:"stopped"` // closed, limit, window or end
	Window  int    `json:"window"`  // the most records of the log one request reads
}

// place is where a conversation's records are in the log.
type place struct {
	contact string // its contact; "" when it cannot be told
	start   int64  // its records are after this seq
	exact   bool   // none is at or before start
}

// getConversationEvents lists the records concerning a conversation, in
// log order: its messages, its closing, and the records of other events
// whose decisions touched it (an agent.status that placed it from a
// waiting line, a tick whose timer fired for it).
//
// The search starts just before the conversation: for an open one, the
// last record decided before it was created; else its opening event,
// when the conversation is named after it; else ?event=ID, any event of
// the conversation, and the log from timelineWindow/2 records before it.
// ?after=SEQ starts after that record instead (the next page).
//
// The work is bounded: reading stops at the conversation's closing record,
// at limit records (?limit=, 100 by default), or at the end of the log.
// When the contact is known and the log's end is within timelineWindow
// records, the contact's records are read (Store.Concerning, whose scan
// then covers at most that stretch); otherwise at most timelineWindow
// records of the log are read, and "more" says to continue with
// after=next.
func (s *Service) getConversationEvents(w http.ResponseWriter, r *http.Request) {
	id, q := r.PathValue("id"), r.URL.Query()
	after, ok := seqParam(w, q.Get("after"), "after")
	if !ok {
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	p, ok := s.locate(r.Context(), w, id, q.Get("event"))
	if !ok {
		return
	}
	if q.Has("after") {
		p.exact = p.exact && after <= p.start
		p.start = after
	}
	out, err := s.readTimeline(r.Context(), id, p, limit)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// locate finds where a conversation starts in the log and its contact;
// false once it has answered (404, or 503 when the store failed).
func (s *Service) locate(ctx context.Context, w http.ResponseWriter, id, event string) (place, bool) {
	var found []place // exact starts: the open conversation's, its opening event's
	open, ok := s.openStart(ctx, w, id)
	if !ok {
		return place{}, false
	}
	if open != nil {
		found = append(found, *open)
	}
	named, isNamed, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return place{}, false
	}
	if isNamed && opens(named, id) {
		found = append(found, place{contact: contactOf(named, id), start: named.Seq - 1, exact: true})
	}
	if event != "" {
		ev, isEvent, err := s.cfg.Store.Get(ctx, event)
		switch {
		case err != nil:
			writeErr(w, http.StatusServiceUnavailable, err)
			return place{}, false
		case !isEvent:
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no event %q is stored; pass in event the id of an event of conversation %q, or leave it out", event, id), Field: "event"})
			return place{}, false
		case !concerns(ev, id):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("event %q is not about conversation %q: its decision does not name it; pass in event the id of one of the conversation's events", event, id), Field: "event"})
			return place{}, false
		}
		return s.around(ctx, ev, id, found)
	}
	if len(found) > 0 {
		// An id may be used again once its conversation closed: the
		// latest start is the conversation of that id now.
		return latest(found), true
	}
	if isNamed && concerns(named, id) {
		return s.around(ctx, named, id, nil)
	}
	msg := fmt.Sprintf("no conversation %q: none is open with that id, and no stored event that opened one has it (a conversation's id is its opening event's, unless the client gave one). "+
		"Pass ?event=ID, the id of any event of the conversation, to find it in the log", id)
	if pr, err := s.cfg.Store.Pruned(ctx); err == nil && pr.Through > 0 {
		msg += fmt.Sprintf("; events decided before %s were pruned by retention, and its events may have been among them", pr.Before.Format(time.RFC3339))
	}
	writeJSON(w, http.StatusNotFound, apiError{Error: msg, Field: "id"})
	return place{}, false
}

// openStart is where an open conversation starts: after the last record
// decided before it was created. Nil when it is not open; false once it
// has answered 503.
func (s *Service) openStart(ctx context.Context, w http.ResponseWriter, id string) (*place, bool) {
	var contact, created string
	read, open := false, false
	s.readState(ctx, w, func(e *engine.Engine) {
		read = true
		if v, ok := e.Conversation(id); ok {
			open, contact, created = true, v.Contact, v.CreatedAt
		}
	})
	if !read || !open {
		return nil, read
	}
	// CreatedAt is the engine's clock to the second, never after the
	// opening record's: the last record before it is before the opening.
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return nil, true // found another way, then
	}
	seq, err := s.cfg.Store.SeqBefore(ctx, t)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return nil, false
	}
	return &place{contact: contact, start: seq, exact: true}, true
}

// around is where to search for a conversation that one of its records
// names: from the latest exact start before it, else from half a window
// before it.
func (s *Service) around(ctx context.Context, rec store.Record, id string, found []place) (place, bool) {
	if opens(rec, id) {
		return place{contact: contactOf(rec, id), start: rec.Seq - 1, exact: true}, true
	}
	var before []place
	for _, p := range found {
		if p.start < rec.Seq {
			before = append(before, p)
		}
	}
	if len(before) > 0 {
		return latest(before), true
	}
	p := place{contact: contactOf(rec, id), start: max(0, rec.Seq-1-int64(timelineWindow/2))}
	// Nothing is before the log's start, nor before what retention pruned.
	p.exact = p.start == 0
	if pr, err := s.cfg.Store.Pruned(ctx); err == nil && p.start <= pr.Through {
		p.exact = true
	}
	return p, true
}

func latest(ps []place) place {
	best := ps[0]
	for _, p := range ps[1:] {
		if p.start > best.start {
			best = p
		}
	}
	return best
}

// readTimeline reads the conversation's records after p.start, as far as
// the bounds let it.
func (s *Service) readTimeline(ctx context.Context, id string, p place, limit int) (timelineAnswer, error) {
	out := timelineAnswer{Conversation: id, Contact: p.contact, Events: []timelineItem{}, From: p.start, Through: p.start,
		Earlier: !p.exact, Window: timelineWindow}
	head, err := s.cfg.Store.LastSeq(ctx)
	if err != nil {
		return out, err
	}
	// The contact's records, when its scan cannot run past the window;
	// else the log itself, a window of it at most.
	byContact := p.contact != "" && head-p.start <= int64(timelineWindow)
	cursor, read := p.start, 0
	for out.Stopped == "" {
		ask := timelineBatch
		var recs []store.Record
		if byContact {
			recs, err = s.cfg.Store.Concerning(ctx, p.contact, cursor, ask)
		} else {
			ask = min(ask, timelineWindow-read)
			recs, err = s.cfg.Store.Records(ctx, cursor, ask)
			read += len(recs)
		}
		if err != nil {
			return out, err
		}
		for _, rec := range recs {
			cursor = rec.Seq
			if !concerns(rec, id) {
				continue
			}
			out.Events = append(out.Events, item(rec))
			if closes(rec, id) {
				out.Closed, out.Stopped = true, stopClosed
				break
			}
			if len(out.Events) == limit {
				out.Stopped = stopLimit
				break
			}
		}
		switch {
		case out.Stopped != "":
		case len(recs) < ask, !byContact && cursor >= head:
			// The end of the log: through its head as it was before
			// reading, so that later records are read next time.
			cursor, out.Stopped = max(cursor, head), stopEnd
		case !byContact && read >= timelineWindow:
			out.Stopped = stopWindow
		}
	}
	out.Through, out.Next = cursor, cursor
	out.More = out.Stopped == stopLimit || out.Stopped == stopWindow
	return out, nil
}

// item is a record as the timeline lists it.
func item(rec store.Record) timelineItem {
	at := rec.Clock
	if at.IsZero() {
		at = rec.At // decided before the service owned its clock
	}
	body := json.RawMessage(rec.Event)
	if !json.Valid(body) {
		body = json.RawMessage("null")
	}
	dec := json.RawMessage(rec.Decision)
	if !json.Valid(dec) {
		dec = json.RawMessage("null")
	}
	return timelineItem{streamed: streamed{Seq: rec.Seq, Event: rec.ID, Type: rec.Type, At: at, Rules: rec.RuleSet, Decision: dec}, Body: body}
}

// refs are the conversations a decision names.
type refs struct {
	Conversation string `json:"conversation"`
	Actions      []struct {
		Conversation string `json:"conversation"`
	} `json:"actions"`
}

func refsOf(rec store.Record) refs {
	var r refs
	json.Unmarshal(rec.Decision, &r)
	return r
}

// concerns says whether a record's decision is about the conversation:
// the event's own, or one its actions touched.
func concerns(rec store.Record, id string) bool {
	if _, ok := decisionOf(rec); !ok || id == "" {
		return false
	}
	// Most records of a contact are about its other conversations: skip
	// those that cannot name it without decoding them. Only a plain id is
	// written as it is in JSON.
	if plainID(id) && !bytes.Contains(rec.Decision, []byte(`"`+id+`"`)) {
		return false
	}
	r := refsOf(rec)
	if r.Conversation == id {
		return true
	}
	for _, a := range r.Actions {
		if a.Conversation == id {
			return true
		}
	}
	return false
}

// plainID says whether an id is written in JSON as it is.
func plainID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// opens says whether a record is the message that opened the
// conversation: a conversation without an id from the client takes its
// opening event's.
func opens(rec store.Record, id string) bool {
	return rec.ID == id && rec.Type == triggers.TypeMessageReceived && refsOf(rec).Conversation == id
}

// closes says whether a record closed the conversation: a
// conversation.closed event, or a conversation.updated one to closed.
func closes(rec store.Record, id string) bool {
	switch rec.Type {
	case triggers.TypeConversationClosed:
	case triggers.TypeConversationUpdated:
		var ev struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(rec.Event, &ev) != nil || ev.Status != triggers.StatusClosed {
			return false
		}
	default:
		return false
	}
	return refsOf(rec).Conversation == id
}

// contactOf is the contact of the conversation a record concerns; "" when
// the record cannot tell. The store keeps a record's first contact: the
// event's own, else that of the first conversation its actions touched.
func contactOf(rec store.Record, id string) string {
	var ev struct {
		Contact *struct {
			ID string `json:"id"`
		} `json:"contact"`
	}
	json.Unmarshal(rec.Event, &ev)
	r := refsOf(rec)
	if r.Conversation == id && ev.Contact != nil && ev.Contact.ID != "" {
		return ev.Contact.ID
	}
	if len(rec.Contacts) == 0 {
		return ""
	}
	if r.Conversation == id {
		return rec.Contacts[0]
	}
	if r.Conversation == "" {
		for _, a := range r.Actions {
			if a.Conversation != "" {
				if a.Conversation == id {
					return rec.Contacts[0]
				}
				break
			}
		}
	}
	return ""
}
