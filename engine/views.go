package engine

import (
	"container/heap"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
)

// AgentView is an agent's live state, for the API.
type AgentView struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Status string `json:"status"`
	// Presence is what Status routes as: online, away or offline.
	Presence      string   `json:"presence"`
	Load          float64  `json:"load"`               // capacity units in use
	Capacity      float64  `json:"capacity,omitempty"` // 0: unlimited
	Open          int      `json:"open"`               // open conversations
	LastActive    string   `json:"last_active,omitempty"`
	Conversations []string `json:"conversations,omitempty"`
	// Channels, for an agent with a budget per channel: each channel
	// team.yaml lists, then each other channel it has work on.
	Channels []ChannelLoadView `json:"channels,omitempty"`
	// DefaultCapacity is the budget of each channel not listed; absent
	// when there is none (the agent takes nothing on those channels).
	DefaultCapacity *float64 `json:"default_capacity,omitempty"`
	// Offered lists the conversations offered to the agent and not yet
	// answered. Declined counts the offers it declined, Missed those it
	// let expire, MissedInARow those since it last answered one.
	Offered      []string `json:"offered,omitempty"`
	Declined     int      `json:"declined"`
	Missed       int      `json:"missed"`
	MissedInARow int      `json:"missed_in_a_row"`
}

// ChannelLoadView is an agent's use of its budget for one channel.
type ChannelLoadView struct {
	Channel  string  `json:"channel"`
	Load     float64 `json:"load"`
	Capacity float64 `json:"capacity"`
	Open     int     `json:"open"`
}

// ConversationView is a conversation's live state, for the API.
type ConversationView struct {
	ID        string   `json:"id"`
	Contact   string   `json:"contact"`
	Channel   string   `json:"channel"`
	To        string   `json:"to"`
	Status    string   `json:"status"`
	Agent     string   `json:"agent,omitempty"`
	Queue     string   `json:"queue,omitempty"`
	WaitsFor  string   `json:"waits_for,omitempty"` // "group X" or "agent Y"
	Priority  int      `json:"priority"`
	Tags      []string `json:"tags,omitempty"`
	CreatedAt string   `json:"created_at"`
	// Attrs are the conversation's custom attributes.
	Attrs map[string]any `json:"attrs,omitempty"`
	// PreviousAgent is the agent who had it last (assign previous_agent).
	PreviousAgent string `json:"previous_agent,omitempty"`
	// OfferedTo is the agent it is offered to, until OfferExpires.
	OfferedTo    string `json:"offered_to,omitempty"`
	OfferExpires string `json:"offer_expires,omitempty"`
	// QuietSince is when an agent last wrote, while the contact has not
	// written since (the inactive rules' clock); Released, whether its
	// agent's capacity is freed until the contact writes again.
	QuietSince string `json:"quiet_since,omitempty"`
	Released   bool   `json:"released,omitempty"`
}

// WaitingView is one conversation waiting in a line.
type WaitingView struct {
	Conversation string  `json:"conversation"`
	Priority     int     `json:"priority"`
	Since        string  `json:"since"`
	WaitSeconds  float64 `json:"wait_seconds"`
	Rule         string  `json:"rule"`
}

// QueueView is a waiting line: a group's or an agent's, oldest first within
// priority.
type QueueView struct {
	Group   string        `json:"group,omitempty"`
	Agent   string        `json:"agent,omitempty"`
	Waiting []WaitingView `json:"waiting"`
}

func agentView(a *actions.Agent, convs, offered []string) AgentView {
	v := AgentView{ID: a.ID, Name: a.Name, Status: a.Status, Presence: a.Presence, Load: float64(a.Load) / actions.Unit,
		Capacity: float64(a.Capacity) / actions.Unit, Open: a.Open, Conversations: convs, Offered: offered,
		Declined: a.Declined, Missed: a.Missed, MissedInARow: a.MissedInARow}
	if !a.LastActive.IsZero() {
		v.LastActive = a.LastActive.UTC().Format(time.RFC3339)
	}
	if a.PerChannel {
		v.Channels = []ChannelLoadView{}
		for _, b := range a.Budgets() {
			v.Channels = append(v.Channels, ChannelLoadView{Channel: b.Channel, Load: float64(b.Load) / actions.Unit,
				Capacity: float64(b.Capacity) / actions.Unit, Open: b.Open})
		}
		if c, ok := a.DefaultBudget(); ok {
			d := float64(c) / actions.Unit
			v.DefaultCapacity = &d
		}
	}
	return v
}

// Agents returns every agent's state, in team.yaml order.
func (e *Engine) Agents() []AgentView {
	byAgent, offered := e.openByAgent()
	out := make([]AgentView, 0, len(e.pool.Agents))
	for _, a := range e.pool.Agents {
		out = append(out, agentView(a, byAgent[a], offered[a]))
	}
	return out
}

// Agent returns one agent's state.
func (e *Engine) Agent(id string) (AgentView, bool) {
	a := e.pool.Agent(id)
	if a == nil {
		return AgentView{}, false
	}
	byAgent, offered := e.openByAgent()
	return agentView(a, byAgent[a], offered[a]), true
}

// openByAgent lists each agent's open conversations, and those offered to
// it, in id order.
func (e *Engine) openByAgent() (assigned, offered map[*actions.Agent][]string) {
	assigned, offered = map[*actions.Agent][]string{}, map[*actions.Agent][]string{}
	for _, c := range e.convs {
		if c.assignee != nil {
			assigned[c.assignee] = append(assigned[c.assignee], c.id)
		}
		if c.offer != nil {
			offered[c.offer.agent] = append(offered[c.offer.agent], c.id)
		}
	}
	for _, ids := range assigned {
		slices.Sort(ids)
	}
	for _, ids := range offered {
		slices.Sort(ids)
	}
	return assigned, offered
}

// Conversation returns an open conversation's state.
func (e *Engine) Conversation(id string) (ConversationView, bool) {
	c := e.convs[id]
	if c == nil {
		return ConversationView{}, false
	}
	v := ConversationView{ID: c.id, Contact: c.contact.id, Channel: c.channel, To: c.to, Status: c.status,
		Queue: c.queue, Priority: c.priority, Tags: slices.Clone(c.tags), CreatedAt: c.createdAt.UTC().Format(time.RFC3339),
		Attrs: maps.Clone(c.attrs), PreviousAgent: c.previous.String()}
	if c.assignee != nil {
		v.Agent = c.assignee.ID
	}
	if w := c.waiting; w != nil {
		v.WaitsFor = strings.TrimPrefix(c.where(), "waiting ")
	}
	if o := c.offer; o != nil {
		v.OfferedTo, v.OfferExpires = o.agent.ID, o.expires.UTC().Format(time.RFC3339Nano)
	}
	if !c.quietSince.IsZero() {
		v.QuietSince = c.quietSince.UTC().Format(time.RFC3339Nano)
	}
	v.Released = c.released
	return v, true
}

// Queues returns every non-empty waiting line: groups in team.yaml order,
// then agents. Waits are measured up to now (the engine's clock if now is
// before it): a service passes the wall clock, so waits grow between events.
func (e *Engine) Queues(now time.Time) []QueueView {
	if now.Before(e.clock) {
		now = e.clock
	}
	var out []QueueView
	view := func(l *actions.Line) []WaitingView {
		var ws []WaitingView
		for _, w := range l.Entries() {
			ws = append(ws, WaitingView{Conversation: w.Conversation, Priority: w.Priority, Rule: w.Rule,
				Since: w.Since.UTC().Format(time.RFC3339), WaitSeconds: now.Sub(w.Since).Seconds()})
		}
		return ws
	}
	for _, g := range e.pool.Groups {
		if l := e.groupLines[g]; l != nil && len(l.Entries()) > 0 {
			out = append(out, QueueView{Group: g.Name, Waiting: view(l)})
		}
	}
	for _, a := range e.pool.Agents {
		if l := e.agentLines[a]; l != nil && len(l.Entries()) > 0 {
			out = append(out, QueueView{Agent: a.ID, Waiting: view(l)})
		}
	}
	return out
}

// NextDue is when the next unanswered timer is due, an offer expires or
// a fairness window gives an agent budget back; ok is false when nothing
// is pending. A service ticks the engine then. Timers and offers that can
// no longer fire (answered or closed since) do not count: NextDue lets
// them go.
func (e *Engine) NextDue() (t time.Time, ok bool) {
	for len(e.timers) > 0 && !e.timers[0].live() {
		e.dropTimer(heap.Pop(&e.timers).(*timer))
	}
	for len(e.offers) > 0 && !e.offers[0].live() {
		heap.Pop(&e.offers)
	}
	consider := func(due time.Time) {
		if !ok || due.Before(t) {
			t, ok = due, true
		}
	}
	if len(e.timers) > 0 {
		consider(e.timers[0].due)
	}
	if len(e.offers) > 0 {
		consider(e.offers[0].expires)
	}
	if due, has := e.pool.NextWindow(); has {
		consider(due)
	}
	return t, ok
}

// Clock is the time of the latest event.
func (e *Engine) Clock() time.Time { return e.clock }

// AboutView is what is known of a conversation and its contact, for a
// notification made about it.
type AboutView struct {
	Contact                          string
	ContactName, ContactEmail, Phone string
	// The rest is known while the conversation is open.
	Open         bool
	Channel, To  string
	Where        string    // "with ana", "waiting in group Support", ...
	Message      string    // the last message the contact wrote
	WaitingSince time.Time // the oldest unanswered message; zero if answered
}

// About describes a conversation for a notification, right after the
// decision that made it: the conversation if it is open, and the contact
// (contact names it when the conversation is closed and gone).
func (e *Engine) About(conv, contact string) AboutView {
	var v AboutView
	c := e.convs[conv]
	if c != nil {
		contact = c.contact.id
		v.Open, v.Channel, v.To, v.Where = true, c.channel, c.to, c.where()
		v.Message, v.WaitingSince = c.lastMessage.Text, c.waitingSince
	}
	if k := e.contacts.byID[contact]; k != nil {
		v.Contact, v.ContactName, v.ContactEmail, v.Phone = k.id, k.name, k.email, k.phone
	}
	return v
}
