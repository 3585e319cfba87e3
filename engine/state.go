package engine

import (
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Conversation status values.
const (
	StatusOpen   = "open"
	StatusClosed = "closed"
)

type contact struct {
	id                                string
	name, email, phone, lang, country string
	owner                             string
	lastSender                        string
	tags                              []string
	attrs                             map[string]any
	conversations                     int // opened so far
	open                              map[convKey]*conversation
}

type convKey struct{ channel, to string }

type conversation struct {
	id        string
	contact   *contact
	channel   string
	to        string
	status    string
	createdAt time.Time
	priority  int
	tags      []string
	// contactNew records whether the contact had no earlier conversation.
	contactNew bool

	// Where it is: with an agent, owned by a queue, or waiting in a line.
	assignee *actions.Agent
	load     int64
	queue    string
	waiting  *actions.Waiting

	// Unanswered tracking: the oldest inbound message no agent has answered
	// yet, and a streak number that timers check against.
	waitingSince time.Time
	streak       int
	lastMessage  triggers.EventMessage
	// timers counts the pending timers that point at the conversation;
	// batch orders its current streak's timers among others due at once.
	timers int
	batch  uint64
}

func (c *conversation) placed() bool { return c.assignee != nil || c.queue != "" || c.waiting != nil }

// where describes the conversation's place, for traces.
func (c *conversation) where() string {
	switch {
	case c.assignee != nil:
		return "with " + c.assignee.ID
	case c.queue != "":
		return "in queue " + c.queue
	case c.waiting != nil && c.waiting.Agent != nil:
		return "waiting for " + c.waiting.Agent.ID
	case c.waiting != nil:
		return "waiting in " + c.waiting.Group.Name
	}
	return "unassigned"
}
