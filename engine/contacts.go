package engine

import (
	"slices"

	"github.com/switchboard-dev/switchboard/triggers"
)

// ConversationContact returns the contact of an open conversation; "" for
// none.
func (e *Engine) ConversationContact(conv string) string {
	if c := e.convs[conv]; c != nil {
		return c.contact.id
	}
	return ""
}

// Contacts lists the contacts a decision concerns: first the event's own
// (own, when the caller looked it up before deciding, as a closing
// conversation is gone after), then those whose conversations its actions
// touched. A store files the decision under each, so that erasing a
// contact finds every record that holds its data.
func (e *Engine) Contacts(ev *triggers.Event, own string, d *Decision) []string {
	var out []string
	if ev.Contact != nil && ev.Contact.ID != "" {
		own = ev.Contact.ID
	}
	if own != "" {
		out = append(out, own)
	}
	for i := range d.Actions {
		conv := d.Actions[i].Conversation
		if conv == "" || conv == d.Conversation && own != "" {
			continue
		}
		if c := e.ConversationContact(conv); c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// ContactConversations lists the open conversations of a contact, sorted.
func (e *Engine) ContactConversations(id string) []string {
	var out []string
	for _, c := range e.convs {
		if c.contact.id == id {
			out = append(out, c.id)
		}
	}
	slices.Sort(out)
	return out
}
