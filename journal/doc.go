// Package journal turns the stored log back into engine state: the newest
// readable snapshot at or before a point of the log, then every record
// after it replayed in order — events on the clock the service decided
// them at, reloads switching rule sets, erasures erasing. The service uses
// it to start, to recover from a failed commit, to take snapshots and to
// explain; the CLI uses it to simulate and explain a stored log exactly as
// the service decided it.
package journal
