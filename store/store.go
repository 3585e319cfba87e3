// Package store keeps Switchboard's durable state: every accepted event
// with its decision, in acceptance order, and the rule sets that decided
// them. The engine's live state is rebuilt by replaying the log, so the
// log is the single source of truth.
//
// Store is a narrow interface so that another database can stand behind
// it with the same schema; SQLite (pure Go, WAL mode) is the one built in.
package store

import (
	"context"
	"errors"
	"time"
)

// Record is one accepted event and its decision.
type Record struct {
	Seq      int64  // acceptance order, from 1
	ID       string // the event's id: the idempotency key
	Type     string
	At       time.Time // the event's time
	Event    []byte    // the event, as JSON
	Decision []byte    // the decision, as JSON
	RuleSet  string    // version of the rule set that decided it
	Received time.Time // when the service accepted it
}

// RuleSetFile is one file of a stored rule set.
type RuleSetFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// ErrDuplicate is returned by Append when an event id is already stored.
var ErrDuplicate = errors.New("event id already stored")

// Store is where the service's state lives.
type Store interface {
	// Append stores records, in order, atomically: all or none.
	Append(ctx context.Context, recs []Record) error
	// Get returns the record of an event id; ok is false when there is none.
	Get(ctx context.Context, id string) (rec Record, ok bool, err error)
	// Replay calls fn with every record in acceptance order.
	Replay(ctx context.Context, fn func(Record) error) error
	// SaveRuleSet stores a rule set's files under its version, once.
	SaveRuleSet(ctx context.Context, version string, files []RuleSetFile) error
	// RuleSet returns a stored rule set's files.
	RuleSet(ctx context.Context, version string) ([]RuleSetFile, error)
	Close() error
}
