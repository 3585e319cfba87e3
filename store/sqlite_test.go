package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, path string) *SQLite {
	t.Helper()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rec(seq int64, id string, contacts ...string) Record {
	at := time.Date(2026, 1, 5, 9, 0, int(seq), 0, time.UTC)
	return Record{Seq: seq, ID: id, Type: "message.received", At: at, Clock: at.Add(time.Millisecond),
		Event: []byte(fmt.Sprintf(`{"id":%q}`, id)), Hash: []byte{byte(seq)}, Decision: []byte(fmt.Sprintf(`{"event":%q}`, id)),
		RuleSet: "v1", Contacts: contacts}
}

func TestLog(t *testing.T) { eachBackend(t, testLog) }

func testLog(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	if sq, ok := s.(*SQLite); ok && !sq.Created() {
		t.Fatal("a new file is created, and says so")
	}
	recs := []Record{rec(1, "e1", "k1"), rec(2, "e2", "k2", "k1")}
	recs[1].At = time.Time{} // the client gave no time
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A batch with a stored id is refused whole.
	err := s.Append(ctx, []Record{rec(3, "e3"), rec(4, "e1")})
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("want ErrDuplicate, got %v", err)
	}
	if _, ok, _ := s.Get(ctx, "e3"); ok {
		t.Fatal("half a batch was stored")
	}
	if err := s.SaveRuleSet(ctx, "v1", []RuleSetFile{{Name: "a.rules", Text: "on tick -> stop"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveRuleSet(ctx, "v1", nil); err != nil {
		t.Fatal("saving a version twice must be a no-op:", err)
	}
	s.Close()

	// Reopening migrates nothing and keeps everything; every time reads back.
	s = b.open()
	defer s.Close()
	if sq, ok := s.(*SQLite); ok && sq.Created() {
		t.Fatal("an existing file is not created")
	}
	var got []Record
	if err := s.Replay(ctx, 0, 0, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "e1" || got[1].ID != "e2" {
		t.Fatalf("replay: %v", got)
	}
	if !got[0].At.Equal(recs[0].At) || !got[0].Clock.Equal(recs[0].Clock) || !got[1].At.IsZero() || string(got[1].Hash) != "\x02" {
		t.Fatalf("times and hash do not read back: %+v", got)
	}
	got = nil
	s.Replay(ctx, 1, 0, func(r Record) error { got = append(got, r); return nil })
	if len(got) != 1 || got[0].ID != "e2" {
		t.Fatalf("replay after 1: %v", got)
	}
	r, ok, err := s.Get(ctx, "e2")
	if err != nil || !ok || string(r.Decision) != `{"event":"e2"}` {
		t.Fatalf("get: %+v %v %v", r, ok, err)
	}
	known, err := s.Lookup(ctx, []string{"e1", "nope", "e2"})
	if err != nil || len(known) != 2 || known["e2"].Seq != 2 || known["e1"].RuleSet != "v1" {
		t.Fatalf("lookup: %v %v", known, err)
	}
	if seq, _ := s.LastSeq(ctx); seq != 2 {
		t.Fatalf("last seq %d", seq)
	}
	files, err := s.RuleSet(ctx, "v1")
	if err != nil || len(files) != 1 || files[0].Name != "a.rules" {
		t.Fatalf("rule set: %v %v", files, err)
	}
}

func TestSnapshots(t *testing.T) { eachBackend(t, testSnapshots) }

func testSnapshots(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*snapshotChunk/16+7) // several chunks
	for _, seq := range []int64{10, 20} {
		if err := s.SaveSnapshot(ctx, SnapshotInfo{Seq: seq, RuleSet: "v1", Format: 1, Taken: time.Now()}, big[:len(big)-int(seq)]); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Snapshots(ctx)
	if err != nil || len(list) != 2 || list[0].Seq != 20 || list[1].Size != int64(len(big)-10) {
		t.Fatalf("snapshots: %+v %v", list, err)
	}
	state, err := s.LoadSnapshot(ctx, 20)
	if err != nil || !bytes.Equal(state, big[:len(big)-20]) {
		t.Fatalf("load: %d bytes, %v", len(state), err)
	}
	if err := s.DeleteSnapshot(ctx, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadSnapshot(ctx, 20); err == nil {
		t.Fatal("a deleted snapshot loads")
	}
}

func TestPrune(t *testing.T) { eachBackend(t, testPrune) }

func testPrune(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	var recs []Record
	for i := int64(1); i <= 12000; i++ {
		recs = append(recs, rec(i, fmt.Sprint("e", i), "k", "x"))
	}
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := s.Prune(ctx, 11000); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Pruned(ctx)
	if p.Through != 11000 || !p.Before.Equal(recs[10999].Clock) {
		t.Fatalf("pruned: %+v", p)
	}
	n := 0
	s.Replay(ctx, 0, 0, func(r Record) error { n++; return nil })
	if n != 1000 {
		t.Fatalf("%d records left, want 1000", n)
	}
	if extra := b.count(`SELECT count(*) FROM event_contacts`); extra != 2000 {
		t.Fatalf("%d contacts of records left, want 2000", extra)
	}
	// Numbering goes on after a prune of everything.
	s.Prune(ctx, 12000)
	if seq, _ := s.LastSeq(ctx); seq != 12000 {
		t.Fatalf("last seq after pruning all: %d", seq)
	}
}

// TestErase: the erased bytes are gone from the database's files.
func TestErase(t *testing.T) { eachBackend(t, testErase) }

func testErase(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	const secret = "Zebulon-Quartermaine"
	var recs []Record
	for i := int64(1); i <= 50; i++ {
		r := rec(i, fmt.Sprint("e", i), fmt.Sprint("k", i%5))
		if i%5 == 3 {
			r.Event = []byte(fmt.Sprintf(`{"id":"e%d","contact":{"id":"k3","name":%q}}`, i, secret))
		}
		recs = append(recs, r)
	}
	recs[9].Contacts = []string{"k0", "k3"} // a decision that touched k3's conversation
	recs[9].Decision = []byte(`{"text":"Hello ` + secret + `"}`)
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	s.SaveSnapshot(ctx, SnapshotInfo{Seq: 40, RuleSet: "v1", Format: 1}, []byte("state with "+secret))
	// Records after the erasure (48 and on) are the contact's new data:
	// left alone.
	e := &testEraser{secret: []byte(secret)}
	if err := s.Erase(ctx, "k3", 47, e); err != nil {
		t.Fatal(err)
	}
	if len(e.redacted) != 10 || e.redacted[0] != 3 || e.redacted[1] != 8 || e.redacted[2] != 10 || len(e.learned) != 10 {
		t.Fatalf("redacted %v, learned %v", e.redacted, e.learned)
	}
	if r, _, _ := s.Get(ctx, "e48"); !bytes.Contains(r.Event, []byte(secret)) {
		t.Fatal("a record after the erasure was redacted")
	}
	if r, _, _ := s.Get(ctx, "e43"); r.Hash == nil {
		t.Fatal("the hash of a redacted event is gone: a retry could not be told from another event")
	}
	s.Erase(ctx, "k3", 50, e)
	sq, ok := s.(*SQLite)
	if !ok {
		for _, id := range []string{"e3", "e10", "e43"} {
			if r, _, _ := s.Get(ctx, id); bytes.Contains(r.Event, []byte(secret)) || bytes.Contains(r.Decision, []byte(secret)) {
				t.Fatalf("%s still holds the erased name", id)
			}
		}
		return
	}
	for _, name := range []string{sq.path, sq.path + "-wal"} {
		data, _ := os.ReadFile(name)
		if bytes.Contains(data, []byte(secret)) {
			t.Fatalf("%s still holds the erased name", name)
		}
	}
}

type testEraser struct {
	secret            []byte
	learned, redacted []int64
}

func (e *testEraser) Learn(r Record) error { e.learned = append(e.learned, r.Seq); return nil }
func (e *testEraser) Redact(r Record) ([]byte, []byte, error) {
	e.redacted = append(e.redacted, r.Seq)
	return bytes.ReplaceAll(r.Event, e.secret, nil), bytes.ReplaceAll(r.Decision, e.secret, nil), nil
}
func (e *testEraser) RedactDelivery(d Delivery) ([]byte, error) {
	return []byte(`{"erased":true}`), nil
}

func (e *testEraser) Rewrite(_ SnapshotInfo, state []byte) ([]byte, error) {
	return bytes.ReplaceAll(state, e.secret, nil), nil
}

// TestOwnership: one process per file, and never a silent start on nothing.
func TestOwnership(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "sb.db")
	s := open(t, path)
	if _, err := OpenSQLite(ctx, path); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second open: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	s.Close()

	for _, tc := range []struct {
		name, want string
		setup      func(path string)
	}{
		{"empty", "is empty (0 bytes)", func(p string) { os.WriteFile(p, nil, 0o644) }},
		{"text", "is not a SQLite database", func(p string) { os.WriteFile(p, []byte("hello, this is not a database at all"), 0o644) }},
		{"other", "a SQLite database but not a Switchboard one (it has the tables notes)", func(p string) {
			db, _ := sql.Open("sqlite", p)
			db.Exec(`CREATE TABLE notes (x)`)
			db.Close()
		}},
		{"wal", "exists without", func(p string) { os.WriteFile(p+"-wal", []byte("frames"), 0o644) }},
	} {
		p := filepath.Join(dir, tc.name+".db")
		tc.setup(p)
		_, err := OpenSQLite(ctx, p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	// Deleted or replaced while open: noticed, and nothing is acknowledged.
	s = open(t, path)
	os.Remove(path)
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("deleted: %v", err)
	}
	if err := s.Append(ctx, []Record{rec(1, "e1")}); err == nil {
		t.Fatal("an append into a deleted file succeeded")
	}
	s.Close()
	// The log of the deleted file is left behind: a new start refuses to
	// begin an empty database beside it.
	if _, err := OpenSQLite(ctx, path); err == nil || !strings.Contains(err.Error(), "exists without") {
		t.Fatalf("start after a deletion: %v", err)
	}
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
	// The write-ahead log deleted, or the file truncated in place.
	s = open(t, path)
	s.Append(ctx, []Record{rec(1, "w1")})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	os.Remove(path + "-wal")
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "write-ahead log was deleted") {
		t.Fatalf("wal deleted: %v", err)
	}
	s.Close()
	os.Remove(path + "-shm")
	os.Remove(path)
	s = open(t, path)
	os.Truncate(path, 0)
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated: %v", err)
	}
	s.Close()
	for _, side := range []string{"", "-wal", "-shm"} {
		os.Remove(path + side)
	}
	s = open(t, path)
	os.Rename(path, path+".old")
	os.WriteFile(path, []byte("x"), 0o644)
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("replaced: %v", err)
	}
	s.Close()
}

// TestMigrateV1: a database written by the first schema opens, keeps its
// records, and reads them back as decided on their own times.
func TestMigrateV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sb.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`)
	db.Exec(migrations[0])
	db.Exec(`INSERT INTO schema_migrations VALUES (1, 'x')`)
	db.Exec(`INSERT INTO events VALUES (1, 'e1', 'tick', '2026-01-05T09:00:00Z', '{"id":"e1"}', '{}', 'v1', '2026-01-05T09:00:01Z')`)
	db.Close()
	s := open(t, path)
	defer s.Close()
	r, ok, err := s.Get(context.Background(), "e1")
	if err != nil || !ok || !r.Clock.IsZero() || r.At.Hour() != 9 || r.Hash != nil {
		t.Fatalf("v1 record: %+v %v %v", r, ok, err)
	}
}
