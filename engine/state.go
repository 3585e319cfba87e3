package engine

import (
	"time"
	"unique"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Conversation status values.
const (
	StatusOpen    = triggers.StatusOpen
	StatusPending = triggers.StatusPending
	StatusSnoozed = triggers.StatusSnoozed
	StatusClosed  = triggers.StatusClosed
)

// contact is what the engine knows of a customer. Every contact ever seen
// stays in memory, so it is kept small: the values many contacts share
// (language, country, owner, last sender) are interned, and its open
// conversations are a chain through the conversations, not a map.
type contact struct {
	id                 string
	name, email, phone string
	lang, country      sym
	owner              sym
	lastSender         sym
	tags               []string
	attrs              map[string]any
	// open is the contact's open conversation for each (channel, to), the
	// one a message without a conversation id joins, chained through
	// conversation.nextOpen; usually none or one. An open conversation is
	// not in the chain once another one was opened by id on its channel
	// and number.
	open          *conversation
	conversations int // opened so far
	// closed are the contact's latest closed conversations, one per
	// (channel, to), kept while team.yaml's reopen_within may reopen them;
	// chained through conversation.nextOpen like open.
	closed *conversation
}

// contactSet holds every contact the engine has seen, by id and in the
// order they came. They are allocated in chunks, so that a million contacts
// are a thousand allocations rather than a million, and so that a snapshot
// reads them in the order they lie in memory.
type contactSet struct {
	byID   map[string]*contact
	chunks [][]contact
}

// maxChunk is the most contacts allocated at once.
const maxChunk = 1024

func (s *contactSet) get(id string) *contact { return s.byID[id] }

func (s *contactSet) len() int { return len(s.byID) }

// add adds a contact with that id, which is not in the set.
func (s *contactSet) add(id string) *contact {
	n := len(s.chunks)
	if n == 0 || len(s.chunks[n-1]) == cap(s.chunks[n-1]) {
		size := 16
		if n > 0 {
			size = min(max(2*cap(s.chunks[n-1]), size), maxChunk)
		}
		s.chunks = append(s.chunks, make([]contact, 0, size))
		n++
	}
	chunk := &s.chunks[n-1]
	*chunk = append(*chunk, contact{id: id})
	c := &(*chunk)[len(*chunk)-1]
	s.byID[id] = c
	return c
}

// openFor returns the contact's open conversation on channel and to, or nil.
func (c *contact) openFor(channel, to string) *conversation {
	for v := c.open; v != nil; v = v.nextOpen {
		if v.channel == channel && v.to == to {
			return v
		}
	}
	return nil
}

// setOpen makes v the contact's open conversation on its channel and to,
// in place of the one there was.
func (c *contact) setOpen(v *conversation) {
	p := &c.open
	for ; *p != nil; p = &(*p).nextOpen {
		if o := *p; o.channel == v.channel && o.to == v.to {
			v.nextOpen, o.nextOpen = o.nextOpen, nil
			*p = v
			return
		}
	}
	v.nextOpen = nil
	*p = v
}

// dropOpen takes v out of the contact's open conversations, if it is one.
func (c *contact) dropOpen(v *conversation) {
	for p := &c.open; *p != nil; p = &(*p).nextOpen {
		if *p == v {
			*p, v.nextOpen = v.nextOpen, nil
			return
		}
	}
}

// closedFor returns the contact's latest closed conversation on channel
// and to that is kept for reopening, or nil.
func (c *contact) closedFor(channel, to string) *conversation {
	for v := c.closed; v != nil; v = v.nextOpen {
		if v.channel == channel && v.to == to {
			return v
		}
	}
	return nil
}

// keepClosed files v as the contact's latest closed conversation on its
// channel and to; it returns the one it replaces, or nil.
func (c *contact) keepClosed(v *conversation) *conversation {
	for p := &c.closed; *p != nil; p = &(*p).nextOpen {
		if o := *p; o.channel == v.channel && o.to == v.to {
			v.nextOpen, o.nextOpen = o.nextOpen, nil
			*p = v
			return o
		}
	}
	v.nextOpen = c.closed
	c.closed = v
	return nil
}

// dropClosed takes v out of the contact's kept closed conversations.
func (c *contact) dropClosed(v *conversation) {
	for p := &c.closed; *p != nil; p = &(*p).nextOpen {
		if *p == v {
			*p, v.nextOpen = v.nextOpen, nil
			return
		}
	}
}

// isOpen reports whether v is the contact's open conversation on its
// channel and to.
func (c *contact) isOpen(v *conversation) bool {
	for o := c.open; o != nil; o = o.nextOpen {
		if o == v {
			return true
		}
	}
	return false
}

// sym is an interned string: one word, the text shared by every holder.
type sym struct{ h unique.Handle[string] }

func intern(s string) sym {
	if s == "" {
		return sym{}
	}
	return sym{unique.Make(s)}
}

func (s sym) String() string {
	if s.h == (unique.Handle[string]{}) {
		return ""
	}
	return s.h.Value()
}

type conversation struct {
	id        string
	contact   *contact
	channel   string
	to        string
	status    string
	createdAt time.Time
	priority  int
	tags      []string
	attrs     map[string]any
	// contactNew records whether the contact had no earlier conversation.
	contactNew bool
	// previous is the agent who had the conversation last (previous_agent);
	// group, the group its agent was chosen from ("" for a named agent).
	previous sym
	group    string
	// closedAt is when it closed; kept, whether it is kept for reopening
	// (contact.closed), which a recycled conversation must not be.
	closedAt time.Time
	kept     bool
	// held: the contact waits for an answer while the conversation is
	// pending or snoozed, so its unanswered clock starts when it turns open.
	held bool

	// Where it is: with an agent, owned by a queue, or waiting in a line.
	assignee *actions.Agent
	load     int64
	queue    string
	waiting  *actions.Waiting
	// offer is the offer in flight, if any; excluded, the agents who
	// declined an offer of it or let one expire.
	offer    *offer
	excluded []*actions.Agent

	// Unanswered tracking: the oldest inbound message no agent has answered
	// yet, and a streak number that timers check against.
	waitingSince time.Time
	streak       int
	lastMessage  triggers.EventMessage
	// Inactive tracking: when an agent last wrote, while the contact has
	// not written since (zero otherwise); the inactive rules' timers, one
	// per rule (nil once it ran); released, whether its agent's capacity
	// is freed until the contact writes again (load is what it takes
	// back).
	quietSince time.Time
	quietBatch uint64
	quiet      []*timer
	released   bool
	// timers counts the pending timers that point at the conversation;
	// batch orders its current streak's timers among others due at once.
	timers int
	batch  uint64

	// nextOpen chains the contact's open conversations (contact.open).
	nextOpen *conversation
}

func (c *conversation) placed() bool {
	return c.assignee != nil || c.queue != "" || c.waiting != nil || c.offer != nil
}

// recyclable reports whether nothing points at a closed conversation any
// more, so that it may be reused.
func (c *conversation) recyclable() bool { return c.status == StatusClosed && c.timers == 0 && !c.kept }

// where describes the conversation's place, for traces.
func (c *conversation) where() string {
	switch {
	case c.offer != nil && c.assignee == nil:
		return "offered to " + c.offer.agent.ID + " until " + c.offer.expires.UTC().Format(time.RFC3339Nano)
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
