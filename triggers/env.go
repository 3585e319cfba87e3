package triggers

import "time"

// Message is the message that fired the rule (message.received, message.sent).
type Message struct {
	ID      string    `expr:"id" json:"id"`
	Text    string    `expr:"text" json:"text"`
	Lang    string    `expr:"lang" json:"lang"`
	Channel string    `expr:"channel" json:"channel"`
	From    string    `expr:"from" json:"from"`
	To      string    `expr:"to" json:"to"`
	At      time.Time `expr:"at" json:"at"`
}

// Contact is the customer on the other end of the conversation.
type Contact struct {
	ID      string `expr:"id" json:"id"`
	Name    string `expr:"name" json:"name"`
	Email   string `expr:"email" json:"email"`
	Phone   string `expr:"phone" json:"phone"`
	Lang    string `expr:"lang" json:"lang"`
	Country string `expr:"country" json:"country"`
	// Owner is the agent who owns the contact: the CRM record owner when the
	// event names one, else the first agent the contact was assigned to.
	Owner string `expr:"owner" json:"owner"`
	// IsNew is true until the contact has had a conversation.
	IsNew bool     `expr:"is_new" json:"is_new"`
	Tags  []string `expr:"tags" json:"tags"`
	// Attrs holds custom attributes: contact.attrs.plan.
	Attrs map[string]any `expr:"attrs" json:"attrs"`
}

// Conversation is the conversation the event belongs to.
type Conversation struct {
	ID       string `expr:"id" json:"id"`
	Status   string `expr:"status" json:"status"`
	Assignee string `expr:"assignee" json:"assignee"`
	Channel  string `expr:"channel" json:"channel"`
	// To is the number or inbox the contact wrote to.
	To string `expr:"to" json:"to"`
	// Priority is 1 (most urgent) and up; 5 unless a rule set it.
	Priority  int       `expr:"priority" json:"priority"`
	Tags      []string  `expr:"tags" json:"tags"`
	IsNew     bool      `expr:"is_new" json:"is_new"`
	CreatedAt time.Time `expr:"created_at" json:"created_at"`
	// Attrs holds the conversation's custom attributes.
	Attrs map[string]any `expr:"attrs" json:"attrs"`
	// Reopened is true for the message that reopened a closed
	// conversation (team.yaml reopen_within).
	Reopened bool `expr:"reopened" json:"reopened"`
	// AssigneeGroup is the group the assign that placed the conversation
	// chose its agent from; "" after a user, owner, last_sender or
	// previous_agent assign.
	AssigneeGroup string `expr:"assignee_group" json:"assignee_group"`
	// WaitingSince is when the conversation entered its current waiting
	// line; the zero time when it waits in none.
	WaitingSince time.Time `expr:"waiting_since" json:"waiting_since"`
}

// Previous is what a conversation.updated event changed from.
type Previous struct {
	Status   string         `expr:"status" json:"status"`
	Tags     []string       `expr:"tags" json:"tags"`
	Priority int            `expr:"priority" json:"priority"`
	Attrs    map[string]any `expr:"attrs" json:"attrs"`
}

// Agent is the agent of an agent.status event.
type Agent struct {
	ID string `expr:"id" json:"id"`
	// Status is the agent's status as named: online, away, offline or one
	// of team.yaml's statuses (lunch); Presence, what it routes as.
	Status   string `expr:"status" json:"status"`
	Presence string `expr:"presence" json:"presence"`
	// Declined counts the offers the agent declined; MissedInARow, the
	// offers it let expire since it last accepted or declined one.
	Declined     int `expr:"declined" json:"declined"`
	MissedInARow int `expr:"missed_in_a_row" json:"missed_in_a_row"`
}

// Env is what a condition sees. Conditions are compiled against this type,
// so a misspelt field is a compile error rather than a silent false.
//
// The function fields are filled by the engine; their signatures are fixed
// here so that conditions type-check. online("") counts every online agent;
// the rule language lets authors write it as online().
type Env struct {
	Message      Message      `expr:"message"`
	Contact      Contact      `expr:"contact"`
	Conversation Conversation `expr:"conversation"`
	Agent        Agent        `expr:"agent"`
	// Previous is the conversation as it was before a conversation.updated
	// event (and a snoozed conversation turned open by a message).
	Previous Previous  `expr:"previous"`
	Now      time.Time `expr:"now"`

	// Shorthands.
	Lang    string `expr:"lang"` // message.lang, else contact.lang
	Channel string `expr:"channel"`
	Text    string `expr:"text"`
	Country string `expr:"country"`

	// Online counts the online members of a group ("" for all agents).
	Online func(group string) int `expr:"online"`
	// IsOnline reports whether an agent is online.
	IsOnline func(agent string) bool `expr:"is_online"`
	// Available counts online members of a group with spare capacity.
	Available func(group string) int `expr:"available"`
	// InSegment reports whether the contact is in a named segment.
	InSegment func(segment string) bool `expr:"in_segment"`
	// BusinessHours reports whether now falls within a spec such as
	// "Mon-Fri 09:00-17:00 Europe/Paris".
	BusinessHours func(spec string) bool `expr:"business_hours"`
	// InGroup reports whether an agent is a member of a group.
	InGroup func(agent, group string) bool `expr:"in_group"`
}

// Function names as conditions spell them.
const (
	FuncOnline        = "online"
	FuncIsOnline      = "is_online"
	FuncAvailable     = "available"
	FuncInSegment     = "in_segment"
	FuncBusinessHours = "business_hours"
	FuncInGroup       = "in_group"
)

// StringFields maps the plain text fields a condition can test for equality
// to a getter, so that rules can be indexed by their "field == 'value'" and
// "field in [...]" clauses.
var StringFields = map[string]func(*Env) string{
	"lang":                  func(e *Env) string { return e.Lang },
	"channel":               func(e *Env) string { return e.Channel },
	"text":                  func(e *Env) string { return e.Text },
	"message.text":          func(e *Env) string { return e.Message.Text },
	"contact.name":          func(e *Env) string { return e.Contact.Name },
	"country":               func(e *Env) string { return e.Country },
	"message.id":            func(e *Env) string { return e.Message.ID },
	"message.lang":          func(e *Env) string { return e.Message.Lang },
	"message.channel":       func(e *Env) string { return e.Message.Channel },
	"message.from":          func(e *Env) string { return e.Message.From },
	"message.to":            func(e *Env) string { return e.Message.To },
	"contact.id":            func(e *Env) string { return e.Contact.ID },
	"contact.email":         func(e *Env) string { return e.Contact.Email },
	"contact.phone":         func(e *Env) string { return e.Contact.Phone },
	"contact.lang":          func(e *Env) string { return e.Contact.Lang },
	"contact.country":       func(e *Env) string { return e.Contact.Country },
	"contact.owner":         func(e *Env) string { return e.Contact.Owner },
	"conversation.id":       func(e *Env) string { return e.Conversation.ID },
	"conversation.status":   func(e *Env) string { return e.Conversation.Status },
	"conversation.assignee": func(e *Env) string { return e.Conversation.Assignee },
	"conversation.channel":  func(e *Env) string { return e.Conversation.Channel },
	"conversation.to":       func(e *Env) string { return e.Conversation.To },
	"agent.id":              func(e *Env) string { return e.Agent.ID },
	"agent.status":          func(e *Env) string { return e.Agent.Status },
	"agent.presence":        func(e *Env) string { return e.Agent.Presence },
	"previous.status":       func(e *Env) string { return e.Previous.Status },

	"conversation.assignee_group": func(e *Env) string { return e.Conversation.AssigneeGroup },
}
