package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// agent is an agent as GET /v1/agents shows it.
type agent struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	Status        string   `json:"status"`
	Load          float64  `json:"load"`
	Capacity      float64  `json:"capacity"`
	Open          int      `json:"open"`
	Conversations []string `json:"conversations"`
}

// queue is a waiting line as GET /v1/queues shows it.
type queue struct {
	Group   string `json:"group"`
	Agent   string `json:"agent"`
	Waiting []struct {
		Conversation string  `json:"conversation"`
		Priority     int     `json:"priority"`
		Since        string  `json:"since"`
		WaitSeconds  float64 `json:"wait_seconds"`
		Rule         string  `json:"rule"`
	} `json:"waiting"`
}

// decision is one of GET /v1/decisions.
type decision struct {
	Seq      int64     `json:"seq"`
	Event    string    `json:"event"`
	Type     string    `json:"type"`
	At       time.Time `json:"at"`
	Decision struct {
		Conversation string           `json:"conversation"`
		Actions      []map[string]any `json:"actions"`
	} `json:"decision"`
}

// latest is how many decisions the live page lists.
const latest = 25

// live is the desk: agents, waiting lines, the latest decisions.
func (c *Console) live(w http.ResponseWriter, r *http.Request, v *view) {
	v.Title = "Live"
	v.Data = c.liveData(r, partAgents|partQueues|partDecisions)
	c.render(w, r, http.StatusOK, "live", v)
}

type liveData struct {
	Agents    []agent
	Queues    []queue
	Decisions []decision
	Error     string
}

// The live page's parts, each refreshed on its own.
const (
	partAgents = 1 << iota
	partQueues
	partDecisions
)

// liveData asks the API for the parts wanted.
func (c *Console) liveData(r *http.Request, parts int) *liveData {
	d := &liveData{}
	var errs []string
	if parts&partAgents != 0 {
		if _, err := c.api(r.Context(), "GET", "/v1/agents", nil, &d.Agents); err != nil {
			errs = append(errs, "agents: "+err.Error())
		}
	}
	if parts&partQueues != 0 {
		if _, err := c.api(r.Context(), "GET", "/v1/queues", nil, &d.Queues); err != nil {
			errs = append(errs, "waiting lines: "+err.Error())
		}
	}
	if parts&partDecisions != 0 {
		var ds struct {
			Decisions []decision `json:"decisions"`
		}
		if _, err := c.api(r.Context(), "GET", fmt.Sprintf("/v1/decisions?last=%d&limit=%d", latest, latest), nil, &ds); err != nil {
			errs = append(errs, "decisions: "+err.Error())
		}
		// Newest first.
		for i := len(ds.Decisions) - 1; i >= 0; i-- {
			d.Decisions = append(d.Decisions, ds.Decisions[i])
		}
	}
	if len(errs) > 0 {
		d.Error = "The service did not answer for " + strings.Join(errs, "; ")
	}
	return d
}

// livePart serves one part of the live page, for htmx to swap in.
func (c *Console) livePart(part int, name string) func(w http.ResponseWriter, r *http.Request, v *view) {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		v.Data = c.liveData(r, part)
		c.renderPart(w, "live", name, v)
	}
}

// event is one event's decision and why.
func (c *Console) event(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	var trace string
	code, err := c.api(r.Context(), "GET", "/v1/events/"+url.PathEscape(id)+"/explain?format=text", nil, &trace)
	if err != nil {
		msg := err.Error()
		if code == http.StatusNotFound {
			msg = fmt.Sprintf("No event %q is stored: %s", id, msg)
		}
		c.fail(w, r, code, msg)
		return
	}
	var stored struct {
		Decision json.RawMessage `json:"decision"`
	}
	c.api(r.Context(), "GET", "/v1/events/"+url.PathEscape(id), nil, &stored)
	v.Title = "Event " + id
	v.Data = map[string]any{"ID": id, "Trace": trace, "Decision": string(stored.Decision)}
	c.render(w, r, http.StatusOK, "event", v)
}

// since says how long ago an RFC 3339 time was, for people.
func since(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

// units writes capacity units as people count them.
func units(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprint(int64(f))
	}
	return fmt.Sprintf("%.2f", f)
}

// pct is a load as a percentage of capacity, for a bar (0 without one).
func pct(load, capacity float64) int {
	if capacity <= 0 {
		return 0
	}
	return int(min(100, 100*load/capacity))
}

// describeAction says what an action did, in words.
func describeAction(a map[string]any) string {
	s := func(k string) string { v, _ := a[k].(string); return v }
	switch s("type") {
	case "assign":
		to := "agent " + s("agent")
		if s("queue") != "" {
			to = "queue " + s("queue")
		}
		out := s("conversation") + " assigned to " + to
		if s("group") != "" {
			out += " (group " + s("group") + ")"
		}
		if a["from_queue"] == true {
			out += ", from the waiting line"
		}
		return out
	case "queued":
		if s("agent") != "" {
			return s("conversation") + " waits for agent " + s("agent")
		}
		return s("conversation") + " waits in group " + s("group")
	case "reply":
		return "reply to " + s("conversation") + ": " + s("text")
	case "notify":
		to := s("target")
		if to == "" {
			to = s("endpoint") + s("address")
		}
		return "notify " + to + " via " + s("via")
	case "tag":
		return "tag " + s("conversation") + " " + s("tag")
	case "set":
		return fmt.Sprintf("set %s = %v", s("path"), a["value"])
	}
	b, _ := json.Marshal(a)
	return string(b)
}
