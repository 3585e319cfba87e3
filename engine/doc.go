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
package engine
