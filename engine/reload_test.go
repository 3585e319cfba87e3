package engine_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/engine"
	"github.com/switchboard-dev/switchboard/triggers"
)

// TestReloadKeepsState: reloading the same rules after every event changes
// no decision, in every scenario.
func TestReloadKeepsState(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(scenarios, "*.txtar"))
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			sc := loadScenario(t, path)
			var want, got bytes.Buffer
			plain := engine.New(sc.rs, engine.Options{Seed: sc.seed})
			plain.Replay(bytes.NewReader(sc.events), "events", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
				want.Write(d.AppendJSON(nil))
				want.WriteByte('\n')
				return true
			})
			eng := engine.New(sc.rs, engine.Options{Seed: sc.seed})
			eng2 := eng
			// Replay event by event through whichever engine is current,
			// skipping repeated ids as one replay would.
			seen := map[string]bool{}
			for _, line := range bytes.Split(sc.events, []byte("\n")) {
				if len(bytes.TrimSpace(line)) == 0 {
					continue
				}
				if ev, err := triggers.DecodeEvent(line, true); err == nil {
					if seen[ev.ID] {
						continue
					}
					seen[ev.ID] = true
				}
				eng2.Replay(bytes.NewReader(line), "events", func(_ int, _ *triggers.Event, d *engine.Decision) bool {
					got.Write(d.AppendJSON(nil))
					got.WriteByte('\n')
					return true
				})
				eng2 = eng2.Reload(sc.rs)
			}
			if want.String() != got.String() {
				t.Errorf("decisions differ after reloads:\nwant:\n%s\ngot:\n%s", want.String(), got.String())
			}
		})
	}
}
