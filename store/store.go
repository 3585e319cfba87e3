// Package store keeps Switchboard's durable state: every accepted event
// with its decision, in acceptance order, the rule sets that decided them,
// and snapshots of the engine's state taken along the log. The live state
// is the newest snapshot plus the records after it, so the log is the
// single source of truth and a restart costs the same however long the
// history.
//
// Store is a narrow interface so that another database can stand behind
// it with the same schema; SQLite (pure Go, WAL mode) is the one built in.
package store

import (
	"context"
	"errors"
	"time"
)

// Record is one entry of the log: an accepted event and its decision, or a
// record the service makes itself (a reload, a retention prune, an
// erasure), whose Type is one of the Internal types.
type Record struct {
	Seq  int64  // acceptance order, from 1
	ID   string // the event's id: the idempotency key
	Type string
	// At is the time the client reported for the event; zero when it gave
	// none.
	At time.Time
	// Clock is the service's clock when it decided the event: the time the
	// engine ran at. Zero for records written before the service owned its
	// clock; those were decided at At.
	Clock    time.Time
	Event    []byte // the event as the client sent it (JSON)
	Hash     []byte // of the event as the client sent it, for idempotency; nil if unknown
	Decision []byte // the decision, as JSON
	RuleSet  string // version of the rule set that decided it
	// Contacts are the contacts the record concerns: the event's own, and
	// any whose conversation the decision touched. An erasure finds a
	// contact's records by them.
	Contacts []string
	// Deliveries are the actions of the decision that leave the service;
	// Append stores them with the record. Not read back by Replay.
	Deliveries []Delivery
}

// Internal record types: records the service writes, not events.
const (
	// TypeReload: the rules change here; Event is {"version": ...}. Its
	// Decision is "{}", or, when the reload let work go (agents or groups
	// it removed), the decision that tells the platform so.
	TypeReload = "rules.reload"
	TypePrune  = "retention.prune" // events up to a seq were pruned
	TypeErase  = "contact.erase"   // a contact's personal data was erased
	// IDPrefix starts the ids of the records the service makes (ticks
	// included); clients' ids may not start with it.
	IDPrefix = "sb:"
)

// NoDecision is the decision of records that decide nothing.
const NoDecision = "{}"

// Decides reports whether the record carries a decision the platform is
// owed: every event's, and a reload's that let work go.
func (r Record) Decides() bool {
	switch r.Type {
	case TypePrune, TypeErase:
		return false
	case TypeReload:
		return string(r.Decision) != NoDecision
	}
	return true
}

// Known is what the store holds about an event id, for idempotency.
type Known struct {
	Seq     int64
	Hash    []byte
	RuleSet string
}

// RuleSetFile is one file of a stored rule set.
type RuleSetFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// SnapshotInfo describes a stored snapshot of the engine's state.
type SnapshotInfo struct {
	Seq     int64  // the state after the record with this seq
	RuleSet string // the rule set the state was taken on
	Format  int    // the engine's snapshot format version
	Size    int64  // bytes
	Taken   time.Time
}

// Pruned says what retention removed from the log so far.
type Pruned struct {
	Through int64     // every record with seq <= Through is gone; 0 if none
	Before  time.Time // the clock of the newest pruned record
}

// Eraser says how to erase a contact's data.
type Eraser interface {
	// Learn sees every record concerning the contact first, in order.
	Learn(Record) error
	// Redact returns a record's event and decision without the data.
	Redact(Record) (event, decision []byte, err error)
	// Rewrite returns a snapshot's state without the data.
	Rewrite(SnapshotInfo, []byte) ([]byte, error)
	// RedactDelivery returns a delivery's body without the data.
	RedactDelivery(Delivery) ([]byte, error)
}

// ErrNoRuleSet is returned by RuleSet for a version not stored.
var ErrNoRuleSet = errors.New("no such rule set in the store")

// ErrDuplicate is returned by Append when an event id is already stored.
var ErrDuplicate = errors.New("event id already stored")

// Store is where the service's state lives. Every method is safe for
// concurrent use; Append, SaveSnapshot, Prune and Erase may run beside
// reads without blocking them.
type Store interface {
	// Append stores records, in order, atomically: all or none. Their Seq
	// must follow the log's last.
	Append(ctx context.Context, recs []Record) error
	// Get returns the record of an event id; ok is false when there is none.
	Get(ctx context.Context, id string) (rec Record, ok bool, err error)
	// Lookup returns what is stored for those of ids that are stored.
	Lookup(ctx context.Context, ids []string) (map[string]Known, error)
	// Replay calls fn with every record after seq after, up to and
	// including seq upto (0: to the end), in order.
	Replay(ctx context.Context, after, upto int64, fn func(Record) error) error
	// LastSeq is the seq of the log's last record; 0 when it is empty.
	LastSeq(ctx context.Context) (int64, error)
	// Records returns up to limit records after seq after, in order.
	Records(ctx context.Context, after int64, limit int) ([]Record, error)
	// Reloads returns up to limit of the log's reload records before seq
	// before (0: the newest), newest first: the rule set's history.
	Reloads(ctx context.Context, before int64, limit int) ([]Record, error)
	// Concerning returns up to limit records concerning a contact (see
	// Record.Contacts) after seq after, in order. It reads the log from
	// after on: give it a recent seq.
	Concerning(ctx context.Context, contact string, after int64, limit int) ([]Record, error)

	// SaveRuleSet stores a rule set's files under its version, once.
	SaveRuleSet(ctx context.Context, version string, files []RuleSetFile) error
	// RuleSet returns a stored rule set's files.
	RuleSet(ctx context.Context, version string) ([]RuleSetFile, error)

	// SaveSnapshot stores a snapshot of the state after record info.Seq.
	// A snapshot becomes visible only once complete.
	SaveSnapshot(ctx context.Context, info SnapshotInfo, state []byte) error
	// Snapshots lists the stored snapshots, newest first.
	Snapshots(ctx context.Context) ([]SnapshotInfo, error)
	// LoadSnapshot returns a snapshot's state.
	LoadSnapshot(ctx context.Context, seq int64) ([]byte, error)
	// DeleteSnapshot removes a snapshot.
	DeleteSnapshot(ctx context.Context, seq int64) error

	// Prune removes every record with seq <= through, a few thousand per
	// transaction so that commits are not held up.
	Prune(ctx context.Context, through int64) error
	// Pruned says what Prune removed so far.
	Pruned(ctx context.Context) (Pruned, error)
	// Erase rewrites the records concerning contact up to record through,
	// and the snapshots before it, as e says, then makes sure the old bytes
	// are gone from the database's files.
	Erase(ctx context.Context, contact string, through int64, e Eraser) error

	// SetMeta records a value under key; an empty value removes it.
	SetMeta(ctx context.Context, key, value string) error
	// Meta returns every value whose key starts with prefix.
	Meta(ctx context.Context, prefix string) (map[string]string, error)
	// SeqBefore is the seq of the last record decided before t; 0 if none.
	SeqBefore(ctx context.Context, t time.Time) (int64, error)

	// The outbox: deliveries, stored by Append with their records.
	Outbox

	// Check reports whether the store is still the one opened: its file
	// not deleted or replaced. The service stops acknowledging when not.
	Check() error
	Close() error
}

// Shared is a store that several switchboard processes write at once
// (PostgreSQL): the log's order is the database's.
type Shared interface {
	Store
	// Sequence appends under the log's lock: decide gets the records
	// appended after seq after (by other processes), and returns the
	// records to append after them, stored with their deliveries in the
	// same transaction. Nothing is stored when decide or the commit fails.
	Sequence(ctx context.Context, after int64, decide func(tail []Record) ([]Record, error)) error
	// Appended is signalled, coalesced, when another process may have
	// appended: read the log after it.
	Appended() <-chan struct{}
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	// Where names the database, without credentials.
	Where() string
	// SetMetaOnce records value under key unless a value is there, and
	// returns the value stored.
	SetMetaOnce(ctx context.Context, key, value string) (string, error)
	// Alone runs fn unless another process is running a job of the same
	// name, and reports whether it ran: work that one process does for
	// all (snapshots) is done once. A process that dies lets the name go.
	Alone(ctx context.Context, name string, fn func() error) (ran bool, err error)
}

// lastBefore finds the last record decided before t among the seqs lo to
// hi of a log in clock order, by a binary search: when gives the first
// record at or after a seq, and its decision time (seqs may have gaps).
func lastBefore(lo, hi int64, t time.Time, when func(seq int64) (int64, time.Time, error)) (int64, error) {
	best := int64(0)
	for lo <= hi {
		mid := lo + (hi-lo)/2
		seq, tt, err := when(mid)
		if err != nil {
			return 0, err
		}
		if seq > hi || !tt.Before(t) {
			hi = mid - 1
			continue
		}
		best = seq
		lo = seq + 1
	}
	return best, nil
}
