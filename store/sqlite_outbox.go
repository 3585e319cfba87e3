package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The SQLite outbox. Deliveries are inserted by Append, in the records'
// transaction, on the writing connection. The dispatcher's bookkeeping
// (claims and outcomes) goes through a second connection with
// synchronous=NORMAL: it is serialised with every other write by wmu, but
// does not wait for an fsync. A crash may forget the last outcomes, and
// the deliveries are then made again: at least once, as promised.

const (
	insertDeliveries = `INSERT INTO deliveries (seq, n, destination, line, kind, contact, body, status, created, due, expires, done, error, head) VALUES `
	deliveryValues   = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	deliveryColumns  = `seq, n, destination, line, kind, contact, body, status, attempts, created, due, expires, done, code, error, answer`
)

func (s *SQLite) openOutbox(ctx context.Context) error {
	var err error
	if s.ow, err = s.db.Conn(ctx); err != nil {
		return err
	}
	if _, err := s.ow.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return err
	}
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{{&s.claim, claimQuery}, {&s.outcome, outcomeQuery}, {&s.attempt, attemptQuery}} {
		if *p.st, err = s.ow.PrepareContext(ctx, p.q); err != nil {
			return err
		}
	}
	if s.candidates, err = s.db.PrepareContext(ctx, candidatesQuery); err != nil {
		return err
	}
	// One process owns the file, so no claim of an earlier one still holds.
	_, err = s.w.ExecContext(ctx, `UPDATE deliveries SET lease_until = 0, lease_owner = '' WHERE lease_until > 0`)
	return err
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Each line of the outbox (a destination and a conversation) has a head:
// its first open delivery, the only one that may be claimed. Deliveries in
// no line are each a head. A claim looks at the heads only, so deliveries
// waiting behind a failing one cost nothing however many there are.

// lineFirst is the first open delivery of a line.
func lineFirst(ctx context.Context, c *sql.Conn, dest, line string) (seq int64, n int, ok bool, err error) {
	err = c.QueryRowContext(ctx, `SELECT seq, n FROM deliveries INDEXED BY deliveries_line
		WHERE destination = ? AND line = ? AND status IN ('pending', 'failed') ORDER BY seq, n LIMIT 1`, dest, line).Scan(&seq, &n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	return seq, n, err == nil, err
}

// promote makes the first open delivery of a line its head.
func promote(ctx context.Context, c *sql.Conn, dest, line string) error {
	if line == "" {
		return nil
	}
	_, err := c.ExecContext(ctx, `UPDATE deliveries SET head = 1 WHERE (seq, n) = (SELECT seq, n FROM deliveries INDEXED BY deliveries_line
		WHERE destination = ? AND line = ? AND status IN ('pending', 'failed') ORDER BY seq, n LIMIT 1)`, dest, line)
	return err
}

// place says whether an open delivery about to join its line heads it: it
// does when the line is empty, or when it comes before the line's head,
// which is then no longer one. It runs in the transaction that adds it.
func place(ctx context.Context, c *sql.Conn, d *Delivery) (head bool, err error) {
	if d.Line == "" {
		return true, nil
	}
	seq, n, ok, err := lineFirst(ctx, c, d.Destination, d.Line)
	if err != nil || !ok {
		return err == nil, err
	}
	if seq < d.Seq || (seq == d.Seq && n < d.N) {
		return false, nil
	}
	_, err = c.ExecContext(ctx, `UPDATE deliveries SET head = 0 WHERE seq = ? AND n = ?`, seq, n)
	return err == nil, err
}

func isOpen(status string) bool { return status == "" || status == Pending || status == Failed }

// insertDeliveries stores the records' deliveries; it runs inside Append's
// transaction. They come after every stored one, so each that is open
// heads its line if the line has no open delivery yet.
func (s *SQLite) insertDeliveries(ctx context.Context, recs []Record) error {
	var all []*Delivery
	for i := range recs {
		for j := range recs[i].Deliveries {
			all = append(all, &recs[i].Deliveries[j])
		}
	}
	type key struct{ dest, line string }
	taken := map[key]bool{} // lines with an open delivery
	heads := make(map[*Delivery]bool, len(all))
	for _, d := range all {
		if !isOpen(d.Status) {
			continue
		}
		k := key{d.Destination, d.Line}
		if d.Line == "" {
			heads[d] = true
			continue
		}
		if _, seen := taken[k]; !seen {
			_, _, ok, err := lineFirst(ctx, s.w, d.Destination, d.Line)
			if err != nil {
				return err
			}
			taken[k] = ok
		}
		if !taken[k] {
			heads[d], taken[k] = true, true
		}
	}
	args := make([]any, 0, 14*insertRows)
	for len(all) > 0 {
		n, stmt := insertRows, s.xdN
		if len(all) < insertRows {
			n, stmt = 1, s.xd
		}
		args = args[:0]
		for _, d := range all[:n] {
			status := d.Status
			if status == "" {
				status = Pending
			}
			body := d.Body
			if body == nil {
				body = []byte{}
			}
			head := 0
			if heads[d] {
				head = 1
			}
			args = append(args, d.Seq, d.N, d.Destination, d.Line, d.Kind, d.Contact, body, status,
				millis(d.Created), millis(d.Due), millis(d.Expires), millis(d.Done), d.Error, head)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return err
		}
		all = all[n:]
	}
	return nil
}

func scanDelivery(scan func(...any) error) (Delivery, error) {
	var d Delivery
	var created, due, expires, done int64
	err := scan(&d.Seq, &d.N, &d.Destination, &d.Line, &d.Kind, &d.Contact, &d.Body, &d.Status, &d.Attempts,
		&created, &due, &expires, &done, &d.Code, &d.Error, &d.Answer)
	d.ID = DeliveryID(d.Seq, d.N)
	d.Created, d.Due, d.Expires, d.Done = fromMillis(created), fromMillis(due), fromMillis(expires), fromMillis(done)
	return d, err
}

// candidatesQuery finds the due deliveries that head their lines, in due
// order. It is read beside the writers: the search never holds the write
// lock.
const candidatesQuery = `SELECT seq, n FROM deliveries INDEXED BY deliveries_heads -- in due order, so that LIMIT stops early
	WHERE head = 1 AND status IN ('pending', 'failed') AND due <= ? AND lease_until <= ?
	ORDER BY due, seq, n LIMIT ?`

// claimQuery leases one candidate, if it is still open, due and free: it
// may have been taken meanwhile, by this process or another.
const claimQuery = `UPDATE deliveries SET lease_until = ?, lease_owner = ?
	WHERE seq = ? AND n = ? AND head = 1 AND status IN ('pending', 'failed') AND due <= ? AND lease_until <= ?
	RETURNING ` + deliveryColumns

// outcomeQuery records an attempt's outcome, if the claim still holds. A
// delivery done is no longer its line's head.
const outcomeQuery = `UPDATE deliveries SET status = ?1, attempts = attempts + 1,
	due = CASE WHEN ?2 > 0 THEN ?2 ELSE due END, done = ?3, code = ?4, error = ?5, answer = ?6, lease_until = 0, lease_owner = '',
	head = CASE WHEN ?1 IN ('delivered', 'dead') THEN 0 ELSE head END
	WHERE seq = ?7 AND n = ?8 AND lease_owner = ?9 RETURNING attempts, destination, line`

const attemptQuery = `INSERT OR REPLACE INTO delivery_attempts (delivery, n, at, took_ms, code, error) VALUES (?, ?, ?, ?, ?, ?)`

// ClaimDeliveries leases the due deliveries that head their lines.
func (s *SQLite) ClaimDeliveries(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	type key struct {
		seq int64
		n   int
	}
	var cands []key
	rows, err := s.candidates.QueryContext(ctx, millis(now), millis(now), limit)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.seq, &k.n); err != nil {
			rows.Close()
			return nil, err
		}
		cands = append(cands, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(cands) == 0 {
		return nil, err
	}
	var out []Delivery
	err = s.inTxOn(ctx, s.ow, func(tx *sql.Conn) error {
		for _, k := range cands {
			d, err := scanDelivery(s.claim.QueryRowContext(ctx, millis(now.Add(lease)), owner, k.seq, k.n, millis(now), millis(now)).Scan)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.fillFromLog(ctx, out); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Delivery) int { return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.N, b.N)) })
	return out, nil
}

// answerLimit is how much of a receiver's answer is kept.
const answerLimit = 4096

// FinishDeliveries records the outcomes of owner's claims, in one
// transaction.
func (s *SQLite) FinishDeliveries(ctx context.Context, owner string, outcomes []Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	return s.inTxOn(ctx, s.ow, func(tx *sql.Conn) error {
		for _, o := range outcomes {
			var done, due int64
			switch o.Status {
			case Delivered, Dead:
				done = millis(o.Attempt.At)
			case Failed:
				due = millis(o.Due)
			default:
				return errors.New("store: an outcome must be delivered, failed or dead, not " + o.Status)
			}
			answer := o.Answer
			if len(answer) > answerLimit {
				answer = strings.ToValidUTF8(answer[:answerLimit], "")
			}
			seq, at, ok := ParseDeliveryID(o.ID)
			if !ok {
				return errors.New("store: no delivery " + o.ID)
			}
			var n int
			var dest, line string
			err := s.outcome.QueryRowContext(ctx, o.Status, due, done, o.Attempt.Code, o.Attempt.Error, answer, seq, at, owner).Scan(&n, &dest, &line)
			if errors.Is(err, sql.ErrNoRows) {
				continue // no longer ours: the lease ran out and another took it
			}
			if err != nil {
				return err
			}
			if o.Status != Failed {
				if err := promote(ctx, tx, dest, line); err != nil {
					return err
				}
			}
			if _, err := s.attempt.ExecContext(ctx, o.ID, n, millis(o.Attempt.At), o.Attempt.Took.Milliseconds(), o.Attempt.Code, o.Attempt.Error); err != nil {
				return err
			}
		}
		return nil
	})
}

// Deliveries lists deliveries in log order.
func (s *SQLite) Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT ` + deliveryColumns + ` FROM deliveries WHERE seq > ?`
	args := []any{f.After}
	if f.Within {
		q = `SELECT ` + deliveryColumns + ` FROM deliveries WHERE (seq, n) > (?, ?)`
		args = append(args, f.N)
	}
	switch f.Status {
	case "":
	case Pending, Failed, Delivered, Dead:
		// Written out, so that the planner can use the partial indexes.
		q += ` AND status = '` + f.Status + `'`
	default:
		return nil, errors.New("store: no delivery status " + f.Status)
	}
	if f.Destination != "" {
		q += ` AND destination = ?`
		args = append(args, f.Destination)
	}
	q += ` ORDER BY seq, n LIMIT ?`
	args = append(args, f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d, err := scanDelivery(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Delivery returns a delivery and its attempts, in order.
func (s *SQLite) Delivery(ctx context.Context, id string) (Delivery, []Attempt, bool, error) {
	seq, n, ok := ParseDeliveryID(id)
	if !ok {
		return Delivery{}, nil, false, nil
	}
	d, err := scanDelivery(s.db.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE seq = ? AND n = ?`, seq, n).Scan)
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.db.QueryContext(ctx, `SELECT n, at, took_ms, code, error FROM delivery_attempts WHERE delivery = ? ORDER BY n`, id)
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

// RetryDelivery makes an undelivered delivery due again, unless an
// attempt at it is in flight. It is an operator's request, so it is
// committed with an fsync.
func (s *SQLite) RetryDelivery(ctx context.Context, id string, now, expires time.Time) (bool, error) {
	seq, n, found := ParseDeliveryID(id)
	if !found {
		return false, nil
	}
	var ok bool
	err := s.inTx(ctx, func(tx *sql.Conn) error {
		var d Delivery
		err := tx.QueryRowContext(ctx, `SELECT destination, line, status FROM deliveries WHERE seq = ? AND n = ?`, seq, n).Scan(&d.Destination, &d.Line, &d.Status)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		d.Seq, d.N = seq, n
		// A dead one open again goes back in its line, at its place; one
		// still open keeps its place.
		head := false
		if d.Status == Dead {
			if head, err = place(ctx, tx, &d); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE deliveries SET status = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending' END,
			due = ?, expires = ?, done = 0, lease_until = 0, lease_owner = '',
			head = CASE WHEN status = 'dead' THEN ? ELSE head END
			WHERE seq = ? AND n = ? AND status != 'delivered' AND lease_until <= ?`, millis(now), millis(expires), head, seq, n, millis(now))
		if err != nil {
			return err
		}
		changed, err := res.RowsAffected()
		ok = changed == 1
		return err
	})
	return ok, err
}

// DeliveryStats counts the open deliveries.
func (s *SQLite) DeliveryStats(ctx context.Context) (DeliveryStats, error) {
	var st DeliveryStats
	var oldest int64
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MIN(created), 0) FROM deliveries WHERE status IN ('pending', 'failed')`).Scan(&st.Open, &oldest)
	if err != nil {
		return st, err
	}
	st.Oldest = fromMillis(oldest)
	// The decisions a feed has not reached yet are open too.
	cursors, err := s.feedCursors(ctx)
	if err != nil {
		return st, err
	}
	for _, c := range cursors {
		var n int
		var clock sql.NullInt64
		// (Those handed to the outbox past the cursor are counted there.)
		err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(clock) FROM events WHERE seq > ? AND type NOT IN (?, ?)
			AND NOT (type = ? AND decision = ?)
			AND seq NOT IN (SELECT seq FROM deliveries WHERE seq > ? AND kind = 'decision')`,
			c, TypePrune, TypeErase, TypeReload, NoDecision, c).Scan(&n, &clock)
		if err != nil {
			return st, err
		}
		st.Open += n
		if clock.Valid {
			if t := time.Unix(0, clock.Int64).UTC(); st.Oldest.IsZero() || t.Before(st.Oldest) {
				st.Oldest = t
			}
		}
	}
	return st, nil
}

// Records returns up to limit records after seq after.
func (s *SQLite) Records(ctx context.Context, after int64, limit int) ([]Record, error) {
	return s.query(ctx, `SELECT `+recordColumns+` FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
}

// Reloads returns the log's reload records before seq before, newest first.
func (s *SQLite) Reloads(ctx context.Context, before int64, limit int) ([]Record, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	return s.query(ctx, `SELECT `+recordColumns+` FROM events WHERE type = 'rules.reload' AND seq < ? ORDER BY seq DESC LIMIT ?`, before, limit)
}

// Concerning returns the records concerning a contact after seq after.
func (s *SQLite) Concerning(ctx context.Context, contact string, after int64, limit int) ([]Record, error) {
	return s.query(ctx, `SELECT `+prefixed("e.", recordColumns)+` FROM event_contacts c JOIN events e ON e.seq = c.seq
		WHERE c.seq > ? AND c.contact = ? ORDER BY c.seq LIMIT ?`, after, contact, limit)
}

func (s *SQLite) query(ctx context.Context, q string, args ...any) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanRecord(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// prefixed qualifies each of a list of columns.
func prefixed(p, cols string) string {
	return p + strings.ReplaceAll(cols, ", ", ", "+p)
}

// eraseDeliveries rewrites the bodies of the contact's deliveries made up to
// record through, and forgets the receivers' answers to them.
func (s *SQLite) eraseDeliveries(ctx context.Context, contact string, through int64, e Eraser) error {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM deliveries WHERE contact = ? AND seq <= ?`, contact, through)
	if err != nil {
		return err
	}
	var ds []Delivery
	for rows.Next() {
		d, err := scanDelivery(rows.Scan)
		if err != nil {
			rows.Close()
			return err
		}
		ds = append(ds, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for len(ds) > 0 {
		part := ds[:min(eraseChunk, len(ds))]
		ds = ds[len(part):]
		err := s.inTx(ctx, func(tx *sql.Conn) error {
			for _, d := range part {
				body, err := e.RedactDelivery(d)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET body = ?, answer = '' WHERE seq = ? AND n = ?`, body, d.Seq, d.N); err != nil {
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
func (s *SQLite) fillFromLog(ctx context.Context, ds []Delivery) error {
	at := map[int64][]int{} // seq: the deliveries that need it
	var args []any
	for i := range ds {
		if len(ds[i].Body) > 0 {
			continue
		}
		if _, seen := at[ds[i].Seq]; !seen {
			args = append(args, ds[i].Seq)
		}
		at[ds[i].Seq] = append(at[ds[i].Seq], i)
	}
	if len(args) == 0 {
		return nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, clock, decision FROM events WHERE seq IN (?`+strings.Repeat(", ?", len(args)-1)+`)`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var clock sql.NullInt64
		var decision []byte
		if err := rows.Scan(&seq, &clock, &decision); err != nil {
			return err
		}
		for _, i := range at[seq] {
			ds[i].Decision = decision
			if clock.Valid {
				ds[i].Clock = time.Unix(0, clock.Int64).UTC()
			}
		}
	}
	return rows.Err() // a record gone leaves its deliveries without a decision: the sender says so
}

// DeliveryID is the id of a record's n-th delivery: the same on every
// attempt, unique across the log, and the key it is stored under.
func DeliveryID(seq int64, n int) string { return fmt.Sprintf("sb-%d-%d", seq, n) }

// ParseDeliveryID reads a delivery id.
func ParseDeliveryID(id string) (seq int64, n int, ok bool) {
	if _, err := fmt.Sscanf(id, "sb-%d-%d", &seq, &n); err != nil || DeliveryID(seq, n) != id {
		return 0, 0, false
	}
	return seq, n, true
}

// The feeds' places are kept in meta, under feed:DEST:from and
// feed:DEST:cursor.
func feedKey(dest, what string) string { return "feed:" + dest + ":" + what }

// OpenFeed starts a feed to dest at head if there is none, and returns
// where it is, with the outbox deliveries to dest it must wait for.
func (s *SQLite) OpenFeed(ctx context.Context, dest string, head int64) (Feed, error) {
	f := Feed{Open: map[string]int{}, Queued: map[int64]bool{}}
	m, err := s.Meta(ctx, feedKey(dest, ""))
	if err != nil {
		return f, err
	}
	from, errFrom := strconv.ParseInt(m[feedKey(dest, "from")], 10, 64)
	cursor, errCursor := strconv.ParseInt(m[feedKey(dest, "cursor")], 10, 64)
	if errFrom != nil || errCursor != nil {
		from, cursor = head, head
		err := s.inTx(ctx, func(tx *sql.Conn) error {
			for k, v := range map[string]int64{feedKey(dest, "from"): head, feedKey(dest, "cursor"): head} {
				if _, err := tx.ExecContext(ctx, upsertMeta, k, strconv.FormatInt(v, 10)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return f, err
		}
	}
	f.From, f.Cursor = from, cursor
	rows, err := s.db.QueryContext(ctx, `SELECT line, COUNT(*) FROM deliveries INDEXED BY deliveries_line
		WHERE destination = ? AND kind = 'decision' AND status IN ('pending', 'failed') GROUP BY line`, dest)
	if err != nil {
		return f, err
	}
	for rows.Next() {
		var line string
		var n int
		if err := rows.Scan(&line, &n); err != nil {
			rows.Close()
			return f, err
		}
		f.Open[line] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return f, err
	}
	rows, err = s.db.QueryContext(ctx, `SELECT seq FROM deliveries WHERE seq > ? AND destination = ? AND kind = 'decision'`, cursor, dest)
	if err != nil {
		return f, err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return f, err
		}
		f.Queued[seq] = true
	}
	return f, rows.Err()
}

const upsertMeta = `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`

// AdvanceFeed hands deliveries to the outbox and moves the feed's cursor,
// in one transaction on the outbox's connection: a crash forgets both or
// neither, and the feed then sends those decisions again.
func (s *SQLite) AdvanceFeed(ctx context.Context, dest string, cursor int64, ds []Delivery, outcomes []Outcome) error {
	if len(outcomes) != len(ds) {
		return errors.New("store: a feed's deliveries and outcomes must pair up")
	}
	return s.inTxOn(ctx, s.ow, func(tx *sql.Conn) error {
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
				answer = strings.ToValidUTF8(answer[:answerLimit], "")
			}
			body := d.Body
			if body == nil {
				body = []byte{}
			}
			var exists int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM deliveries WHERE seq = ? AND n = ?`, d.Seq, d.N).Scan(&exists); err != nil || exists > 0 {
				if err != nil {
					return err
				}
				continue // handed over before a crash
			}
			head := false
			if isOpen(status) {
				var err error
				if head, err = place(ctx, tx, &d); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO deliveries (`+deliveryColumns+`, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				d.Seq, d.N, d.Destination, d.Line, d.Kind, d.Contact, body, status, attempts,
				millis(d.Created), due, millis(d.Expires), done, o.Attempt.Code, o.Attempt.Error, answer, head)
			if err != nil {
				return err
			}
			if attempts == 0 {
				continue // nothing tried yet
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO delivery_attempts (delivery, n, at, took_ms, code, error) VALUES (?, 1, ?, ?, ?, ?)`,
				DeliveryID(d.Seq, d.N), millis(o.Attempt.At), o.Attempt.Took.Milliseconds(), o.Attempt.Code, o.Attempt.Error); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, upsertMeta, feedKey(dest, "cursor"), strconv.FormatInt(cursor, 10))
		return err
	})
}

// CloseFeed forgets the feed to dest. The decisions it still owed (made
// while dest was configured) become dead deliveries saying why, so that
// they show, and can be retried once dest is configured again.
func (s *SQLite) CloseFeed(ctx context.Context, dest, why string) error {
	m, err := s.Meta(ctx, feedKey(dest, "cursor"))
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Conn) error {
		if v, ok := m[feedKey(dest, "cursor")]; ok {
			cursor, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("store: %s is %q, not a record number", feedKey(dest, "cursor"), v)
			}
			_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO deliveries (seq, n, destination, line, kind, contact, body, status, created, due, expires, done, error)
				SELECT seq, 0, ?1, COALESCE(json_extract(decision, '$.conversation'), json_extract(decision, '$.actions[0].conversation'), ''),
					'decision', '', x'', 'dead', COALESCE(clock / 1000000, ?5), COALESCE(clock / 1000000, ?5), COALESCE(clock / 1000000, ?5), ?5, ?6
				FROM events WHERE seq > ?2 AND type NOT IN (?4, ?7) AND NOT (type = ?3 AND decision = ?8) AND json_valid(decision)`,
				dest, cursor, TypeReload, TypePrune, time.Now().UnixMilli(), why, TypeErase, NoDecision)
			if err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM meta WHERE key IN (?, ?)`, feedKey(dest, "from"), feedKey(dest, "cursor"))
		return err
	})
}

// feedCursors are the cursors of the feeds open.
func (s *SQLite) feedCursors(ctx context.Context) ([]int64, error) {
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
