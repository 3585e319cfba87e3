package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// snapshotOf runs a scenario's events and snapshots the engine.
func snapshotOf(t testing.TB, name string) (scenario, []byte) {
	t.Helper()
	sc := loadScenario(t, filepath.Join(scenarios, name+".txtar"))
	eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
	eng.Replay(bytes.NewReader(sc.events), "events.jsonl", func(int, *triggers.Event, *engine.Decision) bool { return true })
	data, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return sc, data
}

// The snapshot header: magic, format version, checksum of the body.
const header = 16

// reseal puts the checksum of data's body in its header.
func reseal(data []byte) {
	if len(data) >= header {
		binary.LittleEndian.PutUint32(data[header-4:], crc32.Checksum(data[header:], crc32.MakeTable(crc32.Castagnoli)))
	}
}

func TestSnapshotCorrupt(t *testing.T) {
	sc, data := snapshotOf(t, "table")
	if _, err := engine.Restore(sc.rs, data); err != nil {
		t.Fatal(err)
	}
	for i := header - 4; i < len(data); i++ {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		_, err := engine.Restore(sc.rs, bad)
		if !errors.Is(err, engine.ErrSnapshotCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Fatalf("byte %d flipped: %v; want a checksum mismatch", i, err)
		}
	}
}

func TestSnapshotTruncated(t *testing.T) {
	sc, data := snapshotOf(t, "capacity_queue")
	for n := range len(data) {
		_, err := engine.Restore(sc.rs, data[:n])
		want := engine.ErrSnapshotCorrupt
		if n < 8 {
			want = engine.ErrSnapshotFormat // not even the magic
		}
		if !errors.Is(err, want) {
			t.Fatalf("%d of %d bytes: %v; want %v", n, len(data), err, want)
		}
		// Truncated, then sealed again: the body itself is cut short.
		cut := bytes.Clone(data[:n])
		reseal(cut)
		if _, err := engine.Restore(sc.rs, cut); !errors.Is(err, want) {
			t.Fatalf("%d of %d bytes, sealed: %v; want %v", n, len(data), err, want)
		}
	}
	if _, err := engine.Restore(sc.rs, append(bytes.Clone(data), 0)); !errors.Is(err, engine.ErrSnapshotCorrupt) {
		t.Fatalf("a byte more: %v", err)
	}
}

func TestSnapshotFormat(t *testing.T) {
	sc, data := snapshotOf(t, "lifecycle")
	for _, tc := range []struct {
		name string
		edit func([]byte)
		want string
	}{
		{"older version", func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 0) }, fmt.Sprintf("format version 0; this build reads versions 1 to %d", engine.SnapshotFormat)},
		{"newer version", func(b []byte) { binary.LittleEndian.PutUint32(b[8:], engine.SnapshotFormat+1) }, fmt.Sprintf("format version %d", engine.SnapshotFormat+1)},
		{"not a snapshot", func(b []byte) { copy(b, "SQLite f") }, "no snapshot header"},
	} {
		bad := bytes.Clone(data)
		tc.edit(bad)
		_, err := engine.Restore(sc.rs, bad)
		if !errors.Is(err, engine.ErrSnapshotFormat) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrSnapshotFormat, %q", tc.name, err, tc.want)
		}
	}
}

// Snapshots of formats 1 to 3, written by earlier builds, still restore
// (lifecycle-v2.snap: the lifecycle scenario's end, by the build before
// format 3; format 1 differs from 2 only in its version number when no
// reply is held; lifecycle-v3.snap, by the build before format 4). What
// format 3 added (each agent's turns) starts afresh from 1 and 2; the rest
// is the state the scenario ends in.
func TestSnapshotOlderFormats(t *testing.T) {
	sc, data := snapshotOf(t, "lifecycle")
	v2, err := os.ReadFile(filepath.Join("..", "testdata", "engine", "snapshots", "lifecycle-v2.snap"))
	if err != nil {
		t.Fatal(err)
	}
	v1 := bytes.Clone(v2)
	binary.LittleEndian.PutUint32(v1[8:], 1)
	reseal(v1)
	now, err := engine.Restore(sc.rs, data)
	if err != nil {
		t.Fatal(err)
	}
	v3, err := os.ReadFile(filepath.Join("..", "testdata", "engine", "snapshots", "lifecycle-v3.snap"))
	if err != nil {
		t.Fatal(err)
	}
	for name, old := range map[string][]byte{"format 1": v1, "format 2": v2, "format 3": v3} {
		e, err := engine.Restore(sc.rs, old)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, a := range []string{"a", "b"} {
			got, _ := e.Agent(a)
			want, _ := now.Agent(a)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: agent %s is %+v, want %+v", name, a, got, want)
			}
		}
		again, err := e.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := engine.Restore(sc.rs, again); err != nil {
			t.Errorf("%s, written again as format %d: %v", name, engine.SnapshotFormat, err)
		}
	}
}

// TestSnapshotEarlierFormats: snapshots the builds before formats 7 and 8
// wrote restore to the state their scenario is in then, and the engine
// goes on to decide as the plain run does. held_reply-2-v6.snap: work
// waiting with a reply held for it, after held_reply's second event;
// unanswered-4-v7.snap: unanswered timers due, after unanswered's fourth.
func TestSnapshotEarlierFormats(t *testing.T) {
	for _, tc := range []struct {
		file, scenario string
		after          int
		format         uint32
	}{
		{"held_reply-2-v6.snap", "held_reply", 2, 6},
		{"unanswered-4-v7.snap", "unanswered", 4, 7},
	} {
		t.Run(tc.file, func(t *testing.T) {
			sc := loadScenario(t, filepath.Join(scenarios, tc.scenario+".txtar"))
			old, err := os.ReadFile(filepath.Join("..", "testdata", "engine", "snapshots", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if v := binary.LittleEndian.Uint32(old[8:]); v != tc.format {
				t.Fatalf("the file is format %d", v)
			}
			restored, err := engine.Restore(sc.rs, old)
			if err != nil {
				t.Fatal(err)
			}
			plain := engine.New(sc.rs, engine.Options{Seed: sc.seed})
			var rest []string
			i := 0
			plain.Replay(bytes.NewReader(sc.events), "events.jsonl", func(_ int, ev *triggers.Event, d *engine.Decision) bool {
				if i++; i == tc.after {
					if got, want := views(restored), views(plain); got != want {
						t.Fatalf("the format %d snapshot shows\n%s\nwant\n%s", tc.format, got, want)
					}
				}
				if i > tc.after {
					rest = append(rest, string(d.AppendJSON(nil)))
					got, err := restored.Decide(ev)
					if err != nil {
						t.Fatal(err)
					}
					if string(got.AppendJSON(nil)) != rest[len(rest)-1] {
						t.Errorf("after the format %d snapshot, %s decides\n%s\nwant\n%s", tc.format, ev.ID, got.AppendJSON(nil), rest[len(rest)-1])
					}
				}
				return true
			})
			if len(rest) == 0 {
				t.Fatal("nothing decided after the snapshot")
			}
		})
	}
}

func TestSnapshotWrongRules(t *testing.T) {
	sc, data := snapshotOf(t, "lifecycle")
	other := loadScenario(t, filepath.Join(scenarios, "table.txtar"))
	_, err := engine.Restore(other.rs, data)
	if err == nil || errors.Is(err, engine.ErrSnapshotFormat) || errors.Is(err, engine.ErrSnapshotCorrupt) {
		t.Fatalf("restored on other rules: %v", err)
	}
	want := `the snapshot was taken on rule set version "` + sc.rs.Version + `", not "` + other.rs.Version + `"`
	if err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestSnapshotUnsupportedAttr: an attribute of a type no snapshot holds is
// an error naming the contact and the attribute, and the engine goes on.
func TestSnapshotUnsupportedAttr(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: a, status: online}\n")},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte("on incoming message where text == 'range' -> set contact.attrs.r = 1..3\n")}},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	eng := engine.New(rs, engine.Options{})
	decide := func(id, contact, text string) {
		t.Helper()
		ev, err := triggers.DecodeEvent([]byte(`{"id":"`+id+`","type":"message.received","at":"2026-01-05T09:00:00Z","channel":"sms","to":"x","contact":{"id":"`+contact+`","attrs":{"plan":"pro"}},"message":{"text":"`+text+`"}}`), true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.Decide(ev); err != nil {
			t.Fatal(err)
		}
	}
	decide("e1", "k1", "hello")
	decide("e2", "k2", "range")
	_, err := eng.Snapshot()
	want := "contact k2: attribute r: a value of type []int, which a snapshot cannot hold"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	decide("e3", "k3", "hello")
	if _, err := eng.Snapshot(); err == nil {
		t.Fatal("the attribute is still there; want the error again")
	}
}

// FuzzRestore: no input makes Restore panic; an engine it restores can be
// snapshotted and decide events. Inputs are sealed with their checksum
// when reseal is set, so that the decoder itself is fuzzed.
func FuzzRestore(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	var all []scenario
	for _, p := range paths {
		sc := loadScenario(f, p)
		all = append(all, sc)
		which := uint8(len(all) - 1)
		step(sc.events, engine.New(sc.rs, engine.Options{Seed: sc.seed}), func(line int, eng *engine.Engine) *engine.Engine {
			if data, err := eng.Snapshot(); err == nil && line%2 == 0 {
				f.Add(which, data, true)
			}
			return eng
		})
	}
	f.Add(uint8(0), []byte("SWBSNAP\x00\x01\x00\x00\x00"), false)
	f.Fuzz(func(t *testing.T, which uint8, data []byte, sealed bool) {
		sc := all[int(which)%len(all)]
		if sealed {
			data = bytes.Clone(data)
			reseal(data)
		}
		eng, err := engine.Restore(sc.rs, data)
		if err != nil {
			return
		}
		if _, err := eng.Snapshot(); err != nil {
			t.Fatalf("a restored engine does not snapshot: %v", err)
		}
		eng.Agents()
		eng.Queues(eng.Clock())
		eng.Stats()
		eng.NextDue()
		eng.Replay(bytes.NewReader(sc.events), "events", func(int, *triggers.Event, *engine.Decision) bool { return true })
	})
}

// TestSnapshotManyContacts: an engine that knows many contacts, some of
// them in open conversations, comes back as it was.
func TestSnapshotManyContacts(t *testing.T) {
	eng := contactEngine(t, 20_000, 300)
	back := roundTrip(t, eng.RuleSet(), eng)
	if a, b := views(eng), views(back); a != b {
		t.Fatalf("views differ")
	}
}
