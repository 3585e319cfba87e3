package console

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/internal/atomicfile"
	"github.com/switchboard-dev/switchboard/service"
)

// A table publish is two steps: the file is replaced, then the reload is
// recorded in the log. A stop between them (a SIGKILL, a power cut) would
// leave the new table on disk with nobody told: the next start would make
// it live as if serve had been started on new files, without the
// publisher's name, note and row changes, though the publisher got no
// answer and believes nothing was published. So a publish leaves a note
// in the rule set's directory while it is under way (publishNote), and
// the next start finishes it (Unfinished): the new table stays if its
// reload is in the log, and is put back as it was otherwise.

// publishNote is the file, in the rule set's directory, that says a
// publish is under way. Hidden, so that the rule loader and the file
// watcher pass it by.
const publishNote = ".switchboard-publishing.json"

// underWay is what the note holds: enough to put the file back.
type underWay struct {
	// File is the file written, links resolved, as an absolute path: the
	// next start may spell the rule set's directory otherwise.
	File string `json:"file"`
	// Existed says whether the file was there before; Old is what it held.
	Existed bool   `json:"existed"`
	Old     []byte `json:"old,omitempty"`
	Mode    uint32 `json:"mode"`
	// New is the hash (hashOf) of the table written.
	New    string    `json:"new"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// markPublish writes the note, synced, before the table is written.
func markPublish(dir string, u underWay) error {
	if abs, err := filepath.Abs(u.File); err == nil {
		u.File = abs
	}
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, publishNote), b, 0o600)
}

// unmarkPublish removes the note once the publish is settled.
func unmarkPublish(dir string) error {
	err := os.Remove(filepath.Join(dir, publishNote))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		if d, derr := os.Open(dir); derr == nil {
			d.Sync()
			d.Close()
		}
	}
	return err
}

// Unfinished returns what serve runs at start, before it compares the
// files with the log's rules (service.Config.Unfinished): it finishes a
// publish of the table in dir that a stop cut short. running is the rule
// set the log runs (nil: the log is empty). When the table on disk is the
// one the publish wrote and the log does not run it, the file is put back
// as it was (service.PutBack; service.NotPutBack when that fails: the
// files on disk are not to be made live at start). In any other case the
// publish was settled (recorded, or put back), and only the note goes.
func Unfinished(dir string, log *slog.Logger) func(running *dsl.RuleSet) service.Settled {
	return func(running *dsl.RuleSet) service.Settled {
		b, err := os.ReadFile(filepath.Join(dir, publishNote))
		if errors.Is(err, fs.ErrNotExist) {
			return service.Untouched
		}
		var u underWay
		if err == nil {
			err = json.Unmarshal(b, &u)
		}
		if err != nil {
			log.Warn("a table publish left a note that cannot be read; it is removed and the files are left as they are", "note", filepath.Join(dir, publishNote), "err", err)
			unmarkPublish(dir)
			return service.Untouched
		}
		if !tablePath(dir, u.File) {
			log.Warn("a table publish left a note about a file that is not this rule set's table; it is removed and the files are left as they are", "note", filepath.Join(dir, publishNote), "file", u.File)
			unmarkPublish(dir)
			return service.Untouched
		}
		cur, err := os.ReadFile(u.File)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Left for the next start: nothing is decided on a file that
			// cannot be read (serve's own load says why).
			log.Error("a table publish was cut short and its file cannot be read", "file", u.File, "err", err)
			return service.Untouched
		}
		live := running != nil && running.Sources.Mappings != nil && hashOf(running.Sources.Mappings.Text) == u.New
		if hashOf(cur) != u.New || live {
			// Recorded in the log, or never written, or put back already.
			if err := unmarkPublish(dir); err != nil {
				log.Error("the note of a settled table publish cannot be removed", "err", err)
			}
			return service.Untouched
		}
		var perr error
		if u.Existed {
			perr = atomicfile.Write(u.File, u.Old, fs.FileMode(u.Mode).Perm())
		} else {
			perr = os.Remove(u.File)
		}
		if perr != nil {
			log.Error("a table publish was cut short before its reload was recorded, and the table cannot be put back as it was; the service runs the rules it last recorded, and putting the table back is tried again at the next start", "file", u.File, "by", u.By, "err", perr)
			return service.NotPutBack
		}
		log.Warn("a table publish was cut short before its reload was recorded (the service stopped): the table is put back as it was, unpublished. Whoever published got no answer; they can publish again",
			"file", u.File, "by", u.By, "reason", u.Reason, "at", u.At.Format(time.RFC3339))
		if err := unmarkPublish(dir); err != nil {
			log.Error("the note of a settled table publish cannot be removed", "err", err)
		}
		return service.PutBack
	}
}

// tablePath says whether path is the rule set's mapping table (either
// name, links resolved, however the directory is spelled).
func tablePath(dir, path string) bool {
	resolve := func(p string) string {
		if target, err := filepath.EvalSymlinks(p); err == nil {
			p = target
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return p
	}
	path = resolve(path)
	for _, name := range []string{dsl.MappingsCSV, dsl.MappingsYAML} {
		if resolve(filepath.Join(dir, name)) == path {
			return true
		}
	}
	return false
}
