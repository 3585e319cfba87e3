package service

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/internal/jsonkeys"
	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
	"github.com/switchboard-dev/switchboard/triggers"
)

// apiError is the JSON body of every error answer.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	Line  int    `json:"line,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, toAPIError(err))
}

func toAPIError(err error) apiError {
	var fe *triggers.FieldError
	if errors.As(err, &fe) {
		return apiError{Error: fe.Message, Field: fe.Field}
	}
	return apiError{Error: err.Error()}
}

// Handler is the HTTP API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	v1 := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.auth(h)) }
	v1("POST /v1/events", s.postEvents)
	v1("GET /v1/events/{id}", s.getEvent)
	v1("GET /v1/events/{id}/explain", s.explainEvent)
	v1("GET /v1/agents", s.getAgents)
	v1("GET /v1/agents/{id}", s.getAgent)
	v1("PUT /v1/agents/{id}/status", s.putStatus)
	v1("GET /v1/conversations/{id}", s.getConversation)
	v1("GET /v1/conversations/{id}/events", s.getConversationEvents)
	v1("DELETE /v1/contacts/{id}", s.deleteContact)
	v1("GET /v1/queues", s.getQueues)
	v1("POST /v1/rules/reload", s.postReload)
	v1("GET /v1/rules", s.getRules)
	v1("GET /v1/rules/versions", s.getRuleVersions)
	v1("GET /v1/rules/versions/{version}", s.getRuleVersion)
	v1("GET /v1/decisions", s.getDecisions)
	v1("GET /v1/decisions/stream", s.streamDecisions)
	v1("GET /v1/deliveries", s.getDeliveries)
	v1("GET /v1/deliveries/{id}", s.getDelivery)
	v1("POST /v1/deliveries/{id}/retry", s.retryDelivery)
	// Liveness: never waits for the commit loop or the store.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "rules": *s.version.Load()})
	})
	// Readiness: whether events are accepted now.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := s.Ready()
		if !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true, "rules": *s.version.Load()})
	})
	mux.Handle("GET /metrics", s.m.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A known path with another method: 405 and what it takes.
		var allow []string
		for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, apiError{Error: fmt.Sprintf("%s takes %s, not %s", r.URL.Path, strings.Join(allow, " or "), r.Method)})
			return
		}
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return s.logRequests(textPaths(mux))
}

// textPaths refuses a path that cannot name anything: the ids in paths
// are text, without NUL and in UTF-8.
func textPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := badText(r.URL.Path); why != "" {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "the path " + why + "; ids are text"})
			return
		}
		for _, part := range strings.Split(r.URL.Path, "/") {
			if len(part) > maxIDLen {
				writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("the path holds an id longer than %d bytes; ids are at most that", maxIDLen)})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// auth checks the bearer token when one is configured.
func (s *Service) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			if why := fromPage(r); why != "" {
				writeJSON(w, http.StatusForbidden, apiError{Error: "without --token the API answers programs, not web pages: " + why +
					"; start serve with --token to call it from a page"})
				return
			}
		}
		if s.cfg.Token != "" {
			// The scheme is case-insensitive (RFC 7235); the token is not.
			scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimLeft(got, " ")), []byte(s.cfg.Token)) != 1 {
				s.WrongToken("api", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
				writeJSON(w, http.StatusUnauthorized, apiError{Error: "missing or wrong token: send Authorization: Bearer TOKEN"})
				return
			}
		}
		h(w, r)
	})
}

// WrongToken counts a call refused for a missing or wrong token, from
// surface ("api", "console") and the remote address, and says so in the
// log: at most once per wrongTokenLogEvery, with how many since.
func (s *Service) WrongToken(surface, remote string) {
	s.m.wrongToken.WithLabelValues(surface).Inc()
	s.wrongMu.Lock()
	defer s.wrongMu.Unlock()
	s.wrongSince++
	if now := time.Now(); now.Sub(s.wrongLogged) >= wrongTokenLogEvery {
		s.log.Warn("refused a missing or wrong token", "surface", surface, "remote", remote, "refused_since_last_said", s.wrongSince)
		s.wrongLogged, s.wrongSince = now, 0
	}
}

// wrongTokenLogEvery: refusals for a wrong token are logged at most this
// often (someone guessing would fill the log); the metric counts each.
const wrongTokenLogEvery = 10 * time.Second

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the connection (to flush a
// stream, to set its deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Service) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), -4) {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "took_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

// readBody reads a request body up to the size limit.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: bodyTooBig(r, s.cfg.MaxBody)})
		return nil, false
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "cannot read the body: " + err.Error()})
		return nil, false
	}
	return body, true
}

// bodyTooBig says a body is too large, and what to do about it.
func bodyTooBig(r *http.Request, max int64) string {
	if r.URL.Path == "/v1/events" {
		return fmt.Sprintf("the body is over %d bytes; send fewer events per request", max)
	}
	return fmt.Sprintf("the body is over %d bytes", max)
}

// readTimeout is how long a read may wait for the log's newest records
// from a shared database before it answers 503.
const readTimeout = 5 * time.Second

// maxIDLen is the longest event id accepted.
const maxIDLen = 256

// accept decodes an event as a client sent it, with what only the service
// asks of it: the service makes ticks, and internal ids are its own.
func accept(line []byte) (*incoming, error) {
	ev, err := triggers.DecodeEvent(line, false)
	if err != nil {
		return nil, err
	}
	if err := checkClientEvent(ev); err != nil {
		return nil, err
	}
	return &incoming{ev: ev, raw: line, hash: hashEvent(ev)}, nil
}

func checkClientEvent(ev *triggers.Event) error {
	switch {
	case ev.Type == triggers.TypeTick:
		return &triggers.FieldError{Field: "type", Message: "the service makes its own ticks on its clock; clients cannot post them"}
	case strings.HasPrefix(ev.ID, store.IDPrefix):
		return &triggers.FieldError{Field: "id", Message: fmt.Sprintf("ids starting with %q are reserved for records the service makes; choose another id", store.IDPrefix)}
	case len(ev.ID) > maxIDLen:
		return &triggers.FieldError{Field: "id", Message: fmt.Sprintf("longer than %d bytes", maxIDLen)}
	}
	// Identifiers are stored as text, and indexed, in any database: no
	// NUL, UTF-8, and no longer than an id.
	fields := []struct{ name, v string }{{"id", ev.ID}, {"conversation", ev.Conversation}, {"agent", ev.Agent}, {"channel", ev.Channel}, {"to", ev.To}}
	if ev.Contact != nil {
		fields = append(fields, struct{ name, v string }{"contact.id", ev.Contact.ID}, struct{ name, v string }{"contact.owner", ev.Contact.Owner})
	}
	for _, f := range fields {
		if why := badText(f.v); why != "" {
			return &triggers.FieldError{Field: f.name, Message: why + "; identifiers are text"}
		}
		if len(f.v) > maxIDLen {
			return &triggers.FieldError{Field: f.name, Message: fmt.Sprintf("longer than %d bytes; identifiers are at most that", maxIDLen)}
		}
		if f.v == "." || f.v == ".." {
			// A URL path cleans them away: /v1/conversations/.. would be
			// no conversation's page, in the API or the console.
			return &triggers.FieldError{Field: f.name, Message: fmt.Sprintf("%q cannot name anything in a URL path; choose another identifier", f.v)}
		}
	}
	return nil
}

// badText says what is wrong with an identifier that cannot be stored as
// text; "" when nothing is.
func badText(s string) string {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return `holds the character U+0000 ("\u0000")`
	case !utf8.ValidString(s):
		return "holds bytes that are not UTF-8"
	}
	return ""
}

// lineResult is one line's answer in a batch.
type lineResult struct {
	Line     int             `json:"line"`
	Decision json.RawMessage `json:"decision,omitempty"`
	Replayed bool            `json:"replayed,omitempty"`
	Error    string          `json:"error,omitempty"`
	Field    string          `json:"field,omitempty"`
	Status   int             `json:"status,omitempty"` // with an error: what a single event would have been answered
}

// postEvents takes one event (a JSON object) or a batch (JSON lines) and
// answers with the decisions once they are durable. In a batch every line
// stands alone: good lines are decided even when others are bad.
func (s *Service) postEvents(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var lines [][]byte
	var lineNos []int
	rest := body
	for n := 1; len(rest) > 0; n++ {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if l := bytes.TrimSpace(line); len(l) > 0 {
			lines = append(lines, l)
			lineNos = append(lineNos, n)
		}
	}
	if len(lines) == 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "empty body; send an event as JSON, or several as JSON lines"})
		return
	}
	// A pretty-printed single event spans lines: it is one event.
	if len(lines) > 1 && lines[0][len(lines[0])-1] != '}' && json.Valid(body) {
		lines, lineNos = [][]byte{bytes.TrimSpace(body)}, []int{1}
	}
	if len(lines) == 1 {
		s.postOne(w, r, lines[0])
		return
	}
	var events []*incoming
	var evLine []int
	answers := make([]lineResult, len(lines))
	for i, l := range lines {
		answers[i].Line = lineNos[i]
		in, err := accept(l)
		if err != nil {
			e := toAPIError(err)
			answers[i].Error, answers[i].Field, answers[i].Status = e.Error, e.Field, http.StatusBadRequest
			continue
		}
		events = append(events, in)
		evLine = append(evLine, i)
	}
	status := http.StatusOK
	if len(events) > 0 {
		results, err := s.Submit(r.Context(), events)
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, errStopping)
			return
		}
		for j, res := range results {
			a := &answers[evLine[j]]
			dec, st, err := s.outcome(r.Context(), events[j], res)
			if err != nil {
				e := toAPIError(err)
				a.Error, a.Field, a.Status = e.Error, e.Field, st
				if st == http.StatusServiceUnavailable {
					status = st
				}
				continue
			}
			a.Decision, a.Replayed = dec, res.dup
		}
	}
	failed := 0
	for _, a := range answers {
		if a.Error != "" {
			failed++
		}
	}
	if failed == len(answers) && status == http.StatusOK {
		status = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(status)
	var buf []byte
	for _, a := range answers {
		buf = a.appendJSON(buf[:0])
		w.Write(buf)
	}
}

// appendJSON writes a line's answer as one JSON line. The decision is
// already JSON; it is copied as it is, not checked and compacted again.
func (a *lineResult) appendJSON(b []byte) []byte {
	b = append(b, `{"line":`...)
	b = strconv.AppendInt(b, int64(a.Line), 10)
	if a.Decision != nil {
		b = append(b, `,"decision":`...)
		b = append(b, a.Decision...)
	}
	if a.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	str := func(key, v string) {
		if v != "" {
			q, _ := json.Marshal(v)
			b = append(b, `,"`+key+`":`...)
			b = append(b, q...)
		}
	}
	str("error", a.Error)
	str("field", a.Field)
	if a.Error != "" && a.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(a.Status), 10)
	}
	return append(b, '}', '\n')
}

// postOne takes a single event.
func (s *Service) postOne(w http.ResponseWriter, r *http.Request, line []byte) {
	in, err := accept(line)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	s.submitOne(w, r, in, http.StatusUnprocessableEntity)
}

// submitOne commits one event and answers with its decision.
func (s *Service) submitOne(w http.ResponseWriter, r *http.Request, in *incoming, unfit int) {
	results, err := s.Submit(r.Context(), []*incoming{in})
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, errStopping)
		return
	}
	res := results[0]
	dec, status, err := s.outcome(r.Context(), in, res)
	if err != nil {
		// An unknown status (team.yaml's own are checked by the engine)
		// is a bad body, not an unknown agent.
		var fe *triggers.FieldError
		if status == http.StatusUnprocessableEntity && !(errors.As(err, &fe) && fe.Field == "status") {
			status = unfit
		}
		writeErr(w, status, err)
		return
	}
	if res.dup {
		w.Header().Set("Switchboard-Replayed", "true")
	}
	s.writeDecision(w, dec, res.rules)
}

func (s *Service) writeDecision(w http.ResponseWriter, dec []byte, rules string) {
	w.Header().Set("Content-Type", "application/json")
	if rules != "" {
		w.Header().Set("Switchboard-Rules", rules)
	}
	w.Write(append(dec, '\n'))
}

// outcome turns a result into a decision to answer, or an error and its
// status.
func (s *Service) outcome(ctx context.Context, in *incoming, res result) ([]byte, int, error) {
	switch {
	case errors.Is(res.err, errNotStored), errors.Is(res.err, errStopping), isRefusal(res.err):
		return nil, http.StatusServiceUnavailable, res.err
	case errors.Is(res.err, errConflict):
		return nil, http.StatusConflict, &triggers.FieldError{Field: "id", Message: fmt.Sprintf(
			"event id %q was already used for a different event (record %d); give each event its own id, or send the very same event to get its decision", in.ev.ID, res.seq)}
	case res.err != nil:
		return nil, http.StatusUnprocessableEntity, res.err
	case res.dup:
		rec, ok, err := s.cfg.Store.Get(ctx, in.ev.ID)
		if err != nil || !ok {
			return nil, http.StatusServiceUnavailable, errors.New("the stored decision could not be read; send the event again")
		}
		return rec.Decision, http.StatusOK, nil
	}
	return res.decision, http.StatusOK, nil
}

func (s *Service) getEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, ok, err := s.cfg.Store.Get(r.Context(), id)
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	case !ok:
		s.noEvent(w, r.Context(), id)
	default:
		s.writeDecision(w, rec.Decision, rec.RuleSet)
	}
}

// noEvent answers 404 for an unknown event id, saying when retention
// may have removed it.
func (s *Service) noEvent(w http.ResponseWriter, ctx context.Context, id string) {
	msg := fmt.Sprintf("no event %q", id)
	if p, err := s.cfg.Store.Pruned(ctx); err == nil && p.Through > 0 {
		msg += fmt.Sprintf("; events decided before %s were pruned by retention, so it may have been one of them", p.Before.Format(time.RFC3339))
	}
	writeJSON(w, http.StatusNotFound, apiError{Error: msg, Field: "id"})
}

// explainEvent rebuilds the state just before the event, from the nearest
// snapshot, and explains it as switchboard explain does.
func (s *Service) explainEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx := r.Context()
	select {
	case s.explains <- struct{}{}:
		defer func() { <-s.explains }()
	case <-ctx.Done():
		return
	}
	rec, ok, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	if !ok {
		s.noEvent(w, ctx, id)
		return
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "text" && format != "json" {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("format %q: ask for format=text, or format=json (the default)", format), Field: "format"})
		return
	}
	trace, err := s.j.Explain(ctx, rec)
	switch {
	case errors.Is(err, journal.ErrNotEvent):
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: fmt.Sprintf("%s is a %s record the service made, not an event: there is nothing to explain", id, rec.Type)})
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	case format == "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		trace.WriteText(w)
	default:
		writeJSON(w, http.StatusOK, trace)
	}
}

// postReload compiles the rule directory and swaps it in; with any
// diagnostic the running rules stay and the answer is 422.
func (s *Service) postReload(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	// The body is optional: {"by": "who", "reason": "why"} goes into the
	// rule set's history.
	// A change (rows added, removed, changed) is the console's to
	// describe, from the files it wrote; the API takes who and why.
	var note ReloadNote
	if len(bytes.TrimSpace(body)) > 0 {
		var req reloadRequest
		if err := decodeBody(body, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: `the body, when there is one, is {"by": "who reloads", "reason": "why"}: ` + err.Error()})
			return
		}
		note.By, note.Reason = req.By, req.Reason
		if err := note.check(); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
			return
		}
	}
	res, err := s.Reload(r.Context(), note)
	switch {
	case errors.Is(err, errReloadRefused):
		writeJSON(w, http.StatusUnprocessableEntity, struct {
			Error string `json:"error"`
			ReloadResult
		}{err.Error(), res})
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// readState runs fn on the live state, which is never ahead of the store;
// false when there is none to read (the store failed).
func (s *Service) readState(ctx context.Context, w http.ResponseWriter, fn func(*engine.Engine)) {
	// What the other instances appended first (when the store is shared):
	// a read never shows less than was acknowledged before it.
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if err := s.catchUp(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the live state cannot be shown: the log's newest records cannot be read from the database: " + err.Error()})
		return
	}
	s.lockState()
	defer s.mu.Unlock()
	if s.eng == nil || s.fault.Load() != nil {
		reason := "the state is being rebuilt"
		if f := s.fault.Load(); f != nil {
			reason = *f
		}
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the live state cannot be shown: " + reason})
		return
	}
	fn(s.eng)
}

func (s *Service) getAgents(w http.ResponseWriter, r *http.Request) {
	s.readState(r.Context(), w, func(e *engine.Engine) { writeJSON(w, http.StatusOK, e.Agents()) })
}

func (s *Service) getAgent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.readState(r.Context(), w, func(e *engine.Engine) {
		writeFound[engine.AgentView](w, fmt.Sprintf("no agent %q", id))(e.Agent(id))
	})
}

func (s *Service) getConversation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.readState(r.Context(), w, func(e *engine.Engine) {
		writeFound[engine.ConversationView](w, fmt.Sprintf("no open conversation %q", id))(e.Conversation(id))
	})
}

// writeFound answers with a view, or 404.
func writeFound[T any](w http.ResponseWriter, notFound string) func(v T, ok bool) {
	return func(v T, ok bool) {
		if !ok {
			writeJSON(w, http.StatusNotFound, apiError{Error: notFound, Field: "id"})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Service) getQueues(w http.ResponseWriter, r *http.Request) {
	s.readState(r.Context(), w, func(e *engine.Engine) {
		q := e.Queues(s.cfg.Now())
		if q == nil {
			q = []engine.QueueView{}
		}
		writeJSON(w, http.StatusOK, q)
	})
}

// deleteContact erases a contact's personal data.
func (s *Service) deleteContact(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	res, err := s.EraseContact(r.Context(), id)
	switch {
	case errors.Is(err, errNoContact):
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no contact %q", id), Field: "id"})
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	case res.Pending != "":
		writeJSON(w, http.StatusAccepted, res) // committed; the rest follows
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// putStatus sets an agent's presence: an agent.status event like any
// other, stored and replayed. The body is {"status": "online"} and
// optionally an "id" to make retries safe.
func (s *Service) putStatus(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req statusRequest
	if err := decodeBody(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: `the body must be {"status": "online" | "away" | "offline"}: ` + err.Error()})
		return
	}
	given := req.ID != ""
	if !given {
		// The service's own id, in its reserved namespace, so that it
		// never meets a client's.
		req.ID = fmt.Sprintf("%sstatus:%s:%d", store.IDPrefix, r.PathValue("id"), time.Now().UnixNano())
	}
	ev := &triggers.Event{ID: req.ID, Type: triggers.TypeAgentStatus, Agent: r.PathValue("id"), Status: req.Status}
	if err := ev.Validate(false); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if err := checkClientEvent(ev); given && err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	raw, _ := json.Marshal(map[string]string{"id": ev.ID, "type": ev.Type, "agent": ev.Agent, "status": ev.Status})
	in := &incoming{ev: ev, raw: raw, hash: hashEvent(ev)}
	s.submitOne(w, r, in, http.StatusNotFound)
}

// reloadRequest is the optional body of POST /v1/reload.
type reloadRequest struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// statusRequest is the body of PUT /v1/agents/{id}/status.
type statusRequest struct {
	Status string `json:"status"`
	ID     string `json:"id,omitempty"`
}

// decodeBody reads a request's JSON body into v, a pointer to a struct:
// UTF-8, one object, only v's fields, each once and in its own case.
func decodeBody(body []byte, v any) error {
	if !utf8.Valid(body) {
		return errors.New("it is not UTF-8 text")
	}
	if at := jsonkeys.LoneSurrogate(body); at >= 0 {
		return fmt.Errorf("byte %d: %s is half of a UTF-16 surrogate pair without the other half, which is no character; send whole characters", at+1, body[at:at+6])
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("there is more after the object")
	}
	return jsonkeys.For(reflect.TypeOf(v).Elem()).Check(body)
}

// fromPage says why a call looks made by a web page, which a service
// without a token must not answer: any page its user opens could post
// events, reload rules or read contacts. A browser says where a call
// comes from (Sec-Fetch-Site, Origin), which the page cannot change; and
// a page elsewhere that rebinds its own name to 127.0.0.1 calls this
// machine by that name. Programs send none of these.
func fromPage(r *http.Request) string {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return "the call came from a page on another site"
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
			return "the call came from a page on " + o
		}
	}
	if FromLoopback(r) && !LocalHost(r.Host) {
		return "a call from this machine names it " + r.Host + ", as a page that rebinds its name to 127.0.0.1 does; call it as localhost or 127.0.0.1"
	}
	return ""
}

// LocalHost says whether a Host header names this machine.
func LocalHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// FromLoopback says whether a request came from this machine.
func FromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
