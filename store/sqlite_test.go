package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sb.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	recs := []Record{
		{Seq: 1, ID: "e1", Type: "tick", At: at, Event: []byte(`{"id":"e1"}`), Decision: []byte(`{"event":"e1"}`), RuleSet: "v1", Received: at},
		{Seq: 2, ID: "e2", Type: "tick", At: at, Event: []byte(`{"id":"e2"}`), Decision: []byte(`{"event":"e2"}`), RuleSet: "v1", Received: at},
	}
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A batch with a stored id is refused whole.
	err = s.Append(ctx, []Record{{Seq: 3, ID: "e3", At: at, Received: at}, {Seq: 4, ID: "e1", At: at, Received: at}})
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

	// Reopening migrates nothing and keeps everything.
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	if err := s.Replay(ctx, func(r Record) error { ids = append(ids, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != "e1" || ids[1] != "e2" {
		t.Fatalf("replay: %v", ids)
	}
	r, ok, err := s.Get(ctx, "e2")
	if err != nil || !ok || string(r.Decision) != `{"event":"e2"}` || !r.At.Equal(at) {
		t.Fatalf("get: %+v %v %v", r, ok, err)
	}
	files, err := s.RuleSet(ctx, "v1")
	if err != nil || len(files) != 1 || files[0].Name != "a.rules" {
		t.Fatalf("rule set: %v %v", files, err)
	}
}
