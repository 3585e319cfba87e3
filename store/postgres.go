package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL store. Several switchboard processes share one database:
// the log's order is PostgreSQL's, taken under a transaction-scoped
// advisory lock, so there is no coordination of Switchboard's own. Each
// append reads what the others appended since the appender last looked,
// in the same transaction that holds the lock (see Sequence).

// pgMigrations are the PostgreSQL schema, one step per entry, applied in
// order under an advisory lock and recorded in schema_migrations. The
// schema is the SQLite one's, as it stands after its own migrations; never
// edit a step once released: add one.
var pgMigrations = []string{
	// 1: the log, the rule sets, snapshots, meta data and the outbox.
	// Events and decisions are kept as bytes: what the client sent is
	// stored as sent.
	`CREATE TABLE events (
		seq         bigint PRIMARY KEY,    -- the log's order
		id          text NOT NULL UNIQUE,  -- the event's id, the idempotency key
		type        text NOT NULL,
		at          text NOT NULL,         -- the event's time as the client gave it, RFC 3339; '' for none
		clock       bigint,                -- the service's clock when it decided, Unix ns
		event       bytea NOT NULL,        -- the event as JSON
		hash        bytea,                 -- of the event as the client sent it
		decision    bytea NOT NULL,        -- the decision as JSON
		ruleset     text NOT NULL,         -- version of the rule set that decided it
		contact     text,                  -- the contact the event is about
		received_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE event_contacts (           -- every contact a record concerns, for erasure
		seq     bigint NOT NULL,
		contact text NOT NULL,
		PRIMARY KEY (seq, contact)
	);
	CREATE TABLE rulesets (
		version   text PRIMARY KEY,
		loaded_at timestamptz NOT NULL DEFAULT now(),
		files     text NOT NULL             -- JSON: [{"name": ..., "text": ...}]
	);
	CREATE SEQUENCE snapshot_blobs;
	CREATE TABLE snapshots (                -- the state after record seq
		seq      bigint PRIMARY KEY,
		ruleset  text NOT NULL,
		format   integer NOT NULL,
		size     bigint NOT NULL,
		taken_at text NOT NULL,
		blob     bigint NOT NULL
	);
	CREATE TABLE snapshot_chunks (
		blob bigint NOT NULL,
		n    integer NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (blob, n)
	);
	CREATE TABLE meta (
		key   text PRIMARY KEY,
		value text NOT NULL
	);
	CREATE TABLE deliveries (               -- the outbox; times are Unix ms
		seq         bigint NOT NULL,
		n           integer NOT NULL,
		destination text NOT NULL,
		line        text NOT NULL,
		kind        text NOT NULL,
		contact     text NOT NULL,
		body        bytea NOT NULL,
		status      text NOT NULL,
		attempts    integer NOT NULL DEFAULT 0,
		created     bigint NOT NULL,
		due         bigint NOT NULL,
		expires     bigint NOT NULL,
		done        bigint NOT NULL DEFAULT 0,
		lease_until bigint NOT NULL DEFAULT 0,
		lease_owner text NOT NULL DEFAULT '',
		code        integer NOT NULL DEFAULT 0,
		error       text NOT NULL DEFAULT '',
		answer      text NOT NULL DEFAULT '',
		head        boolean NOT NULL DEFAULT false, -- the first open delivery of its line
		PRIMARY KEY (seq, n)
	);
	CREATE INDEX deliveries_line ON deliveries (destination, line, seq, n) WHERE status IN ('pending', 'failed');
	CREATE INDEX deliveries_trouble ON deliveries (status, seq, n) WHERE status IN ('failed', 'dead');
	CREATE INDEX deliveries_heads ON deliveries (due, seq, n) WHERE head AND status IN ('pending', 'failed');
	CREATE TABLE delivery_attempts (
		delivery text NOT NULL,
		n        integer NOT NULL,
		at       bigint NOT NULL,
		took_ms  bigint NOT NULL,
		code     integer NOT NULL,
		error    text NOT NULL,
		PRIMARY KEY (delivery, n)
	);`,
	// 2: the reloads, for the rule set's history.
	`CREATE INDEX events_reloads ON events (seq) WHERE type = 'rules.reload';`,
}

// Advisory lock keys. The one-key (bigint) and two-key (int4, int4) spaces
// of PostgreSQL's advisory locks do not overlap.
const (
	lockLog       int64 = 0x53_57_42_4c_4f_47 // "SWBLOG": appending to the log
	lockMigrate   int64 = 0x53_57_42_4d_49_47 // "SWBMIG": migrating the schema
	lockFeed      int64 = 0x53_57_42_46_44_00 // "SWBFD" + n: a destination's feed
	lockAlone     int64 = 0x53_57_42_41_4c_00 // "SWBAL" + n: a job one process does for all
	lockRewrite   int64 = 0x53_57_42_52_57_52 // "SWBRWR": rewriting the snapshots for an erasure
	lockLines     int32 = 0x5357              // (lockLines, hash of destination and line): one line of the outbox
	lockSnapshots int32 = 0x5358              // (lockSnapshots, seq): saving the snapshot at seq
)

// Postgres is the store for several switchboard processes sharing one
// PostgreSQL database.
type Postgres struct {
	pool  *pgxpool.Pool
	where string // the server and database, without credentials, for messages

	notify chan struct{} // another process appended

	appendedTo atomic.Int64  // the last seq this process appended
	kick       chan struct{} // the announcer has something to say
	stop       context.CancelFunc
	bg         sync.WaitGroup

	feedMu sync.Mutex
	feeds  map[string]*heldFeed // the feeds this process holds
}

// heldFeed is a feed this process works: its lock is held by a session of
// its own, and the feed's writes go through that session, so that a
// process that lost the lock cannot move the feed.
type heldFeed struct {
	conn *pgxpool.Conn
	mu   sync.Mutex // one statement at a time on conn
	lost chan struct{}
	once sync.Once
	// confirmed is when this process last set out to say it holds the
	// feed, and the database then agreed (guarded by mu).
	confirmed time.Time
	// gone: conn was closed and given back (guarded by mu); nothing may
	// use it any more.
	gone bool
}

func (h *heldFeed) drop() { h.once.Do(func() { close(h.lost) }) }

// release closes the feed's session, which lets its lock go, and gives
// the connection back, once; the caller holds h.mu.
func (h *heldFeed) release() {
	if h.gone {
		return
	}
	h.gone = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	h.conn.Conn().Close(ctx)
	h.conn.Release()
}

// Where names a PostgreSQL URL without its password, for messages.
func Where(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		cfg, err := pgconn.ParseConfig(rawURL)
		if err != nil {
			return "the PostgreSQL database"
		}
		return fmt.Sprintf("postgres://%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	}
	return fmt.Sprintf("postgres://%s%s", u.Host, u.Path)
}

// OpenPostgres connects to the database at url, creates or brings its
// schema up to date (under an advisory lock, so that several processes
// starting at once are safe), and refuses a schema newer than this
// switchboard knows.
func OpenPostgres(ctx context.Context, rawURL string) (*Postgres, error) {
	return openPostgres(ctx, rawURL, true)
}

// ReadPostgres connects to a Switchboard database to read it, beside the
// services that write it: its schema is not changed, and must be this
// switchboard's.
func ReadPostgres(ctx context.Context, rawURL string) (*Postgres, error) {
	return openPostgres(ctx, rawURL, false)
}

func openPostgres(ctx context.Context, rawURL string, migrate bool) (*Postgres, error) {
	where := Where(rawURL)
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, &SchemaError{fmt.Sprintf("%s: not a PostgreSQL URL that can be used: %v", where, err)}
	}
	rp := cfg.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		// Which instance holds what shows in pg_stat_activity.
		host, _ := os.Hostname()
		rp["application_name"] = fmt.Sprintf("switchboard %s/%d", host, os.Getpid())
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	// A process that stops answering (frozen, cut off) must not hold the
	// log's lock for long: the server ends its session, which lets go.
	for k, v := range map[string]string{
		"idle_in_transaction_session_timeout": "5s",
		"tcp_keepalives_idle":                 "5",
		"tcp_keepalives_interval":             "2",
		"tcp_keepalives_count":                "3",
	} {
		if rp[k] == "" {
			rp[k] = v
		}
	}
	if cfg.MaxConns < 16 {
		cfg.MaxConns = 16
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s := &Postgres{pool: pool, where: where, notify: make(chan struct{}, 1), kick: make(chan struct{}, 1), feeds: map[string]*heldFeed{}}
	if !migrate {
		var have int
		err := pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have)
		switch {
		case err != nil:
		case have > len(pgMigrations):
			err = &SchemaError{fmt.Sprintf("the database's schema (version %d) is newer than this switchboard's (version %d): read it with the newer switchboard", have, len(pgMigrations))}
		case have < len(pgMigrations):
			err = &SchemaError{fmt.Sprintf("the database's schema (version %d) is older than this switchboard's (version %d): run this switchboard's serve on it once to bring it up to date, or read it with the switchboard that runs it", have, len(pgMigrations))}
		}
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s.stop = func() {}
		return s, nil
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.bg.Add(2)
	go s.listen(bg)
	go s.announcer(bg)
	return s, nil
}

// SchemaError is a database switchboard will not use as it is: trying
// again does not help.
type SchemaError struct{ Reason string }

func (e *SchemaError) Error() string { return e.Reason }

// Where is the server and database, without credentials.
func (s *Postgres) Where() string { return s.where }

func (s *Postgres) migrate(ctx context.Context) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockMigrate); err != nil {
		return err
	}
	defer c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockMigrate)
	var tables []string
	rows, err := c.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name`)
	if err != nil {
		return err
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	switch {
	case len(tables) == 0:
	case !contains(tables, "schema_migrations") || !contains(tables, "events"):
		return &SchemaError{fmt.Sprintf("the database holds tables that are not Switchboard's (%s); give switchboard a database, or a schema (search_path in the URL), of its own", strings.Join(tables, ", "))}
	}
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return err
	}
	var have int
	if err := c.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(pgMigrations) {
		return &SchemaError{fmt.Sprintf("the database's schema (version %d) is newer than this switchboard's (version %d): a newer switchboard has migrated it, and this one will not run against it or undo that; run the newer switchboard", have, len(pgMigrations))}
	}
	for v := have + 1; v <= len(pgMigrations); v++ {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, pgMigrations[v-1]); err != nil {
				return fmt.Errorf("migration %d: %w", v, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// notifyChannel is where an append is announced, with its last seq.
const notifyChannel = "switchboard_log"

// listen hears the appends of other processes, on a session of its own,
// and passes them on (coalesced) to Appended. It connects again when its
// session is lost, and says so by a notification then too, so that
// whatever was missed meanwhile is read.
func (s *Postgres) listen(ctx context.Context) {
	defer s.bg.Done()
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		c, err := s.pool.Acquire(ctx)
		if err == nil {
			_, err = c.Exec(ctx, `LISTEN `+notifyChannel)
			if err != nil {
				c.Release()
			}
		}
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
		s.announce()
		for {
			_, err := c.Conn().WaitForNotification(ctx)
			if err != nil {
				break
			}
			s.announce()
		}
		// The session is no good any more, for LISTEN or anything else.
		c.Conn().Close(context.Background())
		c.Release()
	}
}

func (s *Postgres) announce() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Appended is signalled when another process may have appended to the
// log (PostgreSQL's NOTIFY), coalesced: read the log after it.
func (s *Postgres) Appended() <-chan struct{} { return s.notify }

// Ping reports whether the database answers.
func (s *Postgres) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.pool.Ping(ctx)
}

// Check is nil: there is no file to lose; a database that does not answer
// fails the commit, and the service says so.
func (s *Postgres) Check() error { return nil }

// Close lets go of every session, and of the feeds held.
func (s *Postgres) Close() error {
	s.stop()
	s.feedMu.Lock()
	held := s.feeds
	s.feeds = map[string]*heldFeed{}
	s.feedMu.Unlock()
	for _, h := range held {
		h.drop()
		h.mu.Lock()
		h.release()
		h.mu.Unlock()
	}
	s.bg.Wait()
	s.pool.Close()
	return nil
}

// pgText makes a text stored as PostgreSQL text: valid UTF-8, and no NUL,
// which PostgreSQL's text cannot hold. For what a receiver answered, and
// errors: never for keys.
func pgText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// isUnique reports a unique violation of constraint (any when "").
func isUnique(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (constraint == "" || pe.ConstraintName == constraint)
}

// Append stores records in one transaction under the log's lock: all or
// none. Their seqs must follow the log's last.
func (s *Postgres) Append(ctx context.Context, recs []Record) error {
	return s.Sequence(ctx, -1, func([]Record) ([]Record, error) { return recs, nil })
}

// Sequence appends to the log as one of several processes. In one
// transaction that holds the log's lock, it reads the records appended
// after seq after (by others: the caller has the rest), hands them to
// decide, and appends what decide returns (numbered after them), with
// their deliveries, then commits and announces it. Nothing is stored when
// decide or the commit fails. An after of -1 reads nothing.
//
// Two round trips to the server for the lot: one to begin, lock and read;
// one to write and commit. The append is announced to the others after
// the commit (announcer).
func (s *Postgres) Sequence(ctx context.Context, after int64, decide func(tail []Record) ([]Record, error)) (err error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if c.Conn().PgConn().TxStatus() != 'I' {
			// Whatever failed, the transaction ends here: rolled back.
			if _, rerr := c.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
				c.Conn().Close(context.Background())
			}
		}
		c.Release()
	}()
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	// A holder that hangs makes the others give up rather than wait on.
	b.Queue(`SET LOCAL lock_timeout = '10s'`)
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, lockLog)
	var tail []Record
	if after >= 0 {
		b.Queue(`SELECT `+recordColumns+` FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, MaxTail+1).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				r, err := scanPgRecord(rows)
				if err != nil {
					return err
				}
				tail = append(tail, r)
			}
			return rows.Err()
		})
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	if len(tail) > MaxTail {
		return ErrLongTail
	}
	recs, err := decide(tail)
	if err != nil {
		return err
	}
	b = &pgx.Batch{}
	if err := s.queueAppend(ctx, c, b, recs); err != nil {
		return err
	}
	b.Queue(`COMMIT`)
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		if isUnique(err, "events_id_key") {
			return fmt.Errorf("%w: %s", ErrDuplicate, duplicateIn(err, recs))
		}
		return err
	}
	if len(recs) > 0 {
		s.announceAppend(recs[len(recs)-1].Seq)
	}
	return nil
}

// announceEvery is how often, at most, a process announces its appends.
// A NOTIFY in every commit cost more than a fifth of the CPU of three
// busy instances, and lengthened each hold of the log's lock; the others
// need to hear of appends soon, not of every one: an instance that
// appends reads the tail under the lock anyway, and every read catches
// up with the log first.
const announceEvery = 20 * time.Millisecond

// announceAppend has the announcer say that this process appended up to
// seq.
func (s *Postgres) announceAppend(seq int64) {
	for {
		old := s.appendedTo.Load()
		if seq <= old || s.appendedTo.CompareAndSwap(old, seq) {
			break
		}
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// announcer announces this process's appends to the others (NOTIFY,
// heard by listen), after their commits and outside the log's lock,
// coalesced: the first append after a quiet spell at once, then at most
// once per announceEvery, and always the last. One that fails is said
// again at the next append; meanwhile the others read the log every
// second anyway.
func (s *Postgres) announcer(ctx context.Context) {
	defer s.bg.Done()
	var said int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if seq := s.appendedTo.Load(); seq > said {
			if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, strconv.FormatInt(seq, 10)); err == nil {
				said = seq
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(announceEvery):
		}
	}
}

// MaxTail is the most records Sequence reads under the log's lock: an
// appender further behind gets ErrLongTail, and catches up first, without
// holding the others up.
const MaxTail = 5000

// ErrLongTail is returned by Sequence when the appender is more than
// MaxTail records behind: nothing was stored.
var ErrLongTail = errors.New("too far behind the log to append: catch up first")

// Permanent reports whether an error opening PostgreSQL will not go away
// by trying again: a URL that does not parse, a schema switchboard will
// not use, credentials refused, a database that does not exist, a lack of
// permission.
func Permanent(err error) bool {
	var schema *SchemaError
	if errors.As(err, &schema) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "28", "3D", "42":
			return true
		}
	}
	var parse *pgconn.ParseConfigError
	return errors.As(err, &parse)
}

// SetMetaOnce records value under key unless a value is there already,
// and returns the value stored: of several processes starting at once,
// one's value is everyone's.
func (s *Postgres) SetMetaOnce(ctx context.Context, key, value string) (string, error) {
	var stored string
	err := s.pool.QueryRow(ctx, `WITH ins AS (INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM meta WHERE key = $1 LIMIT 1`, key, value).Scan(&stored)
	return stored, err
}

// Alone runs fn while this process holds name's lock, on a session of its
// own, unless another process holds it. The lock goes with the session, so
// a process that dies mid-job lets another take the name. While fn runs,
// the holder says so every aloneBeat; a holder silent for aloneStale (its
// process stopped, its machine paused) has its session ended by the next
// process that asks, which then takes the name at its next try.
func (s *Postgres) Alone(ctx context.Context, name string, fn func() error) (bool, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.Release()
	key, at := namedLockKey(lockAlone, name), "alone:"+name+":at"
	// Taken and said in one statement: no other process sees the name
	// held with an old word from an earlier holder (but for the moment
	// the statement runs).
	var got bool
	err = c.QueryRow(ctx, `WITH l AS (SELECT pg_try_advisory_lock($1) AS got),
		w AS (INSERT INTO meta (key, value) SELECT $2, `+dbMillis+` FROM l WHERE got ON CONFLICT (key) DO UPDATE SET value = excluded.value)
		SELECT got FROM l`, key, at).Scan(&got)
	if err != nil {
		return false, err
	}
	if !got {
		// (No word at all: the holder has just taken the name.)
		if age, ok := metaAgeOK(ctx, c, at); ok && age > aloneStale {
			c.Exec(ctx, endHolderQuery, key)
		}
		return false, nil
	}
	defer unlockSession(ctx, c, key)
	stop, beaten := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beaten)
		t := time.NewTicker(aloneBeat)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				c.Exec(ctx, pgSayNow, at) // one that fails is seen by the unlock
			}
		}
	}()
	err = fn()
	close(stop)
	<-beaten
	return true, err
}

// How often a process running a job alone says so, and how long it may
// be silent before another ends its session.
const (
	aloneBeat  = time.Second
	aloneStale = 15 * time.Second
)

// endHolderQuery ends the session that holds the advisory lock $1 (one
// key), other than the caller's.
const endHolderQuery = `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
	AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1`

// queueAppend queues the inserts of records, their contacts and their
// deliveries: one statement per table, whatever their number.
func (s *Postgres) queueAppend(ctx context.Context, c *pgxpool.Conn, b *pgx.Batch, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	seqs, clocks := make([]int64, n), make([]*int64, n)
	idsA, types, ats, rules, contacts := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]*string, n)
	events, hashes, decisions := make([][]byte, n), make([][]byte, n), make([][]byte, n)
	var xSeq []int64
	var xContact []string
	for i := range recs {
		r := &recs[i]
		seqs[i], idsA[i], types[i], ats[i], rules[i] = r.Seq, r.ID, r.Type, formatTime(r.At), r.RuleSet
		if !r.Clock.IsZero() {
			ns := r.Clock.UnixNano()
			clocks[i] = &ns
		}
		if len(r.Contacts) > 0 {
			contacts[i] = &r.Contacts[0]
		}
		events[i], hashes[i], decisions[i] = nonNil(r.Event), r.Hash, nonNil(r.Decision)
		seen := map[string]bool{}
		for _, k := range r.Contacts {
			if !seen[k] {
				seen[k] = true
				xSeq, xContact = append(xSeq, r.Seq), append(xContact, k)
			}
		}
	}
	b.Queue(`INSERT INTO events (seq, id, type, at, clock, event, hash, decision, ruleset, contact)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], $7::bytea[], $8::bytea[], $9::text[], $10::text[])`,
		seqs, idsA, types, ats, clocks, events, hashes, decisions, rules, contacts)
	if len(xSeq) > 0 {
		b.Queue(`INSERT INTO event_contacts (seq, contact) SELECT * FROM unnest($1::bigint[], $2::text[])`, xSeq, xContact)
	}
	return s.queueDeliveries(ctx, c, b, recs)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanPgRecord(row pgx.Row) (Record, error) {
	var r Record
	var at string
	var clock *int64
	var contact *string
	if err := row.Scan(&r.Seq, &r.ID, &r.Type, &at, &clock, &r.Event, &r.Hash, &r.Decision, &r.RuleSet, &contact); err != nil {
		return r, err
	}
	if at != "" {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return r, fmt.Errorf("stored event %s (seq %d): bad time %q", r.ID, r.Seq, at)
		}
		r.At = t
	}
	if clock != nil {
		r.Clock = time.Unix(0, *clock).UTC()
	}
	if contact != nil {
		r.Contacts = []string{*contact}
	}
	return r, nil
}

// Get returns the record of an event id.
func (s *Postgres) Get(ctx context.Context, id string) (Record, bool, error) {
	r, err := scanPgRecord(s.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM events WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return r, err == nil, err
}

// Lookup returns what is stored for those of ids that are stored.
func (s *Postgres) Lookup(ctx context.Context, ids []string) (map[string]Known, error) {
	out := map[string]Known{}
	if len(ids) == 0 {
		return out, nil
	}
	// Planned for these ids each time (pgx.QueryExecModeExec): a plan
	// cached while the log was small scans the whole table, and keeps on
	// scanning it as the log grows.
	rows, err := s.pool.Query(ctx, `SELECT id, seq, hash, ruleset FROM events WHERE id = ANY($1)`, pgx.QueryExecModeExec, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var k Known
		if err := rows.Scan(&id, &k.Seq, &k.Hash, &k.RuleSet); err != nil {
			return nil, err
		}
		out[id] = k
	}
	return out, rows.Err()
}

// replayBatch is how many records a replay reads per query.
const replayBatch = 10_000

// Replay calls fn with the records after seq after, up to upto (0: all),
// reading them in batches so that no query holds a snapshot for long.
func (s *Postgres) Replay(ctx context.Context, after, upto int64, fn func(Record) error) error {
	if upto <= 0 {
		upto = 1<<63 - 1
	}
	for {
		recs, err := s.records(ctx, after, upto, replayBatch)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
			after = r.Seq
		}
		if len(recs) < replayBatch {
			return nil
		}
	}
}

func (s *Postgres) records(ctx context.Context, after, upto int64, limit int) ([]Record, error) {
	return s.query(ctx, `SELECT `+recordColumns+` FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3`, after, upto, limit)
}

// Reloads returns the log's reload records before seq before, newest first.
func (s *Postgres) Reloads(ctx context.Context, before int64, limit int) ([]Record, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	return s.query(ctx, `SELECT `+recordColumns+` FROM events WHERE type = 'rules.reload' AND seq < $1 ORDER BY seq DESC LIMIT $2`, before, limit)
}

// Concerning returns the records concerning a contact after seq after.
func (s *Postgres) Concerning(ctx context.Context, contact string, after int64, limit int) ([]Record, error) {
	return s.query(ctx, `SELECT `+prefixed("e.", recordColumns)+` FROM event_contacts c JOIN events e ON e.seq = c.seq
		WHERE c.seq > $1 AND c.contact = $2 ORDER BY c.seq LIMIT $3`, after, contact, limit)
}

func (s *Postgres) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanPgRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Records returns up to limit records after seq after.
func (s *Postgres) Records(ctx context.Context, after int64, limit int) ([]Record, error) {
	return s.records(ctx, after, 1<<63-1, limit)
}

// LastSeq is the seq of the last record.
func (s *Postgres) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&seq)
	if err == nil && seq == 0 {
		var p Pruned
		if p, err = s.Pruned(ctx); err == nil {
			seq = p.Through
		}
	}
	return seq, err
}

// SaveRuleSet stores a rule set once per version.
func (s *Postgres) SaveRuleSet(ctx context.Context, version string, files []RuleSetFile) error {
	data, err := json.Marshal(files)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO rulesets (version, files) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`, version, string(data))
	return err
}

// RuleSet returns a stored rule set's files.
func (s *Postgres) RuleSet(ctx context.Context, version string) ([]RuleSetFile, error) {
	var data string
	if err := s.pool.QueryRow(ctx, `SELECT files FROM rulesets WHERE version = $1`, version).Scan(&data); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w: %s", ErrNoRuleSet, version)
		}
		return nil, err
	}
	var files []RuleSetFile
	err := json.Unmarshal([]byte(data), &files)
	return files, err
}

// SaveSnapshot stores a snapshot under a blob of its own, and makes it
// visible last. Several processes may save snapshots at once.
func (s *Postgres) SaveSnapshot(ctx context.Context, info SnapshotInfo, state []byte) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var blob int64
		if err := tx.QueryRow(ctx, `SELECT nextval('snapshot_blobs')`).Scan(&blob); err != nil {
			return err
		}
		for n := 0; n*snapshotChunk < len(state) || n == 0; n++ {
			part := state[n*snapshotChunk : min(len(state), (n+1)*snapshotChunk)]
			if _, err := tx.Exec(ctx, `INSERT INTO snapshot_chunks (blob, n, data) VALUES ($1, $2, $3)`, blob, n, nonNil(part)); err != nil {
				return err
			}
		}
		// Two instances saving a snapshot at one seq take turns, so that
		// the one replaced is deleted whole.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`, lockSnapshots, int32(info.Seq)); err != nil {
			return err
		}
		var old *int64
		err := tx.QueryRow(ctx, `SELECT blob FROM snapshots WHERE seq = $1`, info.Seq).Scan(&old)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO snapshots (seq, ruleset, format, size, taken_at, blob) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (seq) DO UPDATE SET ruleset = excluded.ruleset, format = excluded.format, size = excluded.size, taken_at = excluded.taken_at, blob = excluded.blob`,
			info.Seq, info.RuleSet, info.Format, len(state), formatTime(info.Taken), blob); err != nil {
			return err
		}
		if old == nil {
			return nil
		}
		_, err = tx.Exec(ctx, `DELETE FROM snapshot_chunks WHERE blob = $1`, *old)
		return err
	})
}

// Snapshots lists the stored snapshots, newest first.
func (s *Postgres) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, ruleset, format, size, taken_at FROM snapshots ORDER BY seq DESC`)
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

// LoadSnapshot returns a snapshot's state, read in one transaction so that
// a snapshot replaced meanwhile is read whole, old or new.
func (s *Postgres) LoadSnapshot(ctx context.Context, seq int64) ([]byte, error) {
	var out []byte
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var size, blob int64
		if err := tx.QueryRow(ctx, `SELECT size, blob FROM snapshots WHERE seq = $1`, seq).Scan(&size, &blob); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("no snapshot at seq %d", seq)
			}
			return err
		}
		rows, err := tx.Query(ctx, `SELECT data FROM snapshot_chunks WHERE blob = $1 ORDER BY n`, blob)
		if err != nil {
			return err
		}
		defer rows.Close()
		buf := bytes.NewBuffer(make([]byte, 0, size))
		for rows.Next() {
			var part []byte
			if err := rows.Scan(&part); err != nil {
				return err
			}
			buf.Write(part)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if int64(buf.Len()) != size {
			return fmt.Errorf("snapshot at seq %d: %d bytes stored of %d", seq, buf.Len(), size)
		}
		out = buf.Bytes()
		return nil
	})
	return out, err
}

// DeleteSnapshot removes a snapshot.
func (s *Postgres) DeleteSnapshot(ctx context.Context, seq int64) error {
	_, err := s.pool.Exec(ctx, `WITH gone AS (DELETE FROM snapshots WHERE seq = $1 RETURNING blob)
		DELETE FROM snapshot_chunks WHERE blob IN (SELECT blob FROM gone)`, seq)
	return err
}

// Prune removes the records up to through, a chunk per transaction.
func (s *Postgres) Prune(ctx context.Context, through int64) error {
	p, err := s.Pruned(ctx)
	if err != nil {
		return err
	}
	var first int64
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(MIN(seq), 0) FROM events`).Scan(&first); err != nil {
		return err
	}
	cursors, err := s.feedCursors(ctx)
	if err != nil {
		return err
	}
	for _, c := range cursors {
		through = min(through, c)
	}
	from := max(p.Through, first-1)
	// Records kept back by a prune before (owed deliveries) are looked at
	// again from the log's first.
	lower := first - 1
	for from < through {
		upto := min(through, from+pruneChunk)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var clock *int64
			var at string
			err := tx.QueryRow(ctx, `SELECT clock, at FROM events WHERE seq <= $1 ORDER BY seq DESC LIMIT 1`, upto).Scan(&clock, &at)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			before := at
			if clock != nil {
				before = formatTime(time.Unix(0, *clock))
			}
			for _, q := range []string{
				`DELETE FROM events e WHERE seq > $2 AND seq <= $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.status IN ('pending', 'failed'))`,
				`DELETE FROM event_contacts e WHERE seq > $2 AND seq <= $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.status IN ('pending', 'failed'))`,
				`DELETE FROM delivery_attempts WHERE delivery IN (SELECT 'sb-' || seq || '-' || n FROM deliveries WHERE seq > $2 AND seq <= $1 AND status IN ('delivered', 'dead'))`,
				`DELETE FROM deliveries WHERE seq > $2 AND seq <= $1 AND status IN ('delivered', 'dead')`} {
				if _, err := tx.Exec(ctx, q, upto, lower); err != nil {
					return err
				}
			}
			// Never backwards: another process may have pruned further.
			if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('pruned_through', $1) ON CONFLICT (key) DO UPDATE
				SET value = GREATEST(meta.value::bigint, excluded.value::bigint)::text`, strconv.FormatInt(upto, 10)); err != nil {
				return err
			}
			if before != "" {
				if _, err := tx.Exec(ctx, pgUpsertMeta, "pruned_before", before); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		from, lower = upto, upto
	}
	return nil
}

const pgUpsertMeta = `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`

// pgSayNow records the database's time now (Unix ms) under key $1.
const pgSayNow = `INSERT INTO meta (key, value) VALUES ($1, ` + dbMillis + `) ON CONFLICT (key) DO UPDATE SET value = excluded.value`

// unlockSession lets go of the session-level advisory lock key held on c;
// when it cannot, the session's state is unknown, and c is closed rather
// than go back to the pool holding the lock.
func unlockSession(ctx context.Context, c *pgxpool.Conn, key int64) {
	if _, err := c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
		c.Conn().Close(context.Background())
	}
}

// Pruned says what Prune removed so far.
func (s *Postgres) Pruned(ctx context.Context) (Pruned, error) {
	var p Pruned
	m, err := s.Meta(ctx, "pruned_")
	if err != nil {
		return p, err
	}
	p.Through, _ = strconv.ParseInt(m["pruned_through"], 10, 64)
	p.Before, _ = time.Parse(time.RFC3339Nano, m["pruned_before"])
	return p, nil
}

// Erase rewrites the records concerning contact up to record through, and
// the snapshots before it, then vacuums the tables so that the old row
// versions are gone from what the database can read. (Their bytes may
// stay in free space on disk, in the write-ahead log and in backups until
// PostgreSQL overwrites or the retention of those removes them: that is
// the database's operators' to keep short.)
func (s *Postgres) Erase(ctx context.Context, contact string, through int64, e Eraser) error {
	rows, err := s.pool.Query(ctx, `SELECT seq FROM event_contacts WHERE contact = $1 AND seq <= $2 ORDER BY seq`, contact, through)
	if err != nil {
		return err
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		r, err := scanPgRecord(s.pool.QueryRow(ctx, `SELECT `+recordColumns+` FROM events WHERE seq = $1`, seq))
		if errors.Is(err, pgx.ErrNoRows) {
			continue
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
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, seq := range part {
				r, err := scanPgRecord(tx.QueryRow(ctx, `SELECT `+recordColumns+` FROM events WHERE seq = $1 FOR UPDATE`, seq))
				if errors.Is(err, pgx.ErrNoRows) {
					continue
				}
				if err != nil {
					return err
				}
				ev, dec, err := e.Redact(r)
				if err != nil {
					return fmt.Errorf("stored event %s (seq %d): %w", r.ID, r.Seq, err)
				}
				if _, err := tx.Exec(ctx, `UPDATE events SET event = $1, decision = $2 WHERE seq = $3`, nonNil(ev), nonNil(dec), seq); err != nil {
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
	// One process at a time rewrites the snapshots: two erasures each
	// loading a snapshot and saving it rewritten would keep only the
	// last one's redaction.
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockRewrite); err != nil {
		c.Conn().Close(context.Background()) // the lock's state is unknown
		return err
	}
	defer unlockSession(ctx, c, lockRewrite)
	snaps, err := s.Snapshots(ctx)
	if err != nil {
		return err
	}
	for _, in := range snaps {
		if in.Seq >= through {
			continue
		}
		state, err := s.LoadSnapshot(ctx, in.Seq)
		var next []byte
		if err == nil {
			next, err = e.Rewrite(in, state)
		}
		if err != nil {
			if err := s.DeleteSnapshot(ctx, in.Seq); err != nil {
				return err
			}
			continue
		}
		if err := s.SaveSnapshot(ctx, in, next); err != nil {
			return err
		}
	}
	for _, t := range []string{"events", "deliveries", "snapshot_chunks"} {
		if _, err := s.pool.Exec(ctx, `VACUUM `+t); err != nil {
			return fmt.Errorf("vacuum %s after the erasure: %w", t, err)
		}
	}
	return nil
}

// SetMeta records a value under key; an empty value removes it.
func (s *Postgres) SetMeta(ctx context.Context, key, value string) error {
	var err error
	if value == "" {
		_, err = s.pool.Exec(ctx, `DELETE FROM meta WHERE key = $1`, key)
	} else {
		_, err = s.pool.Exec(ctx, pgUpsertMeta, key, value)
	}
	return err
}

// Meta returns every value whose key starts with prefix.
func (s *Postgres) Meta(ctx context.Context, prefix string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT key, value FROM meta WHERE starts_with(key, $1)`, prefix)
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

// SeqBefore is the seq of the last record decided before t: a binary
// search on seq, the log being in clock order.
func (s *Postgres) SeqBefore(ctx context.Context, t time.Time) (int64, error) {
	var lo, hi int64
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM events`).Scan(&lo, &hi); err != nil {
		return 0, err
	}
	if hi == 0 {
		return 0, nil
	}
	when := func(seq int64) (int64, time.Time, error) {
		var at string
		var clock *int64
		err := s.pool.QueryRow(ctx, `SELECT seq, clock, at FROM events WHERE seq >= $1 ORDER BY seq LIMIT 1`, seq).Scan(&seq, &clock, &at)
		if err != nil {
			return 0, time.Time{}, err
		}
		if clock != nil {
			return seq, time.Unix(0, *clock), nil
		}
		tt, _ := time.Parse(time.RFC3339Nano, at)
		return seq, tt, nil
	}
	return lastBefore(lo, hi, t, when)
}
