package engine

import "github.com/switchboard-dev/switchboard/triggers"

// EraseContact erases what the engine holds of a contact's personal data:
// its name, email, phone and custom attributes, its conversations' custom
// attributes, and the text and id of the message each of its open
// conversations keeps for unanswered rules. What
// routes its conversations stays as it is: its id, owner, language,
// country and tags, its open conversations with their agents, queues,
// waiting places and timers. Later decisions, traces, views and snapshots
// hold none of the erased data; the Actions of the last decision are no
// longer valid. It reports whether the contact was known.
func (e *Engine) EraseContact(id string) bool {
	c := e.contacts.get(id)
	if c == nil {
		return false
	}
	c.name, c.email, c.phone = "", "", ""
	c.attrs = nil
	for _, conv := range e.convs {
		if conv.contact == c {
			conv.lastMessage = triggers.EventMessage{Lang: conv.lastMessage.Lang}
			conv.attrs = nil
		}
	}
	for v := c.closed; v != nil; v = v.nextOpen {
		v.attrs = nil
	}
	// What the last decision left behind: its environment and actions.
	*e.env = e.base
	clear(e.out[:cap(e.out)])
	return true
}
