package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

// TestServePublishCutShort: a console publish stopped between writing the
// table and recording its reload (SIGKILL, power cut) leaves the table it
// wrote and the note that says how to put it back. The next start puts the
// table back and runs the rules last recorded: the publisher got no
// answer, and nothing was published, not even under serve's name. A
// publish whose reload was recorded keeps its table; the note goes either
// way.
func TestServePublishCutShort(t *testing.T) {
	bin := binary(t)
	dir := filepath.Join(t.TempDir(), "rs")
	os.Mkdir(dir, 0o755)
	for _, f := range []string{"routing.rules", "team.yaml", "mappings.csv"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "rules", "examples", "segment-table", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	data := filepath.Join(t.TempDir(), "sb.db")
	table := filepath.Join(dir, "mappings.csv")
	note := filepath.Join(dir, ".switchboard-publishing.json")
	old, _ := os.ReadFile(table)
	edited := []byte(strings.Replace(string(old), "French speakers,language is fr,French,", "French speakers,language is fr,Support,", 1))
	if string(edited) == string(old) {
		t.Fatal("the example's table changed: edit another row")
	}
	// What a publish leaves in the directory once it has written the
	// table (console.markPublish).
	cutShort := func() {
		sum := sha256.Sum256(edited)
		b, _ := json.Marshal(map[string]any{"file": table, "existed": true, "old": old, "mode": 0o644,
			"new": hex.EncodeToString(sum[:16]), "by": "Dana", "reason": "French team is away", "at": time.Now().UTC()})
		if err := os.WriteFile(note, b, 0o600); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(table, edited, 0o644)
	}
	version := func(s *server) string {
		resp, err := http.Get("http://" + s.addr + "/v1/rules")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ Version string }
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &v); err != nil || v.Version == "" {
			t.Errorf("GET /v1/rules: %s %s", resp.Status, b)
		}
		return v.Version
	}
	args := []string{"--rules", dir, "--data", data}

	s := startServe(t, bin, "serving", args...)
	v0 := version(s)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done

	// Cut short before the reload was recorded: put back.
	cutShort()
	s = startServe(t, bin, "serving", args...)
	if v := version(s); v != v0 {
		t.Errorf("the service runs %s, not the rules last recorded (%s)", v, v0)
	}
	if b, _ := os.ReadFile(table); string(b) != string(old) {
		t.Errorf("the table was not put back:\n%s", b)
	}
	if _, err := os.Stat(note); err == nil {
		t.Error("the note is still there")
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "a table publish was cut short") || !strings.Contains(logs, `"by":"Dana"`) || strings.Contains(logs, "started on other rules") {
		t.Errorf("the log:\n%s", logs)
	}
	// Started again: nothing more to do, and the table is as it was.
	s.stop(t, syscall.SIGTERM, 10*time.Second)
	s = startServe(t, bin, "serving", args...)
	if v := version(s); v != v0 || strings.Contains(s.logs.String(), "cut short") {
		t.Errorf("a second start: %s %s", v, s.logs.String())
	}

	// Recorded, then stopped before the note went: the table stays.
	os.WriteFile(table, edited, 0o644)
	resp, err := http.Post("http://"+s.addr+"/v1/rules/reload", "application/json", strings.NewReader(`{"by":"Dana"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var res struct {
		Version string
		Changed bool
	}
	json.Unmarshal(body, &res)
	if !res.Changed {
		t.Fatalf("the reload: %s", body)
	}
	cutShort()
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s = startServe(t, bin, "serving", args...)
	if v := version(s); v != res.Version {
		t.Errorf("the service runs %s, not the published rules (%s)", v, res.Version)
	}
	if b, _ := os.ReadFile(table); string(b) != string(edited) {
		t.Errorf("a recorded publish's table was put back:\n%s", b)
	}
	if _, err := os.Stat(note); err == nil {
		t.Error("the note is still there")
	}
	if strings.Contains(s.logs.String(), "cut short") {
		t.Errorf("the log:\n%s", s.logs.String())
	}

	// Cut short while routing.rules changed on disk too, and started with
	// the directory spelled otherwise: the table is put back, and the
	// rest of the files are started on as usual (a reload by serve), so
	// that what runs is what is on disk.
	os.WriteFile(table, old, 0o644)
	if resp, err := http.Post("http://"+s.addr+"/v1/rules/reload", "application/json", strings.NewReader(`{"by":"Dana"}`)); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	v1 := version(s)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	cutShort()
	rules, _ := os.ReadFile(filepath.Join(dir, "routing.rules"))
	os.WriteFile(filepath.Join(dir, "routing.rules"), append(rules, []byte("\non incoming message where text == 'ping' -> tag ping\n")...), 0o644)
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, dir)
	if err != nil {
		t.Fatal(err)
	}
	s = startServe(t, bin, "serving", "--rules", rel, "--data", data)
	if b, _ := os.ReadFile(table); string(b) != string(old) {
		t.Errorf("the table was not put back:\n%s", b)
	}
	onDisk, ds := dsl.Load(dir)
	if onDisk == nil {
		t.Fatal(ds)
	}
	if v := version(s); v == v1 || v != onDisk.Version {
		t.Errorf("the service runs %s; the files on disk are %s (and %s ran before)", v, onDisk.Version, v1)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "a table publish was cut short") {
		t.Errorf("the log:\n%s", logs)
	}
}
