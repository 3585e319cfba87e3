package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver: pure Go, no cgo
)

// migrations are the schema, one step per entry, applied in order and
// recorded in schema_migrations. Never edit a step once released: add one.
var migrations = []string{
	// 1: the event log and the rule sets that decided it.
	`CREATE TABLE events (
		seq         INTEGER PRIMARY KEY,  -- acceptance order
		id          TEXT NOT NULL UNIQUE, -- the event's id, the idempotency key
		type        TEXT NOT NULL,        -- message.received, agent.status, ...
		at          TEXT NOT NULL,        -- the event's time, RFC 3339
		event       TEXT NOT NULL,        -- the event as JSON
		decision    TEXT NOT NULL,        -- the decision as JSON
		ruleset     TEXT NOT NULL,        -- version of the rule set that decided it
		received_at TEXT NOT NULL         -- when the service accepted it
	);
	CREATE INDEX events_type ON events(type, at);
	CREATE TABLE rulesets (
		version   TEXT PRIMARY KEY,       -- content hash of the files
		loaded_at TEXT NOT NULL,
		files     TEXT NOT NULL           -- JSON: [{"name": ..., "text": ...}]
	);`,
}

// SQLite is the built-in store: one database file in WAL mode.
type SQLite struct {
	db *sql.DB
}

// OpenSQLite opens (creating it if needed) the database at path and brings
// its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	// WAL lets readers run beside the writer; synchronous=FULL makes every
	// commit durable before it returns; busy_timeout waits out a lock.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	s := &SQLite{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return err
	}
	var have int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("the database's schema (version %d) is newer than this switchboard (version %d)", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, now()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// Append stores records in one transaction: one fsync for the lot.
func (s *SQLite) Append(ctx context.Context, recs []Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO events (seq, id, type, at, event, decision, ruleset, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, r := range recs {
		_, err := stmt.ExecContext(ctx, r.Seq, r.ID, r.Type, r.At.UTC().Format(time.RFC3339Nano), string(r.Event), string(r.Decision), r.RuleSet, r.Received.UTC().Format(time.RFC3339Nano))
		if err != nil {
			if strings.Contains(err.Error(), "UNIQUE constraint failed: events.id") {
				return fmt.Errorf("%w: %s", ErrDuplicate, r.ID)
			}
			return err
		}
	}
	return tx.Commit()
}

// Get returns the record of an event id.
func (s *SQLite) Get(ctx context.Context, id string) (Record, bool, error) {
	row := s.db.QueryRowContext(ctx, `SELECT seq, id, type, at, event, decision, ruleset, received_at FROM events WHERE id = ?`, id)
	r, err := scanRecord(row.Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, false, nil
	}
	return r, err == nil, err
}

// Replay calls fn with every record in acceptance order.
func (s *SQLite) Replay(ctx context.Context, fn func(Record) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, id, type, at, event, decision, ruleset, received_at FROM events ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRecord(rows.Scan)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

func scanRecord(scan func(...any) error) (Record, error) {
	var r Record
	var at, received, event, decision string
	if err := scan(&r.Seq, &r.ID, &r.Type, &at, &event, &decision, &r.RuleSet, &received); err != nil {
		return r, err
	}
	r.Event, r.Decision = []byte(event), []byte(decision)
	var err error
	if r.At, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return r, fmt.Errorf("event %s: bad time %q", r.ID, at)
	}
	if r.Received, err = time.Parse(time.RFC3339Nano, received); err != nil {
		return r, fmt.Errorf("event %s: bad time %q", r.ID, received)
	}
	return r, nil
}

// SaveRuleSet stores a rule set once per version.
func (s *SQLite) SaveRuleSet(ctx context.Context, version string, files []RuleSetFile) error {
	data, err := json.Marshal(files)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO rulesets (version, loaded_at, files) VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING`, version, now(), string(data))
	return err
}

// RuleSet returns a stored rule set's files.
func (s *SQLite) RuleSet(ctx context.Context, version string) ([]RuleSetFile, error) {
	var data string
	if err := s.db.QueryRowContext(ctx, `SELECT files FROM rulesets WHERE version = ?`, version).Scan(&data); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("no rule set %s in the store", version)
		}
		return nil, err
	}
	var files []RuleSetFile
	err := json.Unmarshal([]byte(data), &files)
	return files, err
}

// Close closes the database.
func (s *SQLite) Close() error { return s.db.Close() }
