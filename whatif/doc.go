// Package whatif answers "what would these rules have done?": it replays a
// window of a service's stored traffic twice from the state at the
// window's start (the nearest snapshot, then the log), once under the
// rules that decided it and once under candidate rules, and compares the
// two runs: the conversations that would go elsewhere and why, matches per
// rule and per mapping-table row, assignments and peak load per agent,
// waits, notifications and replies.
//
// Both runs are replays, so the report is deterministic: the same log,
// window and candidate give the same report, byte for byte.
package whatif
