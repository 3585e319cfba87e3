package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/whatif"
)

// TestWhatifBesideServe: what-if reads a running service's database, and
// a candidate that sends French speakers to another group moves exactly
// the French conversations; a reload within the window is followed by the
// log's run and not by the candidate's.
func TestWhatifBesideServe(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	team := "agents:\n  - {id: en1, capacity: 20, status: online}\n  - {id: fr1, capacity: 5, status: online}\n  - {id: fr2, capacity: 5, status: online}\n" +
		"groups:\n  English: [en1]\n  French: [fr1, fr2]\n"
	os.WriteFile(filepath.Join(rules, "team.yaml"), []byte(team), 0o644)
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte("on new conversation where contact.lang == 'fr' -> assign group French by round_robin; stop\non new conversation -> assign group English\n"), 0o644)
	db := filepath.Join(dir, "sb.db")
	s := startServe(t, bin, "-", "--rules", rules, "--data", db)
	for i := range 12 {
		lang := []string{"fr", "en", "de"}[i%3]
		if code, body := s.post(fmt.Sprintf(`{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","lang":%q}}`, i, i, lang)); code != 200 {
			t.Fatalf("e%d: %d %s", i, code, body)
		}
	}
	// A reload: French speakers go to fr2 from now on.
	os.WriteFile(filepath.Join(rules, "r.rules"), []byte("on new conversation where contact.lang == 'fr' -> assign user fr2; stop\non new conversation -> assign group English\n"), 0o644)
	resp, err := http.Post("http://"+s.addr+"/v1/rules/reload", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reload: %v %v", resp, err)
	}
	resp.Body.Close()
	for i := 12; i < 15; i++ {
		if code, body := s.post(fmt.Sprintf(`{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","lang":"fr"}}`, i, i)); code != 200 {
			t.Fatalf("e%d: %d %s", i, code, body)
		}
	}

	cand := filepath.Join(dir, "candidate")
	os.Mkdir(cand, 0o755)
	os.WriteFile(filepath.Join(cand, "team.yaml"), []byte(team), 0o644)
	os.WriteFile(filepath.Join(cand, "r.rules"), []byte("on new conversation -> assign group English\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"whatif", "--data", db, "--rules", cand, "--since", "1h", "--json"}, nil, &out, &errOut); code != 0 {
		t.Fatalf("whatif: exit %d\n%s", code, errOut.String())
	}
	var rep whatif.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Events != 15 || rep.Conversations != 15 || len(rep.Moved) != 7 || len(rep.Rules) != 2 {
		t.Fatalf("15 events, 15 conversations, 7 moved, 2 rule sets; got %d, %d, %d, %d:\n%s", rep.Events, rep.Conversations, len(rep.Moved), len(rep.Rules), out.String())
	}
	for i, m := range rep.Moved {
		before := strings.HasPrefix(m.Before.Where, "agent fr") && m.Before.Group == "French"
		if i >= 4 {
			before = m.Before.Where == "agent fr2" && m.Before.Group == "" // after the reload
		}
		if !before || m.After.Where != "agent en1" || m.After.Rule == "" {
			t.Errorf("moved: %+v", m)
		}
	}
	// The text report says the same, for people.
	out.Reset()
	if code := run([]string{"whatif", "--data", db, "--rules", cand}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "15 conversations routed; 7 would go elsewhere") {
		t.Fatalf("whatif: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	// A window with no traffic says so.
	if code := run([]string{"whatif", "--data", db, "--rules", cand, "--from", "2001-01-01", "--to", "2001-01-02"}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "holds no traffic from 2001-01-01T00:00:00Z to 2001-01-02T00:00:00Z") {
		t.Fatalf("an empty window: exit %d\n%s", code, errOut.String())
	}
}
