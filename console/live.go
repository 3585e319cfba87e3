package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/triggers"
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

// OpenLinks links the agent's open conversations.
func (a agent) OpenLinks() []link { return convLinks(a.Conversations, "") }

// queue is a waiting line as GET /v1/queues shows it.
type queue struct {
	Group   string    `json:"group"`
	Agent   string    `json:"agent"`
	Waiting []waiting `json:"waiting"`
}

// waiting is a conversation in a waiting line.
type waiting struct {
	Conversation string  `json:"conversation"`
	Priority     int     `json:"priority"`
	Since        string  `json:"since"`
	WaitSeconds  float64 `json:"wait_seconds"`
	Rule         string  `json:"rule"`
}

// Href is the conversation's page.
func (w waiting) Href() string { return convHref(w.Conversation, "") }

// decision is one of GET /v1/decisions.
type decision struct {
	Seq      int64        `json:"seq"`
	Event    string       `json:"event"`
	Type     string       `json:"type"`
	At       time.Time    `json:"at"`
	Decision decisionBody `json:"decision"`
}

// Href is the decision's explanation page.
func (d decision) Href() string { return eventHref(d.Event) }

// Conversations links those the decision touched, found by its event.
func (d decision) Conversations() []link { return convLinks(d.Decision.touched(), d.Event) }

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

// event is one event's decision and why: the explanation drawn for a team
// lead (each rule, matched or not and why; each action and what came of
// it; each member of a group, chosen or not and why), the same as text,
// and the decision as stored, with links to the conversations it touched.
func (c *Console) event(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	path := "/v1/events/" + url.PathEscape(id)
	var text string
	code, err := c.api(r.Context(), "GET", path+"/explain?format=text", nil, &text)
	if err != nil {
		msg := err.Error()
		if code == http.StatusNotFound {
			msg = fmt.Sprintf("No event %q is stored: %s", id, msg)
		}
		c.fail(w, r, code, msg)
		return
	}
	d := eventData{ID: id, Trace: text}
	if _, err := c.api(r.Context(), "GET", path+"/explain", nil, &d.Why); err != nil {
		d.Why, d.WhyError = nil, "The explanation could not be drawn ("+err.Error()+"); it is here as text."
	}
	// GET /v1/events/{id} answers with the decision itself.
	var stored json.RawMessage
	if _, err := c.api(r.Context(), "GET", path, nil, &stored); err == nil {
		d.Decision = string(stored)
		var dec decisionBody
		json.Unmarshal(stored, &dec)
		d.Conversations = convLinks(dec.touched(), id)
	}
	v.Title = "Event " + id
	v.Data = d
	c.render(w, r, http.StatusOK, "event", v)
}

// eventData is what the event page shows.
type eventData struct {
	ID            string
	Why           *explanation // nil when it could not be had
	WhyError      string
	Trace         string // the explanation as text
	Decision      string // as stored (JSON)
	Conversations []link // those the decision touched
}

// link is a link's text and where it goes.
type link struct{ Text, Href string }

// eventHref is an event's explanation page.
func eventHref(id string) string { return "/events/" + url.PathEscape(id) }

// convHref is a conversation's page; event, when given, is one of its
// events, which finds it in the log once it is closed.
func convHref(conv, event string) string {
	h := "/conversations/" + url.PathEscape(conv)
	if event != "" {
		h += "?event=" + url.QueryEscape(event)
	}
	return h
}

// convLinks links conversations, found by one of their events.
func convLinks(convs []string, event string) []link {
	var out []link
	for _, conv := range convs {
		out = append(out, link{Text: conv, Href: convHref(conv, event)})
	}
	return out
}

// decisionBody is a decision as the API gives it.
type decisionBody struct {
	Conversation string           `json:"conversation"`
	Actions      []map[string]any `json:"actions"`
}

// touched lists the conversations a decision is about: the event's own,
// then those its actions touched.
func (d decisionBody) touched() []string {
	var out []string
	add := func(conv string) {
		if conv != "" && !slices.Contains(out, conv) {
			out = append(out, conv)
		}
	}
	add(d.Conversation)
	for _, a := range d.Actions {
		conv, _ := a["conversation"].(string)
		add(conv)
	}
	return out
}

// explanation is GET /v1/events/{id}/explain: why an event went where it
// went, with what the page says of each part in words.
type explanation struct {
	Event    string       `json:"event"`
	Type     string       `json:"type"`
	At       string       `json:"at"`
	Notes    []string     `json:"notes"`
	Steps    []traceStep  `json:"steps"`
	Decision decisionBody `json:"decision"`
}

// traceStep is one trigger's rules, a timer, or waiting work placed.
type traceStep struct {
	Trigger string      `json:"trigger"`
	Rules   []traceRule `json:"rules"`
	Placed  []string    `json:"placed"`
}

// Title says which rules ran, as a rule file names them.
func (s traceStep) Title() string {
	if k, ok := triggers.Lookup(s.Trigger); ok {
		return "Rules “on " + k.Alias() + "”"
	}
	if rest, ok := strings.CutPrefix(s.Trigger, triggers.ConversationUnanswered.String()+": "); ok {
		return "Timer “on unanswered”: " + rest
	}
	if rest, ok := strings.CutPrefix(s.Trigger, triggers.ConversationInactive.String()+": "); ok {
		return "Timer “on inactive”: " + rest
	}
	if s.Trigger == "waiting work" {
		return "Waiting work placed"
	}
	return s.Trigger
}

// traceRule is one rule and why it matched or not.
type traceRule struct {
	Rule    string `json:"rule"`
	Pos     string `json:"pos"`
	Matched bool   `json:"matched"`
	Clause  string `json:"clause"`
	Values  []struct {
		Expr  string `json:"expr"`
		Value string `json:"value"`
	} `json:"values"`
	Error   string         `json:"error"`
	Skipped string         `json:"skipped"`
	Actions []*traceAction `json:"actions"`
}

// State is matched, unmatched or skipped: the badge's class.
func (r traceRule) State() string {
	switch {
	case r.Skipped != "":
		return "skipped"
	case r.Matched:
		return "matched"
	}
	return "unmatched"
}

// Badge is the state in words.
func (r traceRule) Badge() string {
	return map[string]string{"skipped": "Not run", "matched": "Matched", "unmatched": "Did not match"}[r.State()]
}

// SkipReason is why a rule did not run.
func (r traceRule) SkipReason() string { return strings.TrimPrefix(r.Skipped, "not run: ") }

// traceAction is one action and what came of it.
type traceAction struct {
	Action  string        `json:"action"`
	Outcome string        `json:"outcome"`
	Members []traceMember `json:"members"`
	Else    *traceAction  `json:"else"`
}

// traceMember is a group member and why it was or was not chosen.
type traceMember struct {
	Agent  string `json:"agent"`
	Chosen bool   `json:"chosen"`
	Reason string `json:"reason"`
}

// Why is the reason, without the "chosen" the table says already.
func (m traceMember) Why() string { return strings.TrimPrefix(m.Reason, "chosen: ") }

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
		if a["offered"] == true {
			out += ", who accepted the offer"
		}
		return out
	case "offer":
		out := s("conversation") + " offered to agent " + s("agent") + " until " + s("expires")
		if s("group") != "" {
			out += " (group " + s("group") + ")"
		}
		return out
	case "unassign":
		return s("conversation") + " taken from agent " + s("agent")
	case "untag":
		return "untag " + s("conversation") + " " + s("tag")
	case "cancel":
		return s("conversation") + " leaves its waiting line"
	case "release":
		return s("conversation") + " stays with agent " + s("agent") + ", whose capacity it frees until the contact writes"
	case "close":
		return s("conversation") + " closed"
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
