package engine

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Decision is what the engine decided for one event.
type Decision struct {
	Event string
	// Conversation is the event's conversation; empty for none.
	Conversation string
	Actions      []Action
	// RuleSet is the version of the rule set that decided.
	RuleSet string
}

// Action types in decisions.
const (
	ActAssign = "assign"
	ActQueued = "queued"
	ActReply  = "reply"
	ActNotify = "notify"
	ActTag    = "tag"
	ActSet    = "set"
	// ActUnassign takes the conversation from Agent; ActUntag removes Tag;
	// ActCancel takes it out of the line of Group or Agent.
	ActUnassign = "unassign"
	ActUntag    = "untag"
	ActCancel   = "cancel"
	// ActOffer offers the conversation to Agent until Expires: capacity is
	// held for it, and an offer.accepted event assigns it (Offered).
	ActOffer = "offer"
	// ActRelease keeps the conversation with Agent but frees the capacity
	// it takes until the contact writes again; ActClose closes it (Agent:
	// the agent it was with).
	ActRelease = "release"
	ActClose   = "close"
)

// Action is one thing the engine did. Which fields are set depends on Type.
type Action struct {
	Type string
	// Rule is the rule that caused the action (for work placed from a
	// waiting line, the rule that queued it).
	Rule         string
	Conversation string
	Agent        string // assign: the agent; queued: the agent it waits for
	Queue        string // assign to a queue
	Group        string // assign from a group, or queued in a group
	Algorithm    string
	From         string // reassign: the previous agent
	FromQueue    bool   // placed from a waiting line by a later event
	Offered      bool   // assign: the agent accepted an offer
	Expires      time.Time
	Target       string // notify: the agent told
	Endpoint     string // notify webhook NAME: the endpoint
	Address      string // notify email "ADDRESS": the address
	Via          string
	Text         string
	Tag          string
	Path         string // set
	Value        any    // set
}

// MarshalJSON renders the decision as one line of the simulator's output.
func (d Decision) MarshalJSON() ([]byte, error) { return d.AppendJSON(nil), nil }

// AppendJSON appends the decision's JSON form, without a newline.
func (d *Decision) AppendJSON(b []byte) []byte {
	b = append(b, `{"event":`...)
	b = appendString(b, d.Event)
	b = append(b, `,"conversation":`...)
	if d.Conversation == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, d.Conversation)
	}
	b = append(b, `,"actions":[`...)
	for i := range d.Actions {
		if i > 0 {
			b = append(b, ',')
		}
		b = d.Actions[i].appendJSON(b)
	}
	b = append(b, ']')
	if d.RuleSet != "" {
		b = append(b, `,"rules":`...)
		b = appendString(b, d.RuleSet)
	}
	return append(b, '}')
}

func (a *Action) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, a.Type)
	b = append(b, `,"rule":`...)
	b = appendString(b, a.Rule)
	field := func(name, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, name...)
			b = append(b, '"', ':')
			b = appendString(b, v)
		}
	}
	field("conversation", a.Conversation)
	field("agent", a.Agent)
	field("queue", a.Queue)
	field("group", a.Group)
	field("algorithm", a.Algorithm)
	field("from", a.From)
	if a.FromQueue {
		b = append(b, `,"from_queue":true`...)
	}
	if a.Offered {
		b = append(b, `,"offered":true`...)
	}
	if !a.Expires.IsZero() {
		b = append(b, `,"expires":"`...)
		b = a.Expires.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	field("target", a.Target)
	field("endpoint", a.Endpoint)
	field("address", a.Address)
	field("via", a.Via)
	field("text", a.Text)
	field("tag", a.Tag)
	field("path", a.Path)
	if a.Type == ActSet {
		b = append(b, `,"value":`...)
		v, err := json.Marshal(a.Value)
		if err != nil {
			v = []byte("null")
		}
		b = append(b, v...)
	}
	return append(b, '}')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does
// (without HTML escaping), invalid UTF-8 replaced.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = strconv.AppendInt(b, int64(r&0xf), 16)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
