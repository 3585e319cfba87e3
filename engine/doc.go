// Package engine runs a compiled rule set against a stream of events and
// decides, for each event, what happens: who gets the conversation, who is
// notified, what is replied.
//
// An [Engine] holds the live state (agents, contacts, conversations,
// waiting lines, unanswered timers) and is not safe for concurrent use:
// feed it one event at a time. The same rule set, events and seed give
// byte-identical decisions.
//
// Conditions run on a typed environment ([triggers.Env]) boxed once per
// engine and refilled in place for each event, with one reused expr VM, so
// that a decision allocates nothing in steady state.
//
// [Engine.Snapshot] encodes the whole live state and [Restore] builds an
// engine in that state, so that a service restarts from a snapshot and the
// events after it rather than from every event. [Engine.EraseContact]
// erases a contact's personal data.
package engine
