package engine_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// FuzzReplay feeds arbitrary event streams to every scenario's rules: each
// line is decided or rejected with an error, nothing panics, and two runs
// give the same bytes.
func FuzzReplay(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	var all []scenario
	for _, p := range paths {
		sc := loadScenario(f, p)
		all = append(all, sc)
		f.Add(uint8(len(all)-1), sc.events)
	}
	f.Fuzz(func(t *testing.T, which uint8, events []byte) {
		sc := all[int(which)%len(all)]
		run := func() []byte {
			var out bytes.Buffer
			eng := engine.New(sc.rs, engine.Options{Seed: 3})
			errs := eng.Replay(bytes.NewReader(events), "fuzz", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
				out.Write(d.AppendJSON(nil))
				return true
			})
			for _, err := range errs {
				out.WriteString(err.Error())
			}
			return out.Bytes()
		}
		if a, b := run(), run(); !bytes.Equal(a, b) {
			t.Fatalf("two runs differ")
		}
	})
}
