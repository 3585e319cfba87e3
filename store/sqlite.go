package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// 2: the service owns the clock; idempotency by content; snapshots;
	// retention and erasure.
	`ALTER TABLE events ADD COLUMN clock INTEGER; -- the service's clock when it decided, Unix ns; NULL: decided at "at" (before v2)
	ALTER TABLE events ADD COLUMN hash BLOB;      -- of the event as the client sent it; NULL: unknown (before v2)
	ALTER TABLE events ADD COLUMN contact TEXT;   -- the contact the event is about
	DROP INDEX events_type;
	-- every contact a record concerns: the event's own, and any whose
	-- conversation its decision touched (a tick, an agent coming online).
	-- An erasure finds a contact's records here. Kept in log order and
	-- without an index by contact, so that appending costs little; an
	-- erasure, which is rare, reads it through.
	CREATE TABLE event_contacts (
		seq     INTEGER NOT NULL,
		contact TEXT NOT NULL,
		PRIMARY KEY (seq, contact)
	) WITHOUT ROWID;
	-- snapshots of the engine's state after record seq. The state is a
	-- blob written in chunks, so that writing one never holds the log up
	-- for long; a snapshot exists, or changes, only when its row names a
	-- complete blob.
	CREATE TABLE snapshots (
		seq      INTEGER PRIMARY KEY,
		ruleset  TEXT NOT NULL,
		format   INTEGER NOT NULL,
		size     INTEGER NOT NULL,
		taken_at TEXT NOT NULL,
		blob     INTEGER NOT NULL
	);
	CREATE TABLE snapshot_chunks (
		blob INTEGER NOT NULL,
		n    INTEGER NOT NULL,
		data BLOB NOT NULL,
		PRIMARY KEY (blob, n)
	);
	-- pruned_through, pruned_before: what retention removed.
	CREATE TABLE meta (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,
	// 3: the outbox. Times are Unix milliseconds.
	`CREATE TABLE deliveries (                -- a delivery's id is sb-SEQ-N
		seq         INTEGER NOT NULL,          -- the record whose decision made it
		n           INTEGER NOT NULL,          -- its place among the record's deliveries
		destination TEXT NOT NULL,             -- platform, webhook:NAME or email
		line        TEXT NOT NULL,             -- in order per destination and line (a conversation); '' for none
		kind        TEXT NOT NULL,             -- decision, notify or email
		contact     TEXT NOT NULL,             -- the contact it concerns, for erasure
		body        BLOB NOT NULL,             -- what is sent
		status      TEXT NOT NULL,             -- pending, failed, delivered or dead
		attempts    INTEGER NOT NULL DEFAULT 0,
		created     INTEGER NOT NULL,
		due         INTEGER NOT NULL,          -- not tried before
		expires     INTEGER NOT NULL,          -- dead if it fails after
		done        INTEGER NOT NULL DEFAULT 0,
		lease_until INTEGER NOT NULL DEFAULT 0,
		lease_owner TEXT NOT NULL DEFAULT '',
		code        INTEGER NOT NULL DEFAULT 0, -- the last answer's status
		error       TEXT NOT NULL DEFAULT '',   -- the last error, or why it is dead
		answer      TEXT NOT NULL DEFAULT '',   -- the start of the last answer's body
		PRIMARY KEY (seq, n)
	) WITHOUT ROWID;
	CREATE INDEX deliveries_open ON deliveries(due, seq, n) WHERE status IN ('pending', 'failed');
	CREATE INDEX deliveries_line ON deliveries(destination, line, seq, n) WHERE status IN ('pending', 'failed');
	-- the deliveries in trouble, for the API; a delivery enters it only
	-- once an attempt failed, so appending costs nothing here.
	CREATE INDEX deliveries_trouble ON deliveries(status, seq, n) WHERE status IN ('failed', 'dead');
	CREATE TABLE delivery_attempts (
		delivery TEXT NOT NULL,
		n        INTEGER NOT NULL,
		at       INTEGER NOT NULL,
		took_ms  INTEGER NOT NULL,
		code     INTEGER NOT NULL,
		error    TEXT NOT NULL,
		PRIMARY KEY (delivery, n)
	) WITHOUT ROWID;`,
	// 4: the head of each line of the outbox is marked, so that a claim
	// looks at the heads only, not at every delivery waiting behind one.
	`ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0;
	UPDATE deliveries SET head = 1 WHERE status IN ('pending', 'failed') AND (line = '' OR NOT EXISTS (
		SELECT 1 FROM deliveries e WHERE e.destination = deliveries.destination AND e.line = deliveries.line
		AND e.status IN ('pending', 'failed') AND (e.seq < deliveries.seq OR (e.seq = deliveries.seq AND e.n < deliveries.n))));
	CREATE INDEX deliveries_heads ON deliveries(due, seq, n) WHERE head = 1 AND status IN ('pending', 'failed');`,
	// 5: the reloads, for the rule set's history.
	`CREATE INDEX events_reloads ON events(seq) WHERE type = 'rules.reload';`,
}

// SQLite is the built-in store: one database file in WAL mode, owned by
// one process.
type SQLite struct {
	path     string
	db       *sql.DB // readers
	own      *owned
	created  bool
	readOnly bool

	blob            int64 // the last snapshot blob written; guarded by wmu
	stopCheckpoints chan struct{}
	checkpoints     sync.WaitGroup

	wmu  sync.Mutex // one writer: appends, snapshots, prunes, erasures
	w    *sql.Conn
	ins  *sql.Stmt // insert an event
	insN *sql.Stmt // insert insertRows events
	xc   *sql.Stmt // insert a contact of a record
	xcN  *sql.Stmt // insert insertRows contacts
	xd   *sql.Stmt // insert a delivery
	xdN  *sql.Stmt // insert insertRows deliveries
	ow   *sql.Conn // the outbox's writes: under wmu, without an fsync each
	// The outbox's statements, prepared on ow.
	claim, outcome, attempt *sql.Stmt
	candidates              *sql.Stmt // on the readers
	get                     *sql.Stmt
}

// sqliteMagic starts every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// OpenSQLite opens the Switchboard database at path, creating it when the
// file does not exist, and brings its schema up to date. It refuses a file
// another process holds, an empty file, and a file that is not a
// Switchboard database, rather than starting on nothing.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	created := false
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := createSQLite(ctx, path); err != nil {
			return nil, fmt.Errorf("%s: cannot create the database: %w", path, err)
		}
		created = true
	} else if err != nil {
		return nil, err
	}
	o, err := own(path)
	if err != nil {
		return nil, err
	}
	s, err := openOwned(ctx, path, o)
	if err != nil {
		o.close()
		return nil, err
	}
	s.created = created
	return s, nil
}

// OpenSQLiteReadOnly opens an existing Switchboard database to read it,
// beside a service that may be writing it: no lock is taken and nothing
// can be written.
func OpenSQLiteReadOnly(ctx context.Context, path string) (*SQLite, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	head := make([]byte, len(sqliteMagic))
	n, _ := f.ReadAt(head, 0)
	f.Close()
	if n == 0 {
		return nil, fmt.Errorf("%s is empty (0 bytes), not a Switchboard database", path)
	}
	if string(head[:n]) != sqliteMagic {
		return nil, fmt.Errorf("%s is not a SQLite database, so not a Switchboard one", path)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, err
	}
	tables, err := tableNames(ctx, db)
	if err != nil || !contains(tables, "events") || !contains(tables, "snapshots") {
		db.Close()
		if err == nil {
			err = errors.New("not a Switchboard database, or one from an older switchboard: run switchboard serve on it once to bring it up to date")
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &SQLite{path: path, db: db, readOnly: true}
	if s.get, err = db.PrepareContext(ctx, `SELECT `+recordColumns+` FROM events WHERE id = ?`); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Created reports whether OpenSQLite created the database.
func (s *SQLite) Created() bool { return s.created }

// Path is the database file.
func (s *SQLite) Path() string { return s.path }

func dsn(path string) string {
	// WAL lets readers run beside the writer; synchronous=FULL makes every
	// commit durable before it returns; busy_timeout waits out a lock;
	// secure_delete overwrites what is deleted, so that erased data is gone
	// from the file.
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=secure_delete(ON)"
}

// createSQLite makes a new database at path atomically: it is built beside
// it and linked into place complete, so that a crash never leaves a half
// made file that a later start would refuse.
func createSQLite(ctx context.Context, path string) error {
	for _, side := range []string{"-wal", "-journal"} {
		if _, err := os.Stat(path + side); err == nil {
			return fmt.Errorf("%s exists without %s: it may hold committed data. Restore %s, or remove %s to start a new, empty database", path+side, filepath.Base(path), filepath.Base(path), path+side)
		}
	}
	var nonce [6]byte
	rand.Read(nonce[:])
	tmp := fmt.Sprintf("%s.new-%s", path, hex.EncodeToString(nonce[:]))
	defer func() {
		for _, side := range []string{"", "-wal", "-shm"} {
			os.Remove(tmp + side)
		}
	}()
	db, err := sql.Open("sqlite", dsn(tmp))
	if err != nil {
		return err
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func openOwned(ctx context.Context, path string, o *owned) (*SQLite, error) {
	size, err := o.size()
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, fmt.Errorf("%s is empty (0 bytes), not a Switchboard database. Switchboard creates its database when the file does not exist: remove the empty file, or give another --data file", path)
	}
	head := make([]byte, len(sqliteMagic))
	if n, _ := o.f.ReadAt(head, 0); n < len(head) || string(head) != sqliteMagic {
		return nil, fmt.Errorf("%s is not a SQLite database, so not a Switchboard one; give the right --data file", path)
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*SQLite, error) {
		db.Close()
		return nil, err
	}
	tables, err := tableNames(ctx, db)
	if err != nil {
		return fail(fmt.Errorf("%s: cannot read the database: %w", path, err))
	}
	if !contains(tables, "schema_migrations") || !contains(tables, "events") {
		what := "has no tables"
		if len(tables) > 0 {
			what = "has the tables " + strings.Join(tables, ", ")
		}
		return fail(fmt.Errorf("%s is a SQLite database but not a Switchboard one (it %s); give the right --data file", path, what))
	}
	if err := migrate(ctx, db); err != nil {
		return fail(fmt.Errorf("%s: %w", path, err))
	}
	s := &SQLite{path: path, db: db, own: o}
	if s.w, err = db.Conn(ctx); err != nil {
		return fail(err)
	}
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.w.PrepareContext(ctx, q)
		return st
	}
	s.ins = prep(insertEvents + eventValues)
	s.insN = prep(insertEvents + eventValues + strings.Repeat(","+eventValues, insertRows-1))
	s.xc = prep(`INSERT OR IGNORE INTO event_contacts (seq, contact) VALUES (?, ?)`)
	s.xcN = prep(`INSERT OR IGNORE INTO event_contacts (seq, contact) VALUES (?, ?)` + strings.Repeat(", (?, ?)", insertRows-1))
	s.xd = prep(insertDeliveries + deliveryValues)
	s.xdN = prep(insertDeliveries + deliveryValues + strings.Repeat(","+deliveryValues, insertRows-1))
	if err != nil {
		s.w.Close()
		return fail(err)
	}
	if s.get, err = db.PrepareContext(ctx, `SELECT `+recordColumns+` FROM events WHERE id = ?`); err != nil {
		s.w.Close()
		return fail(err)
	}
	// Commits only append to the write-ahead log; copying it into the
	// database is done beside them, so that no commit pays for it.
	if _, err := s.w.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		s.w.Close()
		return fail(err)
	}
	s.stopCheckpoints = make(chan struct{})
	s.checkpoints.Add(1)
	go s.checkpointer()
	// Chunks of a snapshot whose writing was cut off.
	if _, err := s.w.ExecContext(ctx, `DELETE FROM snapshot_chunks WHERE blob NOT IN (SELECT blob FROM snapshots)`); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(blob), 0) FROM snapshots`).Scan(&s.blob); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.openOutbox(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func tableNames(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`); err != nil {
		return err
	}
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("the database's schema (version %d) is newer than this switchboard (version %d); run a newer switchboard", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
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

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// inTx runs fn in a transaction on the writer connection, with the file
// checked first: nothing is written into a file nobody will read again.
// The transaction is begun and ended by hand, not with database/sql's Tx,
// so that statements prepared once on the connection are used as they
// are instead of prepared again for every transaction.
func (s *SQLite) inTx(ctx context.Context, fn func(tx *sql.Conn) error) error {
	return s.inTxOn(ctx, s.w, fn)
}

// inTxOn is inTx on a writing connection of the store's: s.w, or s.ow for
// the outbox's bookkeeping.
func (s *SQLite) inTxOn(ctx context.Context, c *sql.Conn, fn func(tx *sql.Conn) error) error {
	if s.readOnly {
		return errReadOnly
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.own.check(); err != nil {
		return err
	}
	if _, err := c.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	err := fn(c)
	if err == nil {
		_, err = c.ExecContext(ctx, `COMMIT`)
	}
	if err != nil {
		// A failed COMMIT may leave the transaction open; end it either way.
		c.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		return err
	}
	return nil
}

// exec runs one statement in a transaction of its own.
func (s *SQLite) exec(ctx context.Context, query string, args ...any) error {
	return s.inTx(ctx, func(tx *sql.Conn) error {
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
}

// errReadOnly is returned by writes to a store opened read-only.
var errReadOnly = errors.New("the database is open read-only")

// Check reports whether the database file is still the one opened.
func (s *SQLite) Check() error {
	if s.readOnly {
		return nil
	}
	return s.own.check()
}

// Append stores records in one transaction: one fsync for the lot.
func (s *SQLite) Append(ctx context.Context, recs []Record) error {
	all := recs
	return s.inTx(ctx, func(tx *sql.Conn) error {
		args := make([]any, 0, 11*insertRows)
		var contacts []any // seq, contact, seq, contact...
		for len(recs) > 0 {
			n, stmt := insertRows, s.insN
			if len(recs) < insertRows {
				n, stmt = 1, s.ins
			}
			args = args[:0]
			for i := range n {
				r := &recs[i]
				var clock, contact any
				if !r.Clock.IsZero() {
					clock = r.Clock.UnixNano()
				}
				if len(r.Contacts) > 0 {
					contact = r.Contacts[0]
				}
				args = append(args, r.Seq, r.ID, r.Type, formatTime(r.At), string(r.Event), string(r.Decision), r.RuleSet, formatTime(r.Clock), clock, r.Hash, contact)
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				if strings.Contains(err.Error(), "UNIQUE constraint failed: events.id") {
					return fmt.Errorf("%w: %s", ErrDuplicate, duplicateIn(err, recs[:n]))
				}
				return err
			}
			for i := range n {
				for _, c := range recs[i].Contacts {
					contacts = append(contacts, recs[i].Seq, c)
				}
			}
			recs = recs[n:]
		}
		for len(contacts) >= 2*insertRows {
			if _, err := s.xcN.ExecContext(ctx, contacts[:2*insertRows]...); err != nil {
				return err
			}
			contacts = contacts[2*insertRows:]
		}
		for ; len(contacts) > 0; contacts = contacts[2:] {
			if _, err := s.xc.ExecContext(ctx, contacts[:2]...); err != nil {
				return err
			}
		}
		return s.insertDeliveries(ctx, all)
	})
}

// duplicateIn names the records of a failed insert, for the error.
func duplicateIn(_ error, recs []Record) string {
	if len(recs) == 1 {
		return recs[0].ID
	}
	return fmt.Sprintf("one of %s...%s", recs[0].ID, recs[len(recs)-1].ID)
}

const (
	insertEvents = `INSERT INTO events (seq, id, type, at, event, decision, ruleset, received_at, clock, hash, contact) VALUES `
	eventValues  = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// insertRows is how many events one statement inserts: fewer trips
	// through database/sql per event.
	insertRows = 64
)

const recordColumns = `seq, id, type, at, clock, event, hash, decision, ruleset, contact`

// Get returns the record of an event id.
func (s *SQLite) Get(ctx context.Context, id string) (Record, bool, error) {
	r, err := scanRecord(s.get.QueryRowContext(ctx, id).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, false, nil
	}
	return r, err == nil, err
}

// Lookup returns what is stored for those of ids that are stored.
func (s *SQLite) Lookup(ctx context.Context, ids []string) (map[string]Known, error) {
	out := map[string]Known{}
	const chunk = 500
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		part := ids[:n]
		ids = ids[n:]
		q := `SELECT id, seq, hash, ruleset FROM events WHERE id IN (?` + strings.Repeat(",?", n-1) + `)`
		args := make([]any, n)
		for i, id := range part {
			args[i] = id
		}
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var k Known
			if err := rows.Scan(&id, &k.Seq, &k.Hash, &k.RuleSet); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = k
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Replay calls fn with the records after seq after, up to upto (0: all).
func (s *SQLite) Replay(ctx context.Context, after, upto int64, fn func(Record) error) error {
	if upto <= 0 {
		upto = 1<<63 - 1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+recordColumns+` FROM events WHERE seq > ? AND seq <= ? ORDER BY seq`, after, upto)
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

// LastSeq is the seq of the last record.
func (s *SQLite) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&seq)
	if err == nil && seq == 0 {
		// An empty log after a prune still continues its numbering.
		var p Pruned
		if p, err = s.Pruned(ctx); err == nil {
			seq = p.Through
		}
	}
	return seq, err
}

func scanRecord(scan func(...any) error) (Record, error) {
	var r Record
	var at string
	var clock sql.NullInt64
	var contact sql.NullString
	if err := scan(&r.Seq, &r.ID, &r.Type, &at, &clock, &r.Event, &r.Hash, &r.Decision, &r.RuleSet, &contact); err != nil {
		return r, err
	}
	if at != "" {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return r, fmt.Errorf("stored event %s (seq %d): bad time %q", r.ID, r.Seq, at)
		}
		r.At = t
	}
	if clock.Valid {
		r.Clock = time.Unix(0, clock.Int64).UTC()
	}
	if contact.Valid {
		r.Contacts = []string{contact.String}
	}
	return r, nil
}

// SaveRuleSet stores a rule set once per version.
func (s *SQLite) SaveRuleSet(ctx context.Context, version string, files []RuleSetFile) error {
	data, err := json.Marshal(files)
	if err != nil {
		return err
	}
	return s.exec(ctx, `INSERT INTO rulesets (version, loaded_at, files) VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING`, version, now(), string(data))
}

// RuleSet returns a stored rule set's files.
func (s *SQLite) RuleSet(ctx context.Context, version string) ([]RuleSetFile, error) {
	var data string
	if err := s.db.QueryRowContext(ctx, `SELECT files FROM rulesets WHERE version = ?`, version).Scan(&data); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("%w: %s", ErrNoRuleSet, version)
		}
		return nil, err
	}
	var files []RuleSetFile
	err := json.Unmarshal([]byte(data), &files)
	return files, err
}

// snapshotChunk is how much of a snapshot one transaction writes.
const snapshotChunk = 1 << 20

// SaveSnapshot stores a snapshot, a chunk per transaction, and makes it
// visible last.
func (s *SQLite) SaveSnapshot(ctx context.Context, info SnapshotInfo, state []byte) error {
	var blob int64
	if err := s.inTx(ctx, func(*sql.Conn) error { s.blob++; blob = s.blob; return nil }); err != nil {
		return err
	}
	// What was written of a snapshot that fails goes at once: on a full
	// disk, that space is what the log still has.
	drop := func(err error) error {
		s.exec(context.WithoutCancel(ctx), `DELETE FROM snapshot_chunks WHERE blob = ?`, blob)
		return err
	}
	for n := 0; n*snapshotChunk < len(state) || n == 0; n++ {
		part := state[n*snapshotChunk : min(len(state), (n+1)*snapshotChunk)]
		if err := s.exec(ctx, `INSERT INTO snapshot_chunks (blob, n, data) VALUES (?, ?, ?)`, blob, n, part); err != nil {
			return drop(err)
		}
	}
	// The row names the new blob, in one step; the old blob, if this
	// replaces a snapshot, goes after.
	var old sql.NullInt64
	err := s.inTx(ctx, func(tx *sql.Conn) error {
		err := tx.QueryRowContext(ctx, `SELECT blob FROM snapshots WHERE seq = ?`, info.Seq).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO snapshots (seq, ruleset, format, size, taken_at, blob) VALUES (?, ?, ?, ?, ?, ?)`,
			info.Seq, info.RuleSet, info.Format, len(state), formatTime(info.Taken), blob)
		return err
	})
	if err != nil {
		return drop(err)
	}
	if !old.Valid {
		return nil
	}
	return s.exec(ctx, `DELETE FROM snapshot_chunks WHERE blob = ?`, old.Int64)
}

// Snapshots lists the stored snapshots, newest first.
func (s *SQLite) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, ruleset, format, size, taken_at FROM snapshots ORDER BY seq DESC`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SnapshotInfo
	for rows.Next() {
		var in SnapshotInfo
		var taken string
		if err := rows.Scan(&in.Seq, &in.RuleSet, &in.Format, &in.Size, &taken); err != nil {
			return nil, err
		}
		in.Taken, _ = time.Parse(time.RFC3339Nano, taken)
		out = append(out, in)
	}
	return out, rows.Err()
}

// LoadSnapshot returns a snapshot's state.
func (s *SQLite) LoadSnapshot(ctx context.Context, seq int64) ([]byte, error) {
	var size, blob int64
	if err := s.db.QueryRowContext(ctx, `SELECT size, blob FROM snapshots WHERE seq = ?`, seq).Scan(&size, &blob); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("no snapshot at seq %d", seq)
		}
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM snapshot_chunks WHERE blob = ? ORDER BY n`, blob)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	buf := bytes.NewBuffer(make([]byte, 0, size))
	for rows.Next() {
		var part []byte
		if err := rows.Scan(&part); err != nil {
			return nil, err
		}
		buf.Write(part)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if int64(buf.Len()) != size {
		return nil, fmt.Errorf("snapshot at seq %d: %d bytes stored of %d", seq, buf.Len(), size)
	}
	return buf.Bytes(), nil
}

// DeleteSnapshot removes a snapshot.
func (s *SQLite) DeleteSnapshot(ctx context.Context, seq int64) error {
	return s.inTx(ctx, func(tx *sql.Conn) error {
		var blob int64
		err := tx.QueryRowContext(ctx, `SELECT blob FROM snapshots WHERE seq = ?`, seq).Scan(&blob)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE seq = ?`, seq); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM snapshot_chunks WHERE blob = ?`, blob)
		return err
	})
}

// pruneChunk is how many records one pruning transaction removes.
const pruneChunk = 5000

// Prune removes the records up to through, a chunk per transaction.
func (s *SQLite) Prune(ctx context.Context, through int64) error {
	p, err := s.Pruned(ctx)
	if err != nil {
		return err
	}
	var first int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 0) FROM events`).Scan(&first); err != nil {
		return err
	}
	// A record a feed has not reached yet stays: it is owed to a receiver.
	cursors, err := s.feedCursors(ctx)
	if err != nil {
		return err
	}
	for _, c := range cursors {
		through = min(through, c)
	}
	from := max(p.Through, first-1)
	for from < through {
		upto := min(through, from+pruneChunk)
		err := s.inTx(ctx, func(tx *sql.Conn) error {
			var clock sql.NullInt64
			var at string
			err := tx.QueryRowContext(ctx, `SELECT clock, at FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1`, upto).Scan(&clock, &at)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			before := at
			if clock.Valid {
				before = formatTime(time.Unix(0, clock.Int64))
			}
			for _, q := range []string{
				// A record whose decision is still owed to a receiver stays
				// until it is delivered or dead: the delivery is made from it.
				`DELETE FROM events WHERE seq <= ? AND seq NOT IN (SELECT seq FROM deliveries INDEXED BY deliveries_open WHERE status IN ('pending', 'failed'))`,
				`DELETE FROM event_contacts WHERE seq <= ? AND seq NOT IN (SELECT seq FROM deliveries INDEXED BY deliveries_open WHERE status IN ('pending', 'failed'))`,
				// Deliveries still owed stay; the others go with their records.
				`DELETE FROM delivery_attempts WHERE delivery IN (SELECT 'sb-' || seq || '-' || n FROM deliveries WHERE seq <= ? AND status IN ('delivered', 'dead'))`,
				`DELETE FROM deliveries WHERE seq <= ? AND status IN ('delivered', 'dead')`} {
				if _, err := tx.ExecContext(ctx, q, upto); err != nil {
					return err
				}
			}
			for k, v := range map[string]string{"pruned_through": strconv.FormatInt(upto, 10), "pruned_before": before} {
				if v == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		from = upto
	}
	return nil
}

// Pruned says what Prune removed so far.
func (s *SQLite) Pruned(ctx context.Context) (Pruned, error) {
	var p Pruned
	rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM meta WHERE key IN ('pruned_through', 'pruned_before')`)
	if err != nil {
		return p, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return p, err
		}
		switch k {
		case "pruned_through":
			p.Through, _ = strconv.ParseInt(v, 10, 64)
		case "pruned_before":
			p.Before, _ = time.Parse(time.RFC3339Nano, v)
		}
	}
	return p, rows.Err()
}

// eraseChunk is how many records one erasing transaction rewrites.
const eraseChunk = 500

// Erase rewrites the records concerning contact up to record through,
// and the snapshots before it, then checkpoints and truncates the
// write-ahead log so that the old bytes are gone from every file
// (secure_delete zeroes what SQLite frees). The events' hashes stay: a
// retry of an erased event must still be told apart from another event
// under its id.
func (s *SQLite) Erase(ctx context.Context, contact string, through int64, e Eraser) error {
	var seqs []int64
	rows, err := s.db.QueryContext(ctx, `SELECT seq FROM event_contacts WHERE contact = ? AND seq <= ? ORDER BY seq`, contact, through)
	if err != nil {
		return err
	}
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			rows.Close()
			return err
		}
		seqs = append(seqs, seq)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, seq := range seqs {
		r, err := scanRecord(s.db.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM events WHERE seq = ?`, seq).Scan)
		if errors.Is(err, sql.ErrNoRows) {
			continue // pruned meanwhile
		}
		if err != nil {
			return err
		}
		if err := e.Learn(r); err != nil {
			return err
		}
	}
	for len(seqs) > 0 {
		part := seqs[:min(eraseChunk, len(seqs))]
		seqs = seqs[len(part):]
		err := s.inTx(ctx, func(tx *sql.Conn) error {
			for _, seq := range part {
				r, err := scanRecord(tx.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM events WHERE seq = ?`, seq).Scan)
				if errors.Is(err, sql.ErrNoRows) {
					continue // pruned meanwhile
				}
				if err != nil {
					return err
				}
				ev, dec, err := e.Redact(r)
				if err != nil {
					return fmt.Errorf("stored event %s (seq %d): %w", r.ID, r.Seq, err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE events SET event = ?, decision = ? WHERE seq = ?`, string(ev), string(dec), seq); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := s.eraseDeliveries(ctx, contact, through, e); err != nil {
		return err
	}
	snaps, err := s.Snapshots(ctx)
	if err != nil {
		return err
	}
	for _, in := range snaps {
		if in.Seq >= through {
			continue // taken after the erasure: without the data already
		}
		state, err := s.LoadSnapshot(ctx, in.Seq)
		var next []byte
		if err == nil {
			next, err = e.Rewrite(in, state)
		}
		if err != nil {
			// A snapshot that cannot be rewritten cannot be kept.
			if err := s.DeleteSnapshot(ctx, in.Seq); err != nil {
				return err
			}
			continue
		}
		if err := s.SaveSnapshot(ctx, in, next); err != nil {
			return err
		}
	}
	return s.truncateWAL(ctx)
}

// truncateWAL copies the write-ahead log into the database and empties it,
// so that no old page image survives there.
func (s *SQLite) truncateWAL(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var busy, logged, done int
	for try := 0; try < 50; try++ {
		if err := s.w.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logged, &done); err != nil {
			return err
		}
		if busy == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // a reader holds an old page; wait it out
	}
	return errors.New("the write-ahead log could not be truncated: readers kept it busy")
}

// SetMeta records a value under key; an empty value removes it.
func (s *SQLite) SetMeta(ctx context.Context, key, value string) error {
	if value == "" {
		return s.exec(ctx, `DELETE FROM meta WHERE key = ?`, key)
	}
	return s.exec(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
}

// Meta returns every value whose key starts with prefix.
func (s *SQLite) Meta(ctx context.Context, prefix string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, value FROM meta WHERE substr(key, 1, length(?)) = ?`, prefix, prefix)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// SeqBefore is the seq of the last record decided before t. The log is in
// clock order, so it is a binary search on seq.
func (s *SQLite) SeqBefore(ctx context.Context, t time.Time) (int64, error) {
	var lo, hi int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM events`).Scan(&lo, &hi); err != nil {
		return 0, err
	}
	if hi == 0 {
		return 0, nil
	}
	// when returns the decision time of the first record at or after seq.
	when := func(seq int64) (int64, time.Time, error) {
		var at string
		var clock sql.NullInt64
		err := s.db.QueryRowContext(ctx, `SELECT seq, clock, at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1`, seq).Scan(&seq, &clock, &at)
		if err != nil {
			return 0, time.Time{}, err
		}
		if clock.Valid {
			return seq, time.Unix(0, clock.Int64), nil
		}
		tt, _ := time.Parse(time.RFC3339Nano, at)
		return seq, tt, nil
	}
	return lastBefore(lo, hi, t, when)
}

// checkpointInterval is how often the write-ahead log is copied into the
// database.
const checkpointInterval = 200 * time.Millisecond

// checkpointer copies the write-ahead log into the database in the
// background, as far as readers let it; the log restarts from its
// beginning once all of it is copied and no reader needs it.
func (s *SQLite) checkpointer() {
	defer s.checkpoints.Done()
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-t.C:
		}
		s.db.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`)
	}
}

// Close closes the database, then lets go of the file.
func (s *SQLite) Close() error {
	if s.stopCheckpoints != nil {
		close(s.stopCheckpoints)
		s.checkpoints.Wait()
		s.stopCheckpoints = nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, st := range []*sql.Stmt{s.ins, s.insN, s.xc, s.xcN, s.xd, s.xdN, s.get, s.claim, s.outcome, s.attempt, s.candidates} {
		if st != nil {
			st.Close()
		}
	}
	for _, c := range []*sql.Conn{s.w, s.ow} {
		if c != nil {
			c.Close()
		}
	}
	err := s.db.Close()
	if s.own != nil {
		s.own.close()
	}
	return err
}
