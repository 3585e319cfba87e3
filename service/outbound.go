package service

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"github.com/switchboard-dev/switchboard/delivery"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// What leaves the service: the decision cursor and stream, and the
// deliveries' view and repair.

// heartbeat is how often an idle stream says it is alive.
const heartbeat = 15 * time.Second

// commitSignal is closed at each commit and replaced: streams wait on it.
func (s *Service) commitSignal() <-chan struct{} {
	s.bcast.Lock()
	defer s.bcast.Unlock()
	return s.committed
}

// signalCommit wakes the streams; while there are any, the committed
// records' frames are kept in memory first, so that streams read them from
// there rather than each from the store.
func (s *Service) signalCommit(recs []store.Record) {
	s.bcast.Lock()
	if s.streams.Load() > 0 {
		for _, r := range recs {
			s.tail = append(s.tail, frame{seq: r.Seq, data: sseFrame(r)})
		}
		if n := len(s.tail); n > tailSize {
			s.tail = append(s.tail[:0], s.tail[n-tailSize:]...)
		}
	} else {
		s.tail = s.tail[:0]
	}
	close(s.committed)
	s.committed = make(chan struct{})
	s.bcast.Unlock()
}

// tailSize is how many recent records the streams find in memory.
const tailSize = 4096

// maxStreams is how many decision streams may be open at once.
const maxStreams = 256

// frame is a committed record as a stream sends it; nil data for records
// that are not decisions.
type frame struct {
	seq  int64
	data []byte
}

// fromTail returns the frames after seq after, if memory holds them all.
func (s *Service) fromTail(after int64, limit int) ([]frame, bool) {
	s.bcast.Lock()
	defer s.bcast.Unlock()
	if len(s.tail) == 0 || s.tail[0].seq > after+1 {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(s.tail, after+1, func(f frame, seq int64) int { return cmp.Compare(f.seq, seq) })
	end := min(len(s.tail), i+limit)
	return slices.Clone(s.tail[i:end]), true
}

// sseFrame is a record as one Server-Sent Event; nil when it is not a
// decision.
func sseFrame(r store.Record) []byte {
	d, ok := decisionOf(r)
	if !ok {
		return nil
	}
	data, _ := json.Marshal(d)
	return fmt.Appendf(nil, "id: %d\nevent: decision\ndata: %s\n\n", r.Seq, data)
}

// CloseStreams ends the decision streams, so that a shutdown does not wait
// for them; their clients reconnect with Last-Event-ID.
func (s *Service) CloseStreams() { s.closeStreams.Do(func() { close(s.streamsDone) }) }

// streamed is a decision as the cursor and the stream give it.
type streamed struct {
	Seq      int64           `json:"seq"`
	Event    string          `json:"event"`
	Type     string          `json:"type"`
	At       time.Time       `json:"at"` // the service's clock when it decided
	Rules    string          `json:"rules"`
	Decision json.RawMessage `json:"decision"`
}

func decisionOf(r store.Record) (streamed, bool) {
	if !r.Decides() {
		return streamed{}, false
	}
	return streamed{Seq: r.Seq, Event: r.ID, Type: r.Type, At: r.Clock, Rules: r.RuleSet, Decision: r.Decision}, true
}

// seqParam reads a cursor; ok is false after answering 400.
func seqParam(w http.ResponseWriter, v, name string) (int64, bool) {
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("%s %q: write a record number, 0 or more", name, v), Field: name})
		return 0, false
	}
	return n, true
}

func limitParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("limit %q: write a number from 1 to 1000", v), Field: "limit"})
		return 0, false
	}
	return n, true
}

// getDecisions lists committed decisions after a record, in log order:
// those made by timers and waiting lines included.
func (s *Service) getDecisions(w http.ResponseWriter, r *http.Request) {
	after, ok := seqParam(w, r.URL.Query().Get("after"), "after")
	if !ok {
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	if v := r.URL.Query().Get("last"); v != "" {
		// The newest decisions: the records of the log's last limit.
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 || r.URL.Query().Has("after") {
			writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("last %q: write a number from 1 to 1000, without after", v), Field: "last"})
			return
		}
		head := s.committedSeq()
		after, limit = max(head-int64(n), 0), n
	}
	recs, err := s.cfg.Store.Records(r.Context(), after, limit)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	out := struct {
		Decisions []streamed `json:"decisions"`
		Next      int64      `json:"next"` // pass as after for the next page
	}{Decisions: []streamed{}, Next: after}
	for _, rec := range recs {
		if d, ok := decisionOf(rec); ok {
			out.Decisions = append(out.Decisions, d)
		}
		out.Next = rec.Seq
	}
	writeJSON(w, http.StatusOK, out)
}

// streamDecisions is Server-Sent Events: one event per committed decision,
// its id the record's seq, resumable with Last-Event-ID (or ?after=). A
// new stream without either starts at the decisions committed from now on.
func (s *Service) streamDecisions(w http.ResponseWriter, r *http.Request) {
	from := r.Header.Get("Last-Event-ID")
	name := "Last-Event-ID"
	if from == "" {
		from, name = r.URL.Query().Get("after"), "after"
	}
	after, ok := seqParam(w, from, name)
	if !ok {
		return
	}
	head := s.committedSeq()
	switch {
	case from == "":
		after = head
	case after > head:
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("%s %d is after the last decision (%d): it is from another database; reconnect without it", name, after, head), Field: name})
		return
	}
	if s.streams.Add(1) > maxStreams {
		s.streams.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: fmt.Sprintf("%d decision streams are open already; use GET /v1/decisions to page, or try again later", maxStreams)})
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(heartbeat + 30*time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte(": switchboard decisions\nretry: 2000\n\n")) {
		return
	}
	for {
		wait := s.commitSignal()
		frames, ok := s.fromTail(after, 500)
		if !ok {
			recs, err := s.cfg.Store.Records(r.Context(), after, 500)
			if err != nil {
				if r.Context().Err() == nil {
					write([]byte(": the log cannot be read now; reconnect\n\n"))
				}
				return
			}
			frames = frames[:0]
			for _, rec := range recs {
				frames = append(frames, frame{seq: rec.Seq, data: sseFrame(rec)})
			}
		}
		var buf []byte
		for _, f := range frames {
			after = f.seq
			buf = append(buf, f.data...)
		}
		if len(buf) > 0 && !write(buf) {
			return
		}
		if len(frames) == 500 {
			continue
		}
		timer := time.NewTimer(heartbeat)
		select {
		case <-wait:
		case <-timer.C:
			if !write([]byte(": heartbeat\n\n")) {
				timer.Stop()
				return
			}
		case <-r.Context().Done():
		case <-s.streamsDone:
		}
		timer.Stop()
		if r.Context().Err() != nil {
			return
		}
		select {
		case <-s.streamsDone:
			return
		default:
		}
	}
}

// committedSeq is the last record committed.
func (s *Service) committedSeq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// deliveryView is a delivery as the API shows it.
type deliveryView struct {
	ID           string          `json:"id"`
	Seq          int64           `json:"seq"`
	Destination  string          `json:"destination"`
	Conversation string          `json:"conversation,omitempty"`
	Kind         string          `json:"kind"`
	Status       string          `json:"status"`
	Attempts     int             `json:"attempts"`
	Created      time.Time       `json:"created"`
	Due          *time.Time      `json:"next_attempt,omitempty"`
	Expires      time.Time       `json:"expires"`
	Done         *time.Time      `json:"done,omitempty"`
	Code         int             `json:"code,omitempty"`
	Error        string          `json:"error,omitempty"`
	Answer       string          `json:"answer,omitempty"`
	Body         json.RawMessage `json:"body,omitempty"`
	History      []attemptView   `json:"history,omitempty"`
}

type attemptView struct {
	N      int       `json:"n"`
	At     time.Time `json:"at"`
	TookMS int64     `json:"took_ms"`
	Code   int       `json:"code,omitempty"`
	Error  string    `json:"error,omitempty"`
}

func viewDelivery(d store.Delivery) deliveryView {
	v := deliveryView{ID: d.ID, Seq: d.Seq, Destination: d.Destination, Conversation: d.Line, Kind: d.Kind, Status: d.Status,
		Attempts: d.Attempts, Created: d.Created, Expires: d.Expires, Code: d.Code, Error: d.Error, Answer: d.Answer}
	if d.Status == store.Pending || d.Status == store.Failed {
		due := d.Due
		v.Due = &due
	} else if !d.Done.IsZero() {
		done := d.Done
		v.Done = &done
	}
	return v
}

var deliveryStatuses = []string{store.Pending, store.Failed, store.Delivered, store.Dead}

// getDeliveries lists deliveries in log order, by status and destination.
func (s *Service) getDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.DeliveryFilter{Status: q.Get("status"), Destination: q.Get("destination")}
	if f.Status != "" && !slices.Contains(deliveryStatuses, f.Status) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("status %q: write pending, failed, delivered or dead", f.Status), Field: "status"})
		return
	}
	var ok bool
	if after := q.Get("after"); strings.HasPrefix(after, "sb-") {
		// After a delivery: the next page starts within its record.
		if _, err := fmt.Sscanf(after, "sb-%d-%d", &f.After, &f.N); err != nil || after != delivery.DeliveryID(f.After, f.N) {
			writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("after %q: write a record number or a delivery id", after), Field: "after"})
			return
		}
		f.Within = true
	} else if f.After, ok = seqParam(w, after, "after"); !ok {
		return
	}
	if f.Limit, ok = limitParam(w, r); !ok {
		return
	}
	ds, err := s.cfg.Store.Deliveries(r.Context(), f)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	out := struct {
		Deliveries []deliveryView `json:"deliveries"`
		Next       string         `json:"next,omitempty"` // pass as after for the next page
		// Platform is how far the platform's feed got: the decisions up to
		// this record were delivered or are listed here.
		Platform *int64 `json:"platform_through,omitempty"`
	}{Deliveries: []deliveryView{}}
	if c, ok := s.disp.FeedCursor(r.Context()); ok {
		out.Platform = &c
	}
	for _, d := range ds {
		out.Deliveries = append(out.Deliveries, viewDelivery(d))
	}
	if len(ds) == f.Limit {
		out.Next = ds[len(ds)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// getDelivery shows a delivery, what it carries and every attempt.
func (s *Service) getDelivery(w http.ResponseWriter, r *http.Request) {
	d, attempts, ok, err := s.delivery(r.Context(), r.PathValue("id"))
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	case !ok:
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no delivery %q", r.PathValue("id")), Field: "id"})
		return
	}
	v := viewDelivery(d)
	if body := delivery.Body(d, s.plan.Config().Source); json.Valid(body) {
		v.Body = body
	}
	for _, a := range attempts {
		v.History = append(v.History, attemptView{N: a.N, At: a.At, TookMS: a.Took.Milliseconds(), Code: a.Code, Error: a.Error})
	}
	writeJSON(w, http.StatusOK, v)
}

// retryDelivery makes a failed or dead delivery due now, with a new
// maximum age: after a receiver is fixed, or the configuration completed.
func (s *Service) retryDelivery(w http.ResponseWriter, r *http.Request) {
	// One retry at a time: two of the same dead delivery must not both
	// count it open again.
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	id := r.PathValue("id")
	d, _, found, err := s.delivery(r.Context(), id)
	if err == nil && !found {
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no delivery %q", id), Field: "id"})
		return
	}
	if err == nil && d.Status == store.Delivered {
		writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("delivery %s was delivered already", id), Field: "id"})
		return
	}
	if err == nil && d.Status == store.Pending && d.Attempts == 0 && d.Kind == delivery.KindDecision {
		if _, _, stored, _ := s.cfg.Store.Delivery(r.Context(), id); !stored {
			writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("delivery %s is being made now, for the first time", id), Field: "id"})
			return
		}
	}
	now := s.cfg.Now()
	var ok bool
	if err == nil {
		ok, err = s.cfg.Store.RetryDelivery(r.Context(), id, now, now.Add(s.plan.Config().MaxAge))
	}
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	if !ok {
		writeJSON(w, http.StatusConflict, apiError{Error: fmt.Sprintf("delivery %s is being attempted now; ask again once the attempt is over", id), Field: "id"})
		return
	}
	if d.Status == store.Dead {
		s.disp.Reopened(d) // its line waits for it again
	}
	s.disp.Wake()
	d, _, _, _ = s.cfg.Store.Delivery(r.Context(), id)
	writeJSON(w, http.StatusOK, viewDelivery(d))
}

// delivery finds a delivery in the outbox, or, for a decision the
// platform's feed sends without one, as the feed sees it.
func (s *Service) delivery(ctx context.Context, id string) (store.Delivery, []store.Attempt, bool, error) {
	d, attempts, ok, err := s.cfg.Store.Delivery(ctx, id)
	if err != nil || ok {
		return d, attempts, ok, err
	}
	seq, n, valid := store.ParseDeliveryID(id)
	if !valid {
		return d, nil, false, nil
	}
	d, ok, err = s.disp.FeedDelivery(ctx, seq, n)
	return d, nil, ok, err
}

// runDeliveries works the outbox and keeps its gauges fresh until ctx
// ends.
func (s *Service) runDeliveries(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.disp.Run(ctx); close(done) }()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		s.disp.Stats(ctx)
		select {
		case <-ctx.Done():
			<-done
			return
		case <-t.C:
		}
	}
}
