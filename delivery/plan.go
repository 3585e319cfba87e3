package delivery

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/store"
)

// Decision is what planning needs to know of one decision.
type Decision struct {
	Seq          int64     // its record
	At           time.Time // the service's clock when it was made
	Event        string    // the event's id
	Conversation string
	Contact      string // the contact the record is about first, for erasure
	JSON         []byte // the decision, as answered
	Actions      []engine.Action
}

// Planner turns decisions into the deliveries they owe. It is used by the
// commit loop, one decision at a time, right after the decision is made.
type Planner struct {
	cfg *Config
}

// NewPlanner plans for a configuration; nil is the configuration without
// receivers.
func NewPlanner(cfg *Config) *Planner {
	if cfg == nil {
		cfg = NewConfig()
	}
	return &Planner{cfg: cfg}
}

// Config is the configuration planned for.
func (p *Planner) Config() *Config { return p.cfg }

// DeliveryID is the id of a record's n-th delivery: the same on every
// attempt, and unique across the log.
func DeliveryID(seq int64, n int) string { return store.DeliveryID(seq, n) }

// Plan returns the deliveries a decision owes to the outbox: each notify
// action, to its endpoint or by email. The decision itself is owed to the
// platform's endpoint too, as delivery 0 of its record, but that one is
// sent by the feed, straight from the log (see Item). about describes a
// conversation as it is now (just after the decision); team names the
// agents' addresses. A delivery that cannot be made as configured is
// planned dead, with the reason, so that it shows and can be retried once
// the configuration is complete.
func (p *Planner) Plan(d Decision, team *dsl.Team, about func(conv string) engine.AboutView) []store.Delivery {
	var out []store.Delivery
	first := 0
	if p.cfg.Platform != nil {
		first = 1 // the decision to the platform
	}
	add := func(dest, line, kind, contact string, body []byte, deadWhy string) {
		n := first + len(out)
		del := store.Delivery{ID: DeliveryID(d.Seq, n), Seq: d.Seq, N: n, Destination: dest, Line: line, Kind: kind,
			Contact: contact, Body: body, Created: d.At, Due: d.At, Expires: d.At.Add(p.cfg.MaxAge)}
		if deadWhy != "" {
			del.Status, del.Error, del.Done = store.Dead, deadWhy, d.At
		}
		out = append(out, del)
	}
	next := func() string { return DeliveryID(d.Seq, first+len(out)) }
	for i := range d.Actions {
		a := &d.Actions[i]
		if a.Type != engine.ActNotify {
			continue
		}
		switch {
		case a.Via == "webhook":
			dest, why := Platform, ""
			if a.Endpoint != "" {
				dest = WebhookDestination(a.Endpoint)
				if p.cfg.Endpoints[a.Endpoint] == nil {
					why = fmt.Sprintf("no endpoint %s configured", a.Endpoint)
				}
			} else if p.cfg.Platform == nil {
				why = "no platform endpoint configured (notify … via webhook goes to the platform)"
			}
			n := p.notice(d, a, team, about)
			add(dest, a.Conversation, KindNotify, n.About.Contact.ID, cloudEvent(TypeNotify, p.cfg.Source, next(), a.Conversation, d.At, d.Seq, marshal(n)), why)
		case a.Via == "email":
			to, why := a.Address, ""
			if to == "" {
				ag := team.Agent(a.Target)
				switch {
				case ag == nil:
					why = fmt.Sprintf("agent %s is not in team.yaml, so has no email address", a.Target)
				case ag.Email == "":
					why = fmt.Sprintf("agent %s has no email address in team.yaml", a.Target)
				default:
					to = ag.Email
				}
			}
			if why == "" && p.cfg.SMTP == nil {
				why = "no SMTP server configured"
			}
			var rcpt []string
			if to != "" {
				rcpt = []string{to}
			}
			m := p.mail(d, a, rcpt, about)
			// The email is about the contact of its conversation, whatever
			// the event was: an erasure of that contact finds it.
			add(Email, a.Conversation, KindEmail, firstOf(about(a.Conversation).Contact, d.Contact), marshal(m), why)
		}
	}
	return out
}

// Item is the platform's delivery of a decision, planned as the decision
// is made, or read back from the log.
func (p *Planner) Item(d Decision) (Item, bool) {
	if p.cfg.Platform == nil {
		return Item{}, false
	}
	return Item{Seq: d.Seq, Line: Line(d.Conversation, d.Actions), Contact: d.Contact, Clock: d.At, Decision: d.JSON}, true
}

// Line is where a decision is ordered among the platform's deliveries: its
// conversation, or, for a decision of no conversation of its own (a timer
// firing, an agent coming online), the first it acts on.
func Line(conversation string, actions []engine.Action) string {
	for i := 0; conversation == "" && i < len(actions); i++ {
		conversation = actions[i].Conversation
	}
	return conversation
}

// notice is the data of a notify webhook.
func (p *Planner) notice(d Decision, a *engine.Action, team *dsl.Team, about func(string) engine.AboutView) Notice {
	n := Notice{Rule: a.Rule, Target: a.Target, Via: a.Via, Text: a.Text, Conversation: a.Conversation, Event: d.Event}
	if a.Endpoint != "" {
		n.Target = ""
	}
	if ag := team.Agent(a.Target); ag != nil {
		n.Agent = &NoticeAgent{ID: ag.ID, Name: ag.Name, Email: ag.Email}
	}
	v := about(a.Conversation)
	n.About = About{Contact: Contact{ID: v.Contact, Name: v.ContactName, Email: v.ContactEmail, Phone: v.Phone},
		Channel: v.Channel, To: v.To, Message: v.Message, Since: v.WaitingSince, Open: v.Open}
	if v.Open {
		n.About.Assignee, _ = strings.CutPrefix(v.Where, "with ")
		if n.About.Assignee == v.Where {
			n.About.Assignee = ""
		}
	}
	return n
}

// mail writes the email of a notify action: what a person needs to act on
// it without opening anything else.
func (p *Planner) mail(d Decision, a *engine.Action, to []string, about func(string) engine.AboutView) Mail {
	v := about(a.Conversation)
	who := firstOf(v.ContactName, v.Phone, v.ContactEmail, v.Contact, "a contact")
	subject := ""
	if a.Text != "" {
		subject = firstLine(a.Text)
	} else if v.Open && !v.WaitingSince.IsZero() {
		subject = fmt.Sprintf("%s is waiting for an answer on %s", who, firstOf(v.Channel, "a channel"))
	} else if a.Conversation != "" {
		subject = fmt.Sprintf("Conversation %s with %s", a.Conversation, who)
	} else {
		subject = "Switchboard notification"
	}
	var b strings.Builder
	if a.Text != "" {
		b.WriteString(a.Text + "\n\n")
	}
	if a.Conversation != "" {
		contact := who
		if extra := strings.Join(nonEmpty(v.Phone, v.ContactEmail), ", "); extra != "" && extra != who {
			contact += " (" + extra + ")"
		}
		switch {
		case v.Open && v.Channel != "":
			fmt.Fprintf(&b, "%s wrote on %s to %s.\n", contact, v.Channel, firstOf(v.To, "your inbox"))
		default:
			fmt.Fprintf(&b, "Contact: %s.\n", contact)
		}
		if v.Message != "" {
			fmt.Fprintf(&b, "Last message: %q\n", excerpt(v.Message, 500))
		}
		if v.Open && !v.WaitingSince.IsZero() {
			fmt.Fprintf(&b, "Waiting for an answer since %s (%s).\n", v.WaitingSince.UTC().Format("2006-01-02 15:04 UTC"), d.At.Sub(v.WaitingSince).Round(time.Minute))
		}
		if v.Open {
			fmt.Fprintf(&b, "The conversation is %s.\n", strings.TrimPrefix(v.Where, "waiting "))
		} else {
			b.WriteString("The conversation is closed.\n")
		}
		if p.cfg.ConsoleURL != "" {
			fmt.Fprintf(&b, "\nOpen it: %s/conversations/%s\n", strings.TrimSuffix(p.cfg.ConsoleURL, "/"), a.Conversation)
		}
	}
	fmt.Fprintf(&b, "\nYou get this because the rule %q says so.\n", a.Rule)
	fmt.Fprintf(&b, "-- \nSwitchboard · conversation %s · event %s\n", firstOf(a.Conversation, "none"), d.Event)
	return Mail{To: to, Agent: a.Target, Subject: "[Switchboard] " + excerpt(subject, 120), Text: b.String()}
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// excerpt cuts s to n runes, with an ellipsis when cut.
func excerpt(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
