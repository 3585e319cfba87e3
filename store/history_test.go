package store

import (
	"context"
	"slices"
	"testing"
)

func TestReloadsAndConcerning(t *testing.T) { eachBackend(t, testReloadsAndConcerning) }

func testReloadsAndConcerning(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open()
	defer s.Close()
	var recs []Record
	for seq := int64(1); seq <= 12; seq++ {
		r := rec(seq, "e"+string(rune('a'+seq)), "k1")
		if seq%2 == 0 {
			r.Contacts = []string{"k2"}
		}
		if seq%4 == 0 {
			r.Type, r.ID, r.Contacts = TypeReload, IDPrefix+"reload-"+string(rune('a'+seq)), nil
		}
		recs = append(recs, r)
	}
	recs[5].Contacts = []string{"k1", "k2"} // seq 6: a decision that touched both
	if err := s.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	seqs := func(rs []Record, err error) []int64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, r := range rs {
			out = append(out, r.Seq)
		}
		return out
	}
	if got := seqs(s.Reloads(ctx, 0, 10)); !slices.Equal(got, []int64{12, 8, 4}) {
		t.Fatalf("reloads, newest first: %v", got)
	}
	if got := seqs(s.Reloads(ctx, 12, 1)); !slices.Equal(got, []int64{8}) {
		t.Fatalf("the page before 12: %v", got)
	}
	if got := seqs(s.Concerning(ctx, "k1", 0, 100)); !slices.Equal(got, []int64{1, 3, 5, 6, 7, 9, 11}) {
		t.Fatalf("k1's records: %v", got)
	}
	if got := seqs(s.Concerning(ctx, "k2", 2, 3)); !slices.Equal(got, []int64{6, 10}) {
		t.Fatalf("k2's after 2: %v", got)
	}
	r, err := s.Concerning(ctx, "k1", 5, 1)
	if err != nil || len(r) != 1 || r[0].ID != recs[5].ID || string(r[0].Decision) != string(recs[5].Decision) {
		t.Fatalf("a record comes whole: %+v %v", r, err)
	}
	if got := seqs(s.Concerning(ctx, "nobody", 0, 10)); len(got) != 0 {
		t.Fatalf("an unknown contact: %v", got)
	}
}
