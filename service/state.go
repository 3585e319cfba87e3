package service

import (
	"context"
	"time"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/store"
)

// state is the live state rebuilt from the store, with the ids it
// replayed for the recent-ids cache.
type state struct {
	*journal.State
	ids []idKnown
}

type idKnown struct {
	id string
	known
}

// load rebuilds the live state from the store: the newest readable
// snapshot and the log after it.
func (s *Service) load(ctx context.Context) (*state, error) {
	start := time.Now()
	st := &state{}
	js, err := s.j.Load(ctx, journal.Options{
		Each: func(r store.Record, _ []byte) error {
			switch r.Type {
			case store.TypeReload, store.TypePrune, store.TypeErase:
				return nil
			}
			st.ids = append(st.ids, idKnown{r.ID, knownOf(r.Seq, r.Hash, r.RuleSet)})
			return nil
		},
		Skipped: func(in store.SnapshotInfo, err error) {
			s.log.Warn("skipping an unreadable snapshot for an earlier one", "snapshot", in.Seq, "err", err)
		},
	})
	if err != nil {
		return nil, err
	}
	st.State = js
	s.log.Info("state rebuilt from the store", "snapshot", js.FromSnapshot, "replayed", js.Replayed, "records", js.Seq,
		"rules", js.Rules.Version, "took_ms", time.Since(start).Milliseconds())
	if js.Changed > 0 {
		s.log.Warn("replaying the log gave other decisions than were stored", "events", js.Changed)
	}
	return st, nil
}

// knownOf is what the service knows of a stored event, for idempotency.
func knownOf(seq int64, hash []byte, rules string) known {
	k := known{seq: seq, rules: rules}
	copy(k.hash[:], hash)
	if len(hash) != hashSize {
		k.seq = 0 // stored before hashes: any body is the same event
	}
	return k
}
