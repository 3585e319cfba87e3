// Package delivery takes Switchboard's actions out of the building: every
// decision to the messaging platform's webhook, `notify … via webhook` to
// named endpoints, and `notify … via email` through an SMTP server.
//
// A decision's notifications are planned when it is made (Planner) and
// stored with it, in the same transaction, in the store's outbox: nothing
// is delivered that was not committed. A Dispatcher then works the outbox:
// at least once, in order per destination and conversation, with
// exponential backoff and jitter, honouring Retry-After, until delivered,
// refused, or too old. Each delivery keeps one id on every attempt, so
// receivers can drop duplicates.
//
// The decision itself is owed to the platform's endpoint, every one of
// them, so for it the log is the outbox: the Dispatcher's feed sends the
// decisions after its cursor straight from the log (the newest from
// memory, handed over at each commit), and hands one to the outbox only
// when its first attempt fails, or when it must wait behind one that did.
// The common case, a platform that takes each decision, then costs no
// write at all.
//
// Webhook bodies are CloudEvents 1.0 in structured JSON mode, signed as the
// Standard Webhooks specification says (webhook-id, webhook-timestamp,
// webhook-signature). Emails are plain text, sent with
// github.com/wneessen/go-mail.
//
// The configuration (Config) comes from a file given to serve; secrets come
// from the environment or from files, never from the configuration itself
// or from rule files, and are never logged.
package delivery
