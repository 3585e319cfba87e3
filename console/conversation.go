package console

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/triggers"
)

// timelineLimit is how many events a page of a conversation shows: each
// is explained on the page, and an explanation is a replay of the log.
const timelineLimit = 20

// timelinePage is GET /v1/conversations/{id}/events.
type timelinePage struct {
	Conversation string          `json:"conversation"`
	Contact      string          `json:"contact"`
	Events       []timelineEvent `json:"events"`
	From         int64           `json:"from"`
	Through      int64           `json:"through"`
	Earlier      bool            `json:"earlier"`
	Closed       bool            `json:"closed"`
	More         bool            `json:"more"`
	Next         int64           `json:"next"`
	Stopped      string          `json:"stopped"`
	Window       int             `json:"window"`
}

// timelineEvent is one record of a conversation's timeline.
type timelineEvent struct {
	Seq      int64           `json:"seq"`
	Event    string          `json:"event"`
	Type     string          `json:"type"`
	At       time.Time       `json:"at"`
	Body     json.RawMessage `json:"body"`
	Decision decisionBody    `json:"decision"`
}

// openConversation is GET /v1/conversations/{id}.
type openConversation struct {
	Contact   string   `json:"contact"`
	Channel   string   `json:"channel"`
	To        string   `json:"to"`
	Agent     string   `json:"agent"`
	Queue     string   `json:"queue"`
	WaitsFor  string   `json:"waits_for"`
	Priority  int      `json:"priority"`
	Tags      []string `json:"tags"`
	CreatedAt string   `json:"created_at"`
}

// Where says where the conversation is, in words.
func (o openConversation) Where() string {
	switch {
	case o.Agent != "":
		return "open, with agent " + o.Agent
	case o.Queue != "":
		return "open, given to queue " + o.Queue
	case o.WaitsFor != "":
		return "open, waiting for " + o.WaitsFor
	}
	return "open, with nobody yet"
}

// moment is one event of the timeline as the page shows it.
type moment struct {
	Seq      int64
	Event    string
	Type     string
	At       time.Time
	Said     string   // the event in a line
	Actions  []string // its decision about this conversation, in words
	Others   int      // actions of the decision on other conversations
	Why      *explanation
	WhyError string
	Href     string // the explanation's page
}

// conversationData is what the conversation page shows.
type conversationData struct {
	ID       string
	Open     *openConversation // nil when it is not open
	OpenNote string            // why the state is not shown
	Moments  []moment
	Page     timelinePage
	// Links to go on: the next page, further back, the first page.
	NextHref, BackHref, FirstHref string
}

// conversation is one conversation: where it is now when open, then its
// timeline, oldest first, each event with its decision in words and its
// explanation.
func (c *Console) conversation(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	q := r.URL.Query()
	ask := url.Values{"limit": {strconv.Itoa(timelineLimit)}}
	for _, k := range []string{"event", "after"} {
		if q.Has(k) {
			ask.Set(k, q.Get(k))
		}
	}
	base := "/v1/conversations/" + url.PathEscape(id)
	d := conversationData{ID: id}
	code, err := c.api(r.Context(), "GET", base+"/events?"+ask.Encode(), nil, &d.Page)
	if err != nil {
		msg := err.Error()
		switch {
		case code < 400:
			code, msg = http.StatusBadGateway, "The service's answer could not be read: "+msg
		case code == http.StatusNotFound:
			msg = fmt.Sprintf("Conversation %q was not found: %s. Here, add ?event=ID to the page's address, or open the conversation from one of its decisions on the desk.", id, msg)
		}
		c.fail(w, r, code, msg)
		return
	}
	var open openConversation
	switch code, err := c.api(r.Context(), "GET", base, nil, &open); {
	case err == nil:
		d.Open = &open
	case code == http.StatusNotFound:
		d.OpenNote = "It is not open now."
	default:
		d.OpenNote = "Where it is now cannot be shown: " + err.Error()
	}
	for _, e := range d.Page.Events {
		d.Moments = append(d.Moments, c.moment(r, id, e))
	}
	d.links(q)
	v.Title = "Conversation " + id
	v.Data = d
	c.render(w, r, http.StatusOK, "conversation", v)
}

// links are where the reader goes on from this page: the next page, further
// back, and back to the first page; each keeps the event that finds the
// conversation.
func (d *conversationData) links(q url.Values) {
	first := convHref(d.ID, q.Get("event"))
	from := func(after int64) string {
		sep := "?"
		if strings.Contains(first, "?") {
			sep = "&"
		}
		return first + sep + "after=" + strconv.FormatInt(after, 10)
	}
	if d.Page.More {
		d.NextHref = from(d.Page.Next)
	}
	if d.Page.Earlier {
		d.BackHref = from(max(0, d.Page.From-int64(d.Page.Window)))
		if q.Has("after") {
			d.FirstHref = first
		}
	}
}

// moment draws one event: what it said, its decision about this
// conversation, and its explanation.
func (c *Console) moment(r *http.Request, conv string, e timelineEvent) moment {
	m := moment{Seq: e.Seq, Event: e.Event, Type: e.Type, At: e.At, Href: eventHref(e.Event)}
	for _, a := range e.Decision.Actions {
		if on, _ := a["conversation"].(string); on != "" && on != conv {
			m.Others++
			continue
		}
		m.Actions = append(m.Actions, describeAction(a))
	}
	if _, err := c.api(r.Context(), "GET", "/v1/events/"+url.PathEscape(e.Event)+"/explain", nil, &m.Why); err != nil {
		m.Why, m.WhyError = nil, "Its explanation could not be had: "+err.Error()
	}
	m.Said = said(e, conv, m.Why)
	return m
}

// said is what an event said, in a line.
func said(e timelineEvent, conv string, why *explanation) string {
	var b struct {
		Channel string `json:"channel"`
		Contact *struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"contact"`
		Message *struct {
			Text string `json:"text"`
		} `json:"message"`
		Agent    string         `json:"agent"`
		Status   string         `json:"status"`
		Tags     []string       `json:"tags"`
		Priority *int           `json:"priority"`
		Attrs    map[string]any `json:"attrs"`
	}
	json.Unmarshal(e.Body, &b)
	switch e.Type {
	case "message.received":
		out := "message"
		if b.Contact != nil {
			out += " from contact " + b.Contact.ID
		}
		if b.Channel != "" {
			out += " on " + b.Channel
		}
		if b.Message != nil && b.Message.Text != "" {
			out += ": ‘" + clip(b.Message.Text, 140) + "’"
		}
		return out
	case "message.sent":
		if b.Agent != "" {
			return "agent " + b.Agent + " wrote to the contact"
		}
		return "a message was sent to the contact"
	case "conversation.closed":
		return "the conversation was closed"
	case "conversation.updated":
		var parts []string
		if b.Status != "" {
			parts = append(parts, "status "+b.Status)
		}
		if b.Tags != nil {
			parts = append(parts, "tags ["+strings.Join(b.Tags, ", ")+"]")
		}
		if b.Priority != nil {
			parts = append(parts, fmt.Sprintf("priority %d", *b.Priority))
		}
		if len(b.Attrs) > 0 {
			parts = append(parts, "attributes "+strings.Join(slices.Sorted(maps.Keys(b.Attrs)), ", "))
		}
		return "the conversation was updated: " + strings.Join(parts, "; ")
	case "agent.status":
		switch b.Status {
		case "online":
			return "agent " + b.Agent + " came online"
		case "offline":
			return "agent " + b.Agent + " went offline"
		}
		return "agent " + b.Agent + " is " + b.Status
	case "tick":
		return timerSaid(conv, why)
	}
	return e.Type
}

// timerSaid is what a tick did for the conversation: the explanation
// says which timer fired, and since when the conversation waited (or
// since when its contact had been silent).
func timerSaid(conv string, why *explanation) string {
	if why == nil {
		return "timer: a rule's timer fired"
	}
	for _, s := range why.Steps {
		what, since, ok := "unanswered since ", "", false
		if since, ok = strings.CutPrefix(s.Trigger, triggers.ConversationUnanswered.String()+": "+conv+" has waited since "); !ok {
			what = "inactive: no word from the contact since an agent wrote at "
			if since, ok = strings.CutPrefix(s.Trigger, triggers.ConversationInactive.String()+": "+conv+" has had no word from its contact since an agent wrote at "); !ok {
				continue
			}
		}
		if t, err := time.Parse(time.RFC3339, since); err == nil {
			since = humanTime(t)
		}
		out := "timer: " + what + since
		for _, r := range s.Rules {
			if r.Matched {
				out += ", rule " + r.Rule
			}
		}
		return out
	}
	return "timer: a rule's timer fired"
}

// humanTime is a time as the pages show it.
func humanTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// clip shortens a text to n characters.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// When is the time the service decided the event, for people.
func (m moment) When() string { return humanTime(m.At) }

// Stamp is that time for machines.
func (m moment) Stamp() string { return m.At.UTC().Format(time.RFC3339) }
