package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/switchboard-dev/switchboard/internal/pgtest"
)

func openPG(t *testing.T, u string) *Postgres {
	t.Helper()
	s, err := OpenPostgres(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgresShared: several processes (each its own pool) starting at
// once migrate once, append concurrently into one total order, each seeing
// the others' records in the tail, and claim every delivery exactly once.
func TestPostgresShared(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	const procs, rounds = 4, 50
	stores := make([]*Postgres, procs)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func() { defer wg.Done(); stores[i] = openPG(t, u) }()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var mu sync.Mutex
	seen := map[int]int64{} // process: the last seq it knows
	for p, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := int64(0)
			for r := range rounds {
				err := s.Sequence(ctx, last, func(tail []Record) ([]Record, error) {
					for _, x := range tail {
						if x.Seq != last+1 {
							return nil, fmt.Errorf("process %d: the tail skips from %d to %d", p, last, x.Seq)
						}
						last = x.Seq
					}
					next := rec(last+1, fmt.Sprintf("p%d-%d", p, r), "k")
					next.Deliveries = []Delivery{deliv(last+1, 0, "webhook:crm", fmt.Sprint("c", r%3), time.Unix(0, 0))}
					last++
					return []Record{next}, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
			mu.Lock()
			seen[p] = last
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if n, _ := stores[0].LastSeq(ctx); n != procs*rounds {
		t.Fatalf("last seq %d, want %d", n, procs*rounds)
	}
	// Every delivery claimed once, one line at a time, whoever claims.
	claimed := map[string]string{}
	for round := 0; round < 10*procs*rounds && len(claimed) < procs*rounds; round++ {
		for p, s := range stores {
			owner := fmt.Sprint("p", p)
			got, err := s.ClaimDeliveries(ctx, owner, time.Unix(1, 0), time.Hour, 7)
			if err != nil {
				t.Fatal(err)
			}
			lines := map[string]bool{}
			var outs []Outcome
			for _, d := range got {
				if by, ok := claimed[d.ID]; ok {
					t.Fatalf("%s claimed by %s and %s", d.ID, by, owner)
				}
				if lines[d.Line] {
					t.Fatalf("two deliveries of line %s claimed at once", d.Line)
				}
				lines[d.Line], claimed[d.ID] = true, owner
				outs = append(outs, Outcome{ID: d.ID, Status: Delivered, Attempt: Attempt{At: time.Unix(1, 0)}})
			}
			if err := s.FinishDeliveries(ctx, owner, outs); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(claimed) != procs*rounds {
		t.Fatalf("%d deliveries claimed of %d", len(claimed), procs*rounds)
	}
}

// TestPostgresFeedHeld: one process holds a feed; it is lost when its
// session ends, and another takes it over where it was.
func TestPostgresFeedHeld(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, u), openPG(t, u)
	fa, err := a.OpenFeed(ctx, "platform", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenFeed(ctx, "platform", 0); !errors.Is(err, ErrFeedHeld) {
		t.Fatalf("a second holder: %v", err)
	}
	if err := b.AdvanceFeed(ctx, "platform", 5, nil, nil); err == nil {
		t.Fatal("a process that does not hold the feed moved it")
	}
	if err := a.AdvanceFeed(ctx, "platform", 7, nil, nil); err != nil {
		t.Fatal(err)
	}
	// The holder's session is killed from outside (as a server restart or
	// a cut connection would).
	c := bystander(t, u)
	endHolder(t, c, feedLockKey("platform"))
	select {
	case <-fa.Lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the feed's loss went unnoticed")
	}
	if err := a.AdvanceFeed(ctx, "platform", 9, nil, nil); err == nil {
		t.Fatal("a lost feed moved")
	}
	fb, err := b.OpenFeed(ctx, "platform", 0)
	if err != nil {
		t.Fatal(err)
	}
	if fb.Cursor != 7 {
		t.Fatalf("taken over at %d, want 7", fb.Cursor)
	}
	// A holder that stops saying it is alive (its process frozen) has its
	// session ended by the next taker, who then takes the feed.
	if _, err := c.Exec(ctx, `UPDATE meta SET value = '0' WHERE key = 'feed:platform:at'`); err != nil {
		t.Fatal(err)
	}
	d := openPG(t, u)
	if _, err := d.OpenFeed(ctx, "platform", 0); !errors.Is(err, ErrFeedHeld) {
		t.Fatalf("taking a frozen holder's feed: %v", err)
	}
	select {
	case <-fb.Lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen holder kept the feed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := d.OpenFeed(ctx, "platform", 0); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the feed was not taken over from a frozen holder: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPostgresSchema: a database migrated by a newer switchboard is
// refused, saying so; one holding other tables is not taken over.
func TestPostgresSchema(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	s := openPG(t, u)
	if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, len(pgMigrations)+1); err != nil {
		t.Fatal(err)
	}
	_, err := OpenPostgres(ctx, u)
	if err == nil || !strings.Contains(err.Error(), "newer than this switchboard's") {
		t.Fatalf("a newer schema: %v", err)
	}
	other := pgtest.URL(t)
	c, err := pgx.Connect(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(ctx, `CREATE TABLE invoices (id int)`)
	c.Close(ctx)
	if _, err := OpenPostgres(ctx, other); err == nil || !strings.Contains(err.Error(), "not Switchboard's (invoices)") {
		t.Fatalf("a database of something else: %v", err)
	}
	if w := Where("postgres://sb:hunter2@db.example:5433/routing?sslmode=require"); strings.Contains(w, "hunter2") || w != "postgres://db.example:5433/routing" {
		t.Fatalf("Where: %s", w)
	}
}

// TestPostgresPermanent: what trying again will not fix is told from a
// database that is not up yet.
func TestPostgresPermanent(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	missing := strings.Replace(u, "/sbtest_", "/sbmissing_", 1)
	_, err := OpenPostgres(ctx, missing)
	if err == nil || !Permanent(err) {
		t.Fatalf("a database that does not exist: %v (permanent: %v)", err, Permanent(err))
	}
	if _, err := OpenPostgres(ctx, u+"&sslmode=bogus"); err == nil || !Permanent(err) {
		t.Fatalf("a URL that does not parse: %v", err)
	}
	down := "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1"
	if _, err := OpenPostgres(ctx, down); err == nil || Permanent(err) {
		t.Fatalf("a server not up: %v (permanent: %v)", err, Permanent(err))
	}
}

// TestPostgresSnapshotRace: two processes saving the snapshot at one seq
// at once leave one snapshot and no stray chunks.
func TestPostgresSnapshotRace(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	a, b := openPG(t, u), openPG(t, u)
	for seq := int64(1); seq <= 20; seq++ {
		var wg sync.WaitGroup
		for _, s := range []*Postgres{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.SaveSnapshot(ctx, SnapshotInfo{Seq: seq, RuleSet: "v1", Format: 1}, []byte("state")); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	var snaps, blobs int
	a.pool.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM snapshots), (SELECT COUNT(DISTINCT blob) FROM snapshot_chunks)`).Scan(&snaps, &blobs)
	if snaps != 20 || blobs != 20 {
		t.Fatalf("%d snapshots, %d blobs of chunks", snaps, blobs)
	}
}

// TestPostgresLookupPlan: looking ids up reads the id index however the
// log has grown since the first lookups (a plan cached while the log was
// small would scan the whole table on every lookup ever after).
func TestPostgresLookupPlan(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	s := openPG(t, u)
	seq := int64(0)
	appendN := func(n int) {
		t.Helper()
		var recs []Record
		for range n {
			seq++
			recs = append(recs, rec(seq, fmt.Sprint("e", seq), "k"))
		}
		if err := s.Append(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	ids := func() []string {
		var out []string
		for i := range 20 {
			out = append(out, fmt.Sprint("e", seq-int64(i)*7), fmt.Sprint("x", i))
		}
		return out
	}
	// A small log, looked up often enough for a prepared statement to
	// settle on a plan for it.
	appendN(10)
	for range 12 {
		if _, err := s.Lookup(ctx, ids()); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		appendN(1000)
	}
	scans := func() (seqScans, idxScans int64) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'events'`).Scan(&seqScans, &idxScans); err != nil {
			t.Fatal(err)
		}
		return seqScans, idxScans
	}
	// (Statistics reach other sessions within a second or so.)
	time.Sleep(1500 * time.Millisecond)
	seq0, idx0 := scans()
	const lookups = 20
	for range lookups {
		found, err := s.Lookup(ctx, ids())
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 20 {
			t.Fatalf("found %d of the 20 stored ids", len(found))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		seq1, idx1 := scans()
		if seq1 > seq0 {
			t.Fatalf("%d lookups on a log of %d records scanned the whole table %d times", lookups, seq, seq1-seq0)
		}
		if idx1-idx0 >= lookups {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the statistics show %d index scans for %d lookups", idx1-idx0, lookups)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPostgresAlone: of processes running a job of one name, one runs it
// and the others are told so; names do not hold each other up; a holder
// whose session ends lets the name go.
func TestPostgresAlone(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, u), openPG(t, u)
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		ran, err := a.Alone(ctx, "snapshots", func() error {
			close(holding)
			<-release
			return nil
		})
		if err == nil && !ran {
			err = errors.New("the first did not run")
		}
		done <- err
	}()
	<-holding
	ran, err := b.Alone(ctx, "snapshots", func() error { return nil })
	if err != nil || ran {
		t.Fatalf("a second process ran the job while the first did: %v %v", ran, err)
	}
	ran, err = b.Alone(ctx, "other", func() error { return errors.New("ran") })
	if !ran || err == nil || err.Error() != "ran" {
		t.Fatalf("another name was held up: %v %v", ran, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ran, err := b.Alone(ctx, "snapshots", func() error { return nil }); !ran || err != nil {
		t.Fatalf("the name was not let go: %v %v", ran, err)
	}

	// A holder whose session is ended from outside (a process that died)
	// lets the name go.
	holding, release = make(chan struct{}), make(chan struct{})
	go func() {
		a.Alone(ctx, "snapshots", func() error {
			close(holding)
			<-release
			return nil
		})
		close(done)
	}()
	defer func() { close(release); <-done }()
	<-holding
	endHolder(t, bystander(t, u), namedLockKey(lockAlone, "snapshots"))
	// (The session ends when its backend exits, a moment later.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ran, err := b.Alone(ctx, "snapshots", func() error { return nil })
		if ran && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the name of a holder whose session ended was not let go: %v %v", ran, err)
		}
	}
}

// TestPostgresFeedHeldBeforeSending: a holder that said it holds the feed
// longer ago than feedFresh (frozen meanwhile) asks the database before
// sending; when its session was ended by a taker, it learns it lost the
// feed there, not after sending.
func TestPostgresFeedHeldBeforeSending(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	a := openPG(t, u)
	f, err := a.OpenFeed(ctx, "platform", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Held(ctx); err != nil {
		t.Fatalf("a fresh holder: %v", err)
	}
	h := a.feeds["platform"]
	age := func(d time.Duration) {
		h.mu.Lock()
		h.confirmed = time.Now().Add(-d)
		h.mu.Unlock()
	}
	// Silent for a while, still holding: it says so again.
	age(feedStale)
	if err := f.Held(ctx); err != nil {
		t.Fatalf("a holder that still holds: %v", err)
	}
	h.mu.Lock()
	again := time.Since(h.confirmed) < feedFresh
	h.mu.Unlock()
	if !again {
		t.Fatal("the holder did not say again that it holds the feed")
	}
	// Frozen past feedStale, its session ended by the process that took
	// the feed over.
	age(2 * feedStale)
	c := bystander(t, u)
	endHolder(t, c, feedLockKey("platform"))
	if err := f.Held(ctx); err == nil {
		t.Fatal("a holder whose session ended would send")
	}
	select {
	case <-f.Lost:
	default:
		t.Fatal("the feed is not lost")
	}
}

// bystander connects to the database at u as another client would.
func bystander(t *testing.T, u string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// endHolder ends, from c, the session that holds the advisory lock key,
// as a server restart, a cut connection or a taker would.
func endHolder(t *testing.T, c *pgx.Conn, key int64) {
	t.Helper()
	if _, err := c.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::bit(32)::int`, key&0xffffffff); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresAloneFrozen: a holder that stops saying it is at its job
// (frozen) past aloneStale has its session ended by the next process that
// asks, which takes the name at its next try; one that keeps saying so is
// left alone, however long its job.
func TestPostgresAloneFrozen(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, u), openPG(t, u)
	key := namedLockKey(lockAlone, "snapshots")
	// A live holder, its last word made old: it says it again within a
	// second, and keeps the name.
	holding, release, done := make(chan struct{}), make(chan struct{}), make(chan bool, 1)
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	defer let() // (a failure must not leave the holder, and the store's close, waiting)
	go func() {
		ran, _ := a.Alone(ctx, "snapshots", func() error { close(holding); <-release; return nil })
		done <- ran
	}()
	<-holding
	c := bystander(t, u)
	if _, err := c.Exec(ctx, `UPDATE meta SET value = '0' WHERE key = 'alone:snapshots:at'`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(aloneBeat + 500*time.Millisecond)
	if ran, err := b.Alone(ctx, "snapshots", func() error { return nil }); ran || err != nil {
		t.Fatalf("took the name from a live holder: %v %v", ran, err)
	}
	time.Sleep(200 * time.Millisecond) // (an ended session goes a moment later)
	var held int
	c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::bit(32)::int`, key&0xffffffff).Scan(&held)
	if held != 1 {
		t.Fatal("the live holder's session was ended")
	}
	let()
	if !<-done {
		t.Fatal("the live holder did not run")
	}
	c.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1::bigint::bit(32)::int`, key&0xffffffff).Scan(&held)
	if held != 0 {
		t.Fatal("the live holder's lock was not let go")
	}

	// A frozen holder: the lock held by a session that says nothing.
	frozen := bystander(t, u)
	if _, err := frozen.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `UPDATE meta SET value = ((extract(epoch from clock_timestamp()) * 1000)::bigint - 60000)::text WHERE key = 'alone:snapshots:at'`); err != nil {
		t.Fatal(err)
	}
	if ran, err := b.Alone(ctx, "snapshots", func() error { return nil }); ran || err != nil {
		t.Fatalf("ran while the frozen holder held the name: %v %v", ran, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ran, err := b.Alone(ctx, "snapshots", func() error { return nil }); ran && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the name was not taken from a frozen holder")
		}
	}
}

// TestPostgresAnnounced: another process hears of appends (Appended), and
// a run of appends is announced coalesced, at most once per announceEvery
// and always up to the last, not once per commit.
func TestPostgresAnnounced(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	a, b := openPG(t, u), openPG(t, u)
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `LISTEN `+notifyChannel); err != nil {
		t.Fatal(err)
	}
	select { // b says so when its listener starts
	case <-b.Appended():
	case <-time.After(5 * time.Second):
	}
	if err := a.Append(ctx, []Record{rec(1, "e1", "k")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Appended():
	case <-time.After(5 * time.Second):
		t.Fatal("an append was not heard by the other process within 5 s")
	}
	const appends = 200
	start := time.Now()
	for i := 2; i <= appends; i++ {
		if err := a.Append(ctx, []Record{rec(int64(i), fmt.Sprint("e", i), "k")}); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	var heard []string
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break // a second without: the run was said
		}
		heard = append(heard, n.Payload)
	}
	if len(heard) == 0 || heard[len(heard)-1] != fmt.Sprint(appends) {
		t.Fatalf("announced %v: the last append (%d) was not", heard, appends)
	}
	if most := int(took/announceEvery) + 3; len(heard) > most {
		t.Fatalf("%d appends in %v announced %d times, more than once per %v (%d)", appends, took, len(heard), announceEvery, most)
	}
}

// slowEraser rewrites snapshots slowly, so that two erasures at once
// overlap there unless they take turns.
type slowEraser struct{ testEraser }

func (e *slowEraser) Rewrite(in SnapshotInfo, state []byte) ([]byte, error) {
	time.Sleep(100 * time.Millisecond)
	return e.testEraser.Rewrite(in, state)
}

// TestPostgresEraseTogether: two processes erasing two contacts at once
// both have their data gone from every snapshot: one rewriting a
// snapshot does not save over the other's redaction.
func TestPostgresEraseTogether(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	one, two := openPG(t, u), openPG(t, u)
	secrets := map[string]string{"k1": "Zebulon-Quartermaine", "k2": "Ottoline-Fairweather"}
	var recs []Record
	for i := int64(1); i <= 20; i++ {
		k := fmt.Sprint("k", 1+i%2)
		r := rec(i, fmt.Sprint("e", i), k)
		r.Event = []byte(fmt.Sprintf(`{"id":"e%d","contact":{"id":%q,"name":%q}}`, i, k, secrets[k]))
		recs = append(recs, r)
	}
	if err := one.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int64{5, 10, 15} {
		if err := one.SaveSnapshot(ctx, SnapshotInfo{Seq: seq, RuleSet: "v1", Format: 1}, []byte("state with "+secrets["k1"]+" and "+secrets["k2"])); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for s, k := range map[*Postgres]string{one: "k1", two: "k2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Erase(ctx, k, 20, &slowEraser{testEraser{secret: []byte(secrets[k])}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	snaps, err := one.Snapshots(ctx)
	if err != nil || len(snaps) != 3 {
		t.Fatalf("snapshots %v, %v", snaps, err)
	}
	for _, in := range snaps {
		state, err := one.LoadSnapshot(ctx, in.Seq)
		if err != nil {
			t.Fatal(err)
		}
		for k, name := range secrets {
			if bytes.Contains(state, []byte(name)) {
				t.Errorf("the snapshot at %d still holds %s's name: %q", in.Seq, k, state)
			}
		}
	}
}

// TestPostgresFeedLostRace: a holder whose session was ended (its process
// woke from a pause to find another took the feed over) is asked at once,
// from many goroutines, whether it holds the feed, while its own watch
// ticks and the store closes: each learns the feed is lost, and nothing
// uses the session once it is given back (a process crashed there).
func TestPostgresFeedLostRace(t *testing.T) {
	u := pgtest.URL(t)
	ctx := context.Background()
	for round := range 5 {
		a := openPG(t, u)
		f, err := a.OpenFeed(ctx, "platform", 0)
		if err != nil {
			t.Fatal(err)
		}
		h := a.feeds["platform"]
		h.mu.Lock()
		h.confirmed = time.Now().Add(-2 * feedStale)
		h.mu.Unlock()
		c := bystander(t, u)
		endHolder(t, c, feedLockKey("platform"))
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					f.Held(ctx)
					a.confirmFeed(ctx, "platform", h)
					a.AdvanceFeed(ctx, "platform", 0, nil, nil)
				}
			}()
		}
		wg.Wait()
		select {
		case <-f.Lost:
		default:
			t.Fatalf("round %d: the feed is not lost", round)
		}
		a.Close()
	}
}
