package service

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/engine"
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
	e := apiError{Error: err.Error()}
	var fe *triggers.FieldError
	if errors.As(err, &fe) {
		e.Error, e.Field = fe.Message, fe.Field
	}
	writeJSON(w, status, e)
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
	v1("GET /v1/queues", s.getQueues)
	v1("POST /v1/rules/reload", s.postReload)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		version := s.rules().Version
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "rules": version})
	})
	mux.Handle("GET /metrics", s.m.handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return s.logRequests(mux)
}

// auth checks the bearer token when one is configured.
func (s *Service) auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
				writeJSON(w, http.StatusUnauthorized, apiError{Error: "missing or wrong token: send Authorization: Bearer TOKEN"})
				return
			}
		}
		h(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func (s *Service) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		s.cfg.Log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "took", time.Since(start))
	})
}

// readBody reads a request body up to the size limit.
func (s *Service) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: fmt.Sprintf("the body is over %d bytes; send fewer events per request", s.cfg.MaxBody)})
		return nil, false
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "cannot read the body: " + err.Error()})
		return nil, false
	}
	return body, true
}

// lineResult is one line's answer in a batch.
type lineResult struct {
	Line     int             `json:"line"`
	Decision json.RawMessage `json:"decision,omitempty"`
	apiError
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
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64*1024), int(s.cfg.MaxBody)+1)
	for n := 1; sc.Scan(); n++ {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			lines = append(lines, append([]byte(nil), l...))
			lineNos = append(lineNos, n)
		}
	}
	if len(lines) == 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "empty body; send an event as JSON, or several as JSON lines"})
		return
	}
	// A pretty-printed single event spans lines: it is one event.
	if len(lines) > 1 && json.Valid(bytes.TrimSpace(body)) {
		lines, lineNos = [][]byte{bytes.TrimSpace(body)}, []int{1}
	}
	single := len(lines) == 1
	var events []*triggers.Event
	var evLine []int
	answers := make([]lineResult, len(lines))
	for i, l := range lines {
		answers[i].Line = lineNos[i]
		ev, err := triggers.DecodeEvent(l, false)
		if err != nil {
			if single {
				writeErr(w, http.StatusBadRequest, err)
				return
			}
			answers[i].apiError = toAPIError(err)
			continue
		}
		events = append(events, ev)
		evLine = append(evLine, i)
	}
	var results []result
	if len(events) > 0 {
		var err error
		if results, err = s.Submit(r.Context(), events); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the service is stopping; send the event again"})
			return
		}
	}
	if single {
		res := results[0]
		switch {
		case errors.Is(res.err, errNotStored):
			writeErr(w, http.StatusServiceUnavailable, res.err)
		case res.err != nil:
			writeErr(w, http.StatusUnprocessableEntity, res.err)
		default:
			w.Header().Set("Content-Type", "application/json")
			if res.dup {
				w.Header().Set("Switchboard-Replayed", "true")
			} else {
				w.Header().Set("Switchboard-Rules", res.rules)
			}
			w.Write(append(res.decision, '\n'))
		}
		return
	}
	status, failed := http.StatusOK, 0
	for j, res := range results {
		a := &answers[evLine[j]]
		if res.err != nil {
			a.apiError = toAPIError(res.err)
			if errors.Is(res.err, errNotStored) {
				status = http.StatusServiceUnavailable
			}
			continue
		}
		a.Decision = res.decision
	}
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
	enc := json.NewEncoder(w)
	for _, a := range answers {
		enc.Encode(a)
	}
}

func toAPIError(err error) apiError {
	var fe *triggers.FieldError
	if errors.As(err, &fe) {
		return apiError{Error: fe.Message, Field: fe.Field}
	}
	return apiError{Error: err.Error()}
}

func (s *Service) getEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if dec, ok := s.recent.Get(id); ok {
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(dec, '\n'))
		return
	}
	rec, ok, err := s.cfg.Store.Get(r.Context(), id)
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	case !ok:
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no event %q", id)})
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(rec.Decision, '\n'))
	}
}

// explainEvent replays the store up to the event on a fresh engine and
// explains it, as switchboard explain does.
func (s *Service) explainEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var trace *engine.Trace
	_, _, _, err := s.walk(r.Context(), func(eng *engine.Engine, ev *triggers.Event, rec store.Record) (bool, error) {
		if rec.ID == id {
			var err error
			_, trace, err = eng.Explain(ev)
			return true, err
		}
		_, err := eng.Decide(ev)
		return false, err
	})
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, err)
	case trace == nil:
		writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no event %q", id)})
	case r.URL.Query().Get("format") == "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		trace.WriteText(w)
	default:
		writeJSON(w, http.StatusOK, trace)
	}
}

// postReload compiles the rule directory and swaps it in; with any
// diagnostic the running rules stay and the answer is 422.
func (s *Service) postReload(w http.ResponseWriter, r *http.Request) {
	res, err := s.Reload(r.Context())
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

func (s *Service) read(fn func(*engine.Engine) any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(s.eng)
}

func (s *Service) getAgents(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.read(func(e *engine.Engine) any { return e.Agents() }))
}

func (s *Service) getAgent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	readOne(s, w, fmt.Sprintf("no agent %q", id), func(e *engine.Engine) (engine.AgentView, bool) { return e.Agent(id) })
}

func (s *Service) getConversation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	readOne(s, w, fmt.Sprintf("no open conversation %q", id), func(e *engine.Engine) (engine.ConversationView, bool) { return e.Conversation(id) })
}

// readOne answers with one view of the live state, or 404.
func readOne[T any](s *Service, w http.ResponseWriter, notFound string, get func(*engine.Engine) (T, bool)) {
	s.mu.Lock()
	v, ok := get(s.eng)
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: notFound, Field: "id"})
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Service) getQueues(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.read(func(e *engine.Engine) any {
		q := e.Queues(s.cfg.Now())
		if q == nil {
			q = []engine.QueueView{}
		}
		return q
	}))
}

// putStatus sets an agent's presence: an agent.status event like any
// other, stored and replayed. The body is {"status": "online"} and
// optionally an "id" to make retries safe.
func (s *Service) putStatus(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Status string `json:"status"`
		ID     string `json:"id"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: `the body must be {"status": "online" | "away" | "offline"}`})
		return
	}
	if req.ID == "" {
		req.ID = fmt.Sprintf("status-%s-%d", r.PathValue("id"), s.cfg.Now().UnixNano())
	}
	ev := &triggers.Event{ID: req.ID, Type: triggers.TypeAgentStatus, Agent: r.PathValue("id"), Status: req.Status}
	if err := ev.Validate(false); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	results, err := s.Submit(r.Context(), []*triggers.Event{ev})
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the service is stopping; send it again"})
		return
	}
	res := results[0]
	switch {
	case errors.Is(res.err, errNotStored):
		writeErr(w, http.StatusServiceUnavailable, res.err)
	case res.err != nil:
		status := http.StatusUnprocessableEntity
		var fe *triggers.FieldError
		if errors.As(res.err, &fe) && fe.Field == "agent" {
			status = http.StatusNotFound
		}
		writeErr(w, status, res.err)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(res.decision, '\n'))
	}
}
