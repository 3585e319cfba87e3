package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/engine"
)

// TestRunTestArchive: an archive checked out with Windows line ends
// passes as it does with Unix ones; one with a section given twice is
// refused rather than half read.
func TestRunTestArchive(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Team:  &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: ana, status: online}\ngroups:\n  Support: [ana]\n")},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte("on new conversation -> assign group Support\n")}},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	const archive = `-- events.jsonl --
{"id": "e1", "type": "message.received", "at": "2026-01-05T09:00:00Z", "channel": "sms", "to": "+1", "contact": {"id": "k1"}}
-- want.jsonl --
{"event":"e1","conversation":"e1","actions":[{"type":"assign","rule":"routing.rules:1","conversation":"e1","agent":"ana","group":"Support","algorithm":"round_robin"}]}
`
	dir := t.TempDir()
	for _, c := range []struct {
		name, text, want string
	}{
		{"unix", archive, ""},
		{"windows", strings.ReplaceAll(archive, "\n", "\r\n"), ""},
		{"twice", archive + "-- events.jsonl --\n{}\n", "the archive has two events.jsonl sections; keep one"},
	} {
		path := filepath.Join(dir, c.name+".txtar")
		os.WriteFile(path, []byte(c.text), 0o644)
		ok, report := engine.RunTestArchive(rs, path, false)
		if ok != (c.want == "") || !strings.Contains(report, c.want) {
			t.Errorf("%s: ok %v, report:\n%s", c.name, ok, report)
		}
	}
}
