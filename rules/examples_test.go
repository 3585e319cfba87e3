package rules

import (
	"path/filepath"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
)

// TestExamples checks every example rule set and runs its tests.
func TestExamples(t *testing.T) {
	dirs, _ := filepath.Glob("examples/*")
	if len(dirs) == 0 {
		t.Fatal("no examples")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			rs, ds := dsl.Load(dir)
			if rs == nil || len(ds) > 0 {
				t.Fatalf("check is not clean:\n%v", ds)
			}
			tests := engine.TestFiles(dir)
			if len(tests) == 0 {
				t.Fatal("no tests: every example pins its behaviour in tests/*.txtar")
			}
			for _, f := range tests {
				if ok, report := engine.RunTestArchive(rs, f, false); !ok {
					t.Errorf("%s:\n%s", f, report)
				}
			}
		})
	}
}
