package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL outbox. Every process works it: a claim takes the due
// heads of lines with FOR UPDATE SKIP LOCKED and a lease, so that each
// delivery is worked by one process at a time and one that dies loses its
// claims when their leases run out. What changes a line (a new delivery
// joining it, one finished, one retried or handed over by a feed) holds
// that line's advisory lock, so that its head is always its first open
// delivery whatever runs at once. The decisions of a feed are claimed only
// by the process that holds the feed, which alone knows which of its
// lines wait for the outbox.

// lineKey is the advisory lock key of a line.
func lineKey(dest, line string) int32 {
	h := fnv.New32a()
	h.Write([]byte(dest))
	h.Write([]byte{0})
	h.Write([]byte(line))
	return int32(h.Sum32())
}

// lockLinesQuery takes the locks of lines, in one order whatever the
// caller's, so that two transactions never wait for each other.
const lockLinesQuery = `SELECT pg_advisory_xact_lock($1::int4, k) FROM (SELECT DISTINCT k FROM unnest($2::int4[]) k ORDER BY k) s`

func lineKeys(ds []*Delivery) []int32 {
	var keys []int32
	for _, d := range ds {
		if d.Line != "" {
			keys = append(keys, lineKey(d.Destination, d.Line))
		}
	}
	return keys
}

// queueDeliveries queues the insert of the records' deliveries, in the
// records' transaction, each open one heading its line when the line has
// no open delivery yet.
func (s *Postgres) queueDeliveries(ctx context.Context, c *pgxpool.Conn, b *pgx.Batch, recs []Record) error {
	var all []*Delivery
	for i := range recs {
		for j := range recs[i].Deliveries {
			all = append(all, &recs[i].Deliveries[j])
		}
	}
	if len(all) == 0 {
		return nil
	}
	// Which lines have an open delivery already: asked in one round trip,
	// under the lines' locks (taken now, held to the commit).
	type key struct{ dest, line string }
	taken := map[key]bool{}
	var dests, lines []string
	for _, d := range all {
		k := key{d.Destination, d.Line}
		if d.Line == "" || !isOpen(d.Status) {
			continue
		}
		if _, ok := taken[k]; !ok {
			taken[k] = false
			dests, lines = append(dests, d.Destination), append(lines, d.Line)
		}
	}
	if len(dests) > 0 {
		if _, err := c.Exec(ctx, lockLinesQuery, lockLines, lineKeys(all)); err != nil {
			return err
		}
		rows, err := c.Query(ctx, `SELECT DISTINCT d.destination, d.line FROM deliveries d
			JOIN unnest($1::text[], $2::text[]) AS q(destination, line) ON d.destination = q.destination AND d.line = q.line
			WHERE d.status IN ('pending', 'failed')`, dests, lines)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.dest, &k.line); err != nil {
				rows.Close()
				return err
			}
			taken[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	n := len(all)
	seqs, created, due, expires, done := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	ns := make([]int32, n)
	dest, line, kind, contact, status, errs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	bodies := make([][]byte, n)
	heads := make([]bool, n)
	for i, d := range all {
		st := d.Status
		if st == "" {
			st = Pending
		}
		seqs[i], ns[i], dest[i], line[i], kind[i], contact[i] = d.Seq, int32(d.N), d.Destination, d.Line, d.Kind, d.Contact
		bodies[i], status[i], errs[i] = nonNil(d.Body), st, pgText(d.Error)
		created[i], due[i], expires[i], done[i] = millis(d.Created), millis(d.Due), millis(d.Expires), millis(d.Done)
		if isOpen(st) {
			k := key{d.Destination, d.Line}
			if d.Line == "" {
				heads[i] = true
			} else if !taken[k] {
				heads[i], taken[k] = true, true
			}
		}
	}
	b.Queue(`INSERT INTO deliveries (seq, n, destination, line, kind, contact, body, status, created, due, expires, done, error, head)
		SELECT * FROM unnest($1::bigint[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[],
			$9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], $14::bool[])`,
		seqs, ns, dest, line, kind, contact, bodies, status, created, due, expires, done, errs, heads)
	return nil
}

func scanPgDelivery(row pgx.Row) (Delivery, error) {
	var d Delivery
	var created, due, expires, done int64
	err := row.Scan(&d.Seq, &d.N, &d.Destination, &d.Line, &d.Kind, &d.Contact, &d.Body, &d.Status, &d.Attempts,
		&created, &due, &expires, &done, &d.Code, &d.Error, &d.Answer)
	d.ID = DeliveryID(d.Seq, d.N)
	d.Created, d.Due, d.Expires, d.Done = fromMillis(created), fromMillis(due), fromMillis(expires), fromMillis(done)
	return d, err
}

func collectDeliveries(rows pgx.Rows, err error) ([]Delivery, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d, err := scanPgDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ClaimDeliveries leases the due heads of lines, skipping those another
// process is claiming at this moment. The decisions of a feed are left to
// the process that holds it.
func (s *Postgres) ClaimDeliveries(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	s.feedMu.Lock()
	held := make([]string, 0, len(s.feeds))
	for dest := range s.feeds {
		held = append(held, dest)
	}
	s.feedMu.Unlock()
	out, err := collectDeliveries(s.pool.Query(ctx, `UPDATE deliveries d SET lease_until = $1, lease_owner = $2 FROM (
			SELECT seq, n FROM deliveries WHERE head AND status IN ('pending', 'failed') AND due <= $3 AND lease_until <= $3
				AND (kind <> 'decision' OR destination = ANY($5) OR destination NOT IN (SELECT substr(key, 6, length(key) - 12) FROM meta WHERE key LIKE 'feed:%:cursor'))
			ORDER BY due, seq, n LIMIT $4 FOR UPDATE SKIP LOCKED) c
		WHERE d.seq = c.seq AND d.n = c.n
		RETURNING d.seq, d.n, d.destination, d.line, d.kind, d.contact, d.body, d.status, d.attempts, d.created, d.due, d.expires, d.done, d.code, d.error, d.answer`,
		millis(now.Add(lease)), owner, millis(now), limit, held))
	if err != nil || len(out) == 0 {
		return nil, err
	}
	if err := s.fillFromLog(ctx, out); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Delivery) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.N, b.N)) })
	return out, nil
}

// FinishDeliveries records the outcomes of owner's claims, in one
// transaction; a delivery done gives its line's head to the next.
func (s *Postgres) FinishDeliveries(ctx context.Context, owner string, outcomes []Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	// The lines of the deliveries are locked first, before any of their
	// rows: whatever else changes a line takes its lock first too.
	var seqs []int64
	var ns []int32
	for _, o := range outcomes {
		if seq, n, ok := ParseDeliveryID(o.ID); ok {
			seqs, ns = append(seqs, seq), append(ns, int32(n))
		}
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		type done struct{ dest, line string }
		var ended []done
		rows, err := tx.Query(ctx, `SELECT destination, line FROM deliveries
			WHERE (seq, n) IN (SELECT * FROM unnest($1::bigint[], $2::int4[])) AND line <> ''`, seqs, ns)
		if err != nil {
			return err
		}
		var keys []int32
		for rows.Next() {
			var dest, line string
			if err := rows.Scan(&dest, &line); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, lineKey(dest, line))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(keys) > 0 {
			if _, err := tx.Exec(ctx, lockLinesQuery, lockLines, keys); err != nil {
				return err
			}
		}
		for _, o := range outcomes {
			var doneAt, due int64
			switch o.Status {
			case Delivered, Dead:
				doneAt = millis(o.Attempt.At)
			case Failed:
				due = millis(o.Due)
			default:
				return errors.New("store: an outcome must be delivered, failed or dead, not " + o.Status)
			}
			answer := o.Answer
			if len(answer) > answerLimit {
				answer = answer[:answerLimit]
			}
			seq, n, ok := ParseDeliveryID(o.ID)
			if !ok {
				return errors.New("store: no delivery " + o.ID)
			}
			var attempts int
			var dest, line string
			err := tx.QueryRow(ctx, `UPDATE deliveries SET status = $1, attempts = attempts + 1,
				due = CASE WHEN $2::bigint > 0 THEN $2 ELSE due END, done = $3, code = $4, error = $5, answer = $6, lease_until = 0, lease_owner = '',
				head = CASE WHEN $1 IN ('delivered', 'dead') THEN false ELSE head END
				WHERE seq = $7 AND n = $8 AND lease_owner = $9 RETURNING attempts, destination, line`,
				o.Status, due, doneAt, o.Attempt.Code, pgText(o.Attempt.Error), pgText(answer), seq, n, owner).Scan(&attempts, &dest, &line)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // no longer ours
			}
			if err != nil {
				return err
			}
			if o.Status != Failed && line != "" {
				ended = append(ended, done{dest, line})
			}
			if _, err := tx.Exec(ctx, `INSERT INTO delivery_attempts (delivery, n, at, took_ms, code, error) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (delivery, n) DO UPDATE SET at = excluded.at, took_ms = excluded.took_ms, code = excluded.code, error = excluded.error`,
				o.ID, attempts, millis(o.Attempt.At), o.Attempt.Took.Milliseconds(), o.Attempt.Code, pgText(o.Attempt.Error)); err != nil {
				return err
			}
		}
		for _, e := range ended {
			if err := pgPromote(ctx, tx, e.dest, e.line); err != nil {
				return err
			}
		}
		return nil
	})
}

// pgPromote makes the first open delivery of a line its head, if it has
// none (the caller holds the line's lock).
func pgPromote(ctx context.Context, tx pgx.Tx, dest, line string) error {
	_, err := tx.Exec(ctx, `UPDATE deliveries SET head = true WHERE (seq, n) = (SELECT seq, n FROM deliveries
		WHERE destination = $1 AND line = $2 AND status IN ('pending', 'failed') ORDER BY seq, n LIMIT 1)`, dest, line)
	return err
}

// pgPlace says whether an open delivery joining its line heads it, and
// takes the head from a later one (the caller holds the line's lock).
func pgPlace(ctx context.Context, tx pgx.Tx, d *Delivery) (bool, error) {
	if d.Line == "" {
		return true, nil
	}
	var seq int64
	var n int
	err := tx.QueryRow(ctx, `SELECT seq, n FROM deliveries WHERE destination = $1 AND line = $2 AND status IN ('pending', 'failed')
		AND NOT (seq = $3 AND n = $4) ORDER BY seq, n LIMIT 1`, d.Destination, d.Line, d.Seq, d.N).Scan(&seq, &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if seq < d.Seq || (seq == d.Seq && n < d.N) {
		return false, nil
	}
	_, err = tx.Exec(ctx, `UPDATE deliveries SET head = false WHERE destination = $1 AND line = $2 AND head AND NOT (seq = $3 AND n = $4)`, d.Destination, d.Line, d.Seq, d.N)
	return err == nil, err
}

const pgDeliveryColumns = `seq, n, destination, line, kind, contact, body, status, attempts, created, due, expires, done, code, error, answer`

// Deliveries lists deliveries in log order.
func (s *Postgres) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT ` + pgDeliveryColumns + ` FROM deliveries WHERE (seq, n) > ($1, $2)`
	n := -1
	if f.Within {
		n = f.N
	} else {
		n = 1 << 30
	}
	args := []any{f.After, n}
	switch f.Status {
	case "":
	case Pending, Failed, Delivered, Dead:
		q += ` AND status = '` + f.Status + `'`
	default:
		return nil, errors.New("store: no delivery status " + f.Status)
	}
	if f.Destination != "" {
		args = append(args, f.Destination)
		q += ` AND destination = $` + strconv.Itoa(len(args))
	}
	args = append(args, f.Limit)
	q += ` ORDER BY seq, n LIMIT $` + strconv.Itoa(len(args))
	return collectDeliveries(s.pool.Query(ctx, q, args...))
}

// Delivery returns a delivery and its attempts, in order.
func (s *Postgres) Delivery(ctx context.Context, id string) (Delivery, []Attempt, bool, error) {
	seq, n, ok := ParseDeliveryID(id)
	if !ok {
		return Delivery{}, nil, false, nil
	}
	d, err := scanPgDelivery(s.pool.QueryRow(ctx, `SELECT `+pgDeliveryColumns+` FROM deliveries WHERE seq = $1 AND n = $2`, seq, n))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, nil, false, nil
	}
	if err != nil {
		return d, nil, false, err
	}
	one := []Delivery{d}
	if err := s.fillFromLog(ctx, one); err != nil {
		return d, nil, false, err
	}
	d = one[0]
	rows, err := s.pool.Query(ctx, `SELECT n, at, took_ms, code, error FROM delivery_attempts WHERE delivery = $1 ORDER BY n`, id)
	if err != nil {
		return d, nil, false, err
	}
	defer rows.Close()
	var attempts []Attempt
	for rows.Next() {
		var a Attempt
		var at, took int64
		if err := rows.Scan(&a.N, &at, &took, &a.Code, &a.Error); err != nil {
			return d, nil, false, err
		}
		a.At, a.Took = fromMillis(at), time.Duration(took)*time.Millisecond
		attempts = append(attempts, a)
	}
	return d, attempts, true, rows.Err()
}

// RetryDelivery makes an undelivered delivery due again, unless an attempt
// at it is in flight.
func (s *Postgres) RetryDelivery(ctx context.Context, id string, now, expires time.Time) (bool, error) {
	seq, n, found := ParseDeliveryID(id)
	if !found {
		return false, nil
	}
	var ok bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var d Delivery
		err := tx.QueryRow(ctx, `SELECT destination, line FROM deliveries WHERE seq = $1 AND n = $2`, seq, n).Scan(&d.Destination, &d.Line)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Line != "" {
			if _, err := tx.Exec(ctx, lockLinesQuery, lockLines, []int32{lineKey(d.Destination, d.Line)}); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `SELECT status FROM deliveries WHERE seq = $1 AND n = $2 FOR UPDATE`, seq, n).Scan(&d.Status); err != nil {
			return err
		}
		d.Seq, d.N = seq, n
		head := false
		if d.Status == Dead {
			if head, err = pgPlace(ctx, tx, &d); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE deliveries SET status = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending' END,
			due = $1, expires = $2, done = 0, lease_until = 0, lease_owner = '',
			head = CASE WHEN status = 'dead' THEN $3 ELSE head END
			WHERE seq = $4 AND n = $5 AND status <> 'delivered' AND lease_until <= $1`, millis(now), millis(expires), head, seq, n)
		if err != nil {
			return err
		}
		ok = tag.RowsAffected() == 1
		return nil
	})
	return ok, err
}

// DeliveryStats counts the open deliveries, the feeds' backlogs included.
func (s *Postgres) DeliveryStats(ctx context.Context) (DeliveryStats, error) {
	var st DeliveryStats
	var oldest int64
	err := s.pool.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MIN(created), 0) FROM deliveries WHERE status IN ('pending', 'failed')`).Scan(&st.Open, &oldest)
	if err != nil {
		return st, err
	}
	st.Oldest = fromMillis(oldest)
	cursors, err := s.feedCursors(ctx)
	if err != nil {
		return st, err
	}
	for _, c := range cursors {
		var n int
		var clock *int64
		err := s.pool.QueryRow(ctx, `SELECT COUNT(*), MIN(clock) FROM events WHERE seq > $1 AND type NOT IN ($3, $4)
			AND NOT (type = $2 AND decision = $5)
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq AND d.kind = 'decision')`,
			c, TypeReload, TypePrune, TypeErase, []byte(NoDecision)).Scan(&n, &clock)
		if err != nil {
			return st, err
		}
		st.Open += n
		if clock != nil {
			if t := time.Unix(0, *clock).UTC(); st.Oldest.IsZero() || t.Before(st.Oldest) {
				st.Oldest = t
			}
		}
	}
	return st, nil
}

// eraseDeliveries rewrites the bodies of the contact's deliveries made up
// to record through, and forgets the receivers' answers to them.
func (s *Postgres) eraseDeliveries(ctx context.Context, contact string, through int64, e Eraser) error {
	ds, err := collectDeliveries(s.pool.Query(ctx, `SELECT `+pgDeliveryColumns+` FROM deliveries WHERE contact = $1 AND seq <= $2`, contact, through))
	if err != nil {
		return err
	}
	for len(ds) > 0 {
		part := ds[:min(eraseChunk, len(ds))]
		ds = ds[len(part):]
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, d := range part {
				body, err := e.RedactDelivery(d)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE deliveries SET body = $1, answer = '' WHERE seq = $2 AND n = $3`, nonNil(body), d.Seq, d.N); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// fillFromLog gives the deliveries without a body of their own the
// decision and clock of their record, in one query.
func (s *Postgres) fillFromLog(ctx context.Context, ds []Delivery) error {
	at := map[int64][]int{}
	var seqs []int64
	for i := range ds {
		if len(ds[i].Body) > 0 {
			continue
		}
		if _, seen := at[ds[i].Seq]; !seen {
			seqs = append(seqs, ds[i].Seq)
		}
		at[ds[i].Seq] = append(at[ds[i].Seq], i)
	}
	if len(seqs) == 0 {
		return nil
	}
	// (Planned for these seqs each time: see Lookup.)
	rows, err := s.pool.Query(ctx, `SELECT seq, clock, decision FROM events WHERE seq = ANY($1)`, pgx.QueryExecModeExec, seqs)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var clock *int64
		var decision []byte
		if err := rows.Scan(&seq, &clock, &decision); err != nil {
			return err
		}
		for _, i := range at[seq] {
			ds[i].Decision = decision
			if clock != nil {
				ds[i].Clock = time.Unix(0, *clock).UTC()
			}
		}
	}
	return rows.Err()
}

// ErrFeedHeld is returned by OpenFeed when another process works the feed.
var ErrFeedHeld = errors.New("another switchboard process works this feed")

// feedLockKey is the advisory lock of dest's feed.
func feedLockKey(dest string) int64 { return namedLockKey(lockFeed, dest) }

// namedLockKey is the advisory lock of name among base's.
func namedLockKey(base int64, name string) int64 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return base<<8 ^ int64(h.Sum32())
}

// feedCheckEvery is how often a process that holds a feed makes sure it
// still does.
const feedCheckEvery = time.Second

// OpenFeed takes dest's feed for this process, if no other process holds
// it (ErrFeedHeld), and starts it at head if there is none. The feed is
// held by a session of its own: the lock lasts as long as the session, and
// when the session is lost Lost is closed and the feed must stop, for
// another process may take it over.
func (s *Postgres) OpenFeed(ctx context.Context, dest string, head int64) (Feed, error) {
	f := Feed{Open: map[string]int{}, Queued: map[int64]bool{}}
	s.feedMu.Lock()
	h := s.feeds[dest]
	s.feedMu.Unlock()
	if h == nil {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return f, err
		}
		var got bool
		if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, feedLockKey(dest)).Scan(&got); err != nil {
			c.Release()
			return f, err
		}
		if !got {
			// A holder that has not said it is alive for feedStale is
			// frozen (its process stopped, its machine paused): its
			// session is ended, which lets the feed go, and it is taken
			// at the next try.
			if feedAge(ctx, c, dest) > feedStale {
				c.Exec(ctx, endHolderQuery, feedLockKey(dest))
			}
			c.Release()
			return f, ErrFeedHeld
		}
		// Taken out of the pool for good: it is the lock.
		h = &heldFeed{conn: c, lost: make(chan struct{}), confirmed: time.Now()}
		s.feedMu.Lock()
		s.feeds[dest] = h
		s.feedMu.Unlock()
		s.bg.Add(1)
		go s.watchFeed(dest, h)
	}
	f.Lost = h.lost
	f.Held = func(ctx context.Context) error { return s.feedHeld(ctx, dest, h) }
	err := s.onFeed(ctx, dest, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $3), ($2, $3) ON CONFLICT (key) DO NOTHING`,
				feedKey(dest, "from"), feedKey(dest, "cursor"), strconv.FormatInt(head, 10)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, pgSayNow, feedKey(dest, "at")); err != nil {
				return err
			}
			m := map[string]int64{}
			rows, err := tx.Query(ctx, `SELECT key, value FROM meta WHERE key IN ($1, $2)`, feedKey(dest, "from"), feedKey(dest, "cursor"))
			if err != nil {
				return err
			}
			for rows.Next() {
				var k, v string
				if err := rows.Scan(&k, &v); err != nil {
					rows.Close()
					return err
				}
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					rows.Close()
					return fmt.Errorf("store: %s is %q, not a record number", k, v)
				}
				m[k] = n
			}
			rows.Close()
			f.From, f.Cursor = m[feedKey(dest, "from")], m[feedKey(dest, "cursor")]
			rows, err = tx.Query(ctx, `SELECT line, COUNT(*) FROM deliveries WHERE destination = $1 AND kind = 'decision' AND status IN ('pending', 'failed') GROUP BY line`, dest)
			if err != nil {
				return err
			}
			for rows.Next() {
				var line string
				var n int
				if err := rows.Scan(&line, &n); err != nil {
					rows.Close()
					return err
				}
				f.Open[line] = n
			}
			rows.Close()
			rows, err = tx.Query(ctx, `SELECT seq FROM deliveries WHERE seq > $1 AND destination = $2 AND kind = 'decision'`, f.Cursor, dest)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var seq int64
				if err := rows.Scan(&seq); err != nil {
					return err
				}
				f.Queued[seq] = true
			}
			return rows.Err()
		})
	})
	return f, err
}

// onFeed runs fn on the session that holds dest's feed: if the session
// is lost, so is the feed, and fn's writes fail rather than move a feed
// another process may have taken.
func (s *Postgres) onFeed(ctx context.Context, dest string, fn func(*pgx.Conn) error) error {
	s.feedMu.Lock()
	h := s.feeds[dest]
	s.feedMu.Unlock()
	if h == nil {
		return fmt.Errorf("store: this process does not hold the feed to %s", dest)
	}
	h.mu.Lock()
	select {
	case <-h.lost:
		h.mu.Unlock()
		return fmt.Errorf("store: the feed to %s was lost: its session with the database ended", dest)
	default:
	}
	if h.gone {
		h.mu.Unlock()
		return fmt.Errorf("store: the feed to %s was lost: its session with the database ended", dest)
	}
	err := fn(h.conn.Conn())
	closed := err != nil && h.conn.Conn().IsClosed()
	h.mu.Unlock()
	if closed {
		s.loseFeed(dest, h)
	}
	return err
}

// watchFeed makes sure, every feedCheckEvery, that the session holding a
// feed is alive, and says so in the database (feed:DEST:at, on the
// database's clock); when it is not, the feed is lost.
func (s *Postgres) watchFeed(dest string, h *heldFeed) {
	defer s.bg.Done()
	t := time.NewTicker(feedCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-h.lost:
			return
		case <-t.C:
		}
		if s.confirmFeed(context.Background(), dest, h) != nil {
			return
		}
	}
}

// confirmFeed says in the database that this process holds dest's feed;
// when it cannot, the feed is lost.
func (s *Postgres) confirmFeed(ctx context.Context, dest string, h *heldFeed) error {
	h.mu.Lock()
	if h.gone {
		// Lost meanwhile (by another caller, or the store closing).
		h.mu.Unlock()
		return fmt.Errorf("store: the feed to %s was lost", dest)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*feedCheckEvery)
	before := time.Now()
	_, err := h.conn.Conn().Exec(tctx, pgSayNow, feedKey(dest, "at"))
	cancel()
	if err == nil {
		h.confirmed = before
	}
	closed := h.conn.Conn().IsClosed()
	h.mu.Unlock()
	if err != nil && ctx.Err() != nil && !closed {
		return ctx.Err() // the caller gave up; the session, and the feed, are still held
	}
	if err != nil {
		s.loseFeed(dest, h)
		return fmt.Errorf("store: the feed to %s was lost: %w", dest, err)
	}
	return nil
}

// feedFresh is how long after saying it holds a feed a process takes it
// as still held without asking: well under feedStale, after which another
// process may take the feed over.
const feedFresh = feedStale / 3

// feedHeld makes sure this process still holds dest's feed before it
// sends: a process that was frozen (stopped, its machine paused) past
// feedStale may have lost it to another without noticing yet, and must
// not send what the other is sending.
func (s *Postgres) feedHeld(ctx context.Context, dest string, h *heldFeed) error {
	h.mu.Lock()
	fresh := time.Since(h.confirmed) < feedFresh
	h.mu.Unlock()
	select {
	case <-h.lost:
		return fmt.Errorf("store: the feed to %s was lost", dest)
	default:
	}
	if fresh {
		return nil
	}
	return s.confirmFeed(ctx, dest, h)
}

// loseFeed gives up a feed whose session failed.
func (s *Postgres) loseFeed(dest string, h *heldFeed) {
	s.feedMu.Lock()
	if s.feeds[dest] == h {
		delete(s.feeds, dest)
	}
	s.feedMu.Unlock()
	h.drop()
	h.mu.Lock()
	h.release()
	h.mu.Unlock()
}

// AdvanceFeed hands deliveries to the outbox and moves the feed's cursor,
// in one transaction on the feed's session.
func (s *Postgres) AdvanceFeed(ctx context.Context, dest string, cursor int64, ds []Delivery, outcomes []Outcome) error {
	if len(outcomes) != len(ds) {
		return errors.New("store: a feed's deliveries and outcomes must pair up")
	}
	return s.onFeed(ctx, dest, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			ptrs := make([]*Delivery, len(ds))
			for i := range ds {
				ptrs[i] = &ds[i]
			}
			if keys := lineKeys(ptrs); len(keys) > 0 {
				if _, err := tx.Exec(ctx, lockLinesQuery, lockLines, keys); err != nil {
					return err
				}
			}
			for i, d := range ds {
				o := outcomes[i]
				status, attempts, due, done := Pending, 0, millis(d.Due), int64(0)
				switch o.Status {
				case "":
				case Failed:
					status, attempts, due = Failed, 1, millis(o.Due)
				case Dead, Delivered:
					status, attempts, done = o.Status, 1, millis(o.Attempt.At)
				default:
					return errors.New("store: an outcome must be delivered, failed or dead, not " + o.Status)
				}
				answer := o.Answer
				if len(answer) > answerLimit {
					answer = answer[:answerLimit]
				}
				var exists bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM deliveries WHERE seq = $1 AND n = $2)`, d.Seq, d.N).Scan(&exists); err != nil {
					return err
				}
				if exists {
					continue
				}
				head := false
				if isOpen(status) {
					var err error
					if head, err = pgPlace(ctx, tx, &d); err != nil {
						return err
					}
				}
				if _, err := tx.Exec(ctx, `INSERT INTO deliveries (`+pgDeliveryColumns+`, head) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
					d.Seq, d.N, d.Destination, d.Line, d.Kind, d.Contact, nonNil(d.Body), status, attempts,
					millis(d.Created), due, millis(d.Expires), done, o.Attempt.Code, pgText(o.Attempt.Error), pgText(answer), head); err != nil {
					return err
				}
				if attempts == 0 {
					continue
				}
				if _, err := tx.Exec(ctx, `INSERT INTO delivery_attempts (delivery, n, at, took_ms, code, error) VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
					DeliveryID(d.Seq, d.N), millis(o.Attempt.At), o.Attempt.Took.Milliseconds(), o.Attempt.Code, pgText(o.Attempt.Error)); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2), ($3, `+dbMillis+`) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
				feedKey(dest, "cursor"), strconv.FormatInt(cursor, 10), feedKey(dest, "at"))
			return err
		})
	})
}

// feedIdle is how long a shared feed must have gone unworked before a
// process without the destination configured may close it: an instance
// configured otherwise must not close the feed the others work, even
// while its holder restarts.
const feedIdle = 10 * time.Minute

// feedStale is how long the holder of a feed may go without saying it is
// alive before another process ends its session and takes the feed over.
const feedStale = 15 * time.Second

// dbMillis is the database's clock in Unix milliseconds, as text.
const dbMillis = `(extract(epoch from clock_timestamp()) * 1000)::bigint::text`

// feedAge is how long ago, on the database's clock, dest's feed was last
// worked; very long when it never was.
func feedAge(ctx context.Context, q rowQuerier, dest string) time.Duration {
	return metaAge(ctx, q, feedKey(dest, "at"))
}

type rowQuerier interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}

// metaAge is how long ago, on the database's clock, the time stored under
// key was (Unix ms); very long when there is none.
func metaAge(ctx context.Context, q rowQuerier, key string) time.Duration {
	age, ok := metaAgeOK(ctx, q, key)
	if !ok {
		return 1 << 62
	}
	return age
}

// metaAgeOK is metaAge, and whether there is a time under key.
func metaAgeOK(ctx context.Context, q rowQuerier, key string) (time.Duration, bool) {
	var ms int64
	err := q.QueryRow(ctx, `SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint - value::bigint FROM meta WHERE key = $1`, key).Scan(&ms)
	if err != nil {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// ErrFeedInUse is returned by CloseFeed when other processes worked the
// feed recently: it is left open.
var ErrFeedInUse = errors.New("other switchboard processes work this feed")

// CloseFeed forgets the feed to dest: the decisions it still owed become
// dead deliveries saying why. It waits for the process working the feed,
// if another does, to let it go.
func (s *Postgres) CloseFeed(ctx context.Context, dest, why string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Not while another process works the feed: its configuration says
		// there is a platform, and it goes on.
		var free bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, feedLockKey(dest)).Scan(&free); err != nil {
			return err
		}
		if !free || feedAge(ctx, tx, dest) < feedIdle {
			return ErrFeedInUse
		}
		var v string
		err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, feedKey(dest, "cursor")).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		cursor, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("store: %s is %q, not a record number", feedKey(dest, "cursor"), v)
		}
		now := time.Now().UnixMilli()
		for {
			rows, err := tx.Query(ctx, `SELECT seq, clock, decision FROM events WHERE seq > $1 AND type NOT IN ($3, $4)
				AND NOT (type = $2 AND decision = $5) ORDER BY seq LIMIT 1000`,
				cursor, TypeReload, TypePrune, TypeErase, []byte(NoDecision))
			if err != nil {
				return err
			}
			var seqs, created []int64
			var lines []string
			for rows.Next() {
				var seq int64
				var clock *int64
				var decision []byte
				if err := rows.Scan(&seq, &clock, &decision); err != nil {
					rows.Close()
					return err
				}
				cursor = seq
				var dec struct {
					Conversation string `json:"conversation"`
					Actions      []struct {
						Conversation string `json:"conversation"`
					} `json:"actions"`
				}
				if json.Unmarshal(decision, &dec) != nil {
					continue
				}
				line := dec.Conversation
				if line == "" && len(dec.Actions) > 0 {
					line = dec.Actions[0].Conversation
				}
				at := now
				if clock != nil {
					at = *clock / 1e6
				}
				seqs, lines, created = append(seqs, seq), append(lines, line), append(created, at)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(seqs) == 0 {
				break
			}
			if _, err := tx.Exec(ctx, `INSERT INTO deliveries (seq, n, destination, line, kind, contact, body, status, created, due, expires, done, error)
				SELECT q.seq, 0, $1, q.line, 'decision', '', '\x'::bytea, 'dead', q.created, q.created, q.created, $2, $3
				FROM unnest($4::bigint[], $5::text[], $6::bigint[]) AS q(seq, line, created) ON CONFLICT DO NOTHING`,
				dest, now, pgText(why), seqs, lines, created); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM meta WHERE key IN ($1, $2, $3)`, feedKey(dest, "from"), feedKey(dest, "cursor"), feedKey(dest, "at"))
		return err
	})
}

// feedCursors are the cursors of the feeds open.
func (s *Postgres) feedCursors(ctx context.Context) ([]int64, error) {
	m, err := s.Meta(ctx, "feed:")
	if err != nil {
		return nil, err
	}
	var out []int64
	for k, v := range m {
		if !strings.HasSuffix(k, ":cursor") {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store: %s is %q, not a record number", k, v)
		}
		out = append(out, n)
	}
	return out, nil
}
