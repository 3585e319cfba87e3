package service

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/delivery"
	"github.com/switchboard-dev/switchboard/delivery/deliverytest"
)

// TestReloadLetsWorkGo: a reload that removes an agent with open work,
// and a group with work waiting, lets that work go and tells the platform
// so, as a decision of the reload's record: in the reload's answer, on the
// platform's feed, in the decisions and the conversation's timeline. A
// restart rebuilds the same state and sends nothing twice.
func TestReloadLetsWorkGo(t *testing.T) {
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	platform, _ := deliverytest.NewReceiver(whsec)
	defer platform.Close()
	cfg, ds := delivery.ParseConfig("switchboard.yaml", []byte(fmt.Sprintf("platform: {url: %s, secret_env: S}\n", platform.URL)),
		func(string) string { return whsec })
	if cfg == nil {
		t.Fatal(ds)
	}
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	os.Mkdir(rulesDir, 0o755)
	write := func(team, rules string) {
		os.WriteFile(filepath.Join(rulesDir, "team.yaml"), []byte(team), 0o644)
		os.WriteFile(filepath.Join(rulesDir, "r.rules"), []byte(rules), 0o644)
	}
	write("agents:\n  - {id: a, status: online}\n  - {id: b, status: online}\n  - {id: c, status: offline}\ngroups:\n  G: [a, b]\n  N: [c]\n",
		"on new conversation where channel == 'sms' -> assign user b\non new conversation where channel == 'chat' -> assign group N\non new conversation -> assign group G")
	path := filepath.Join(dir, "sb.db")
	run := func() (url string, stop func()) {
		_, url, stop = serveDirWith(t, rulesDir, path, func(c *Config) { c.Delivery = cfg })
		return url, stop
	}
	url, stop := run()
	do(t, "POST", url+"/v1/events", "", msg("e1", "k1"))
	do(t, "POST", url+"/v1/events", "", strings.Replace(msg("e2", "k2"), `"sms"`, `"chat"`, 1))
	do(t, "POST", url+"/v1/events", "", strings.Replace(msg("e3", "k3"), `"sms"`, `"email"`, 1))

	// b leaves the team, and N goes: e1 is b's, e2 waits in N.
	write("agents:\n  - {id: a, status: online}\ngroups:\n  G: [a]\n",
		"on new conversation -> assign group G")
	code, body, _ := do(t, "POST", url+"/v1/rules/reload", "", `{"by":"ops","reason":"b left"}`)
	const want = `"decision":{"event":"sb:rules.reload:4","conversation":null,"actions":[` +
		`{"type":"unassign","rule":"","conversation":"e1","agent":"b"},` +
		`{"type":"cancel","rule":"","conversation":"e2","group":"N"}]`
	if code != 200 || !strings.Contains(body, want) {
		t.Fatalf("reload: %d %s\nwant it to hold %s", code, body, want)
	}
	waitFor(t, "the reload's decision at the platform", func() bool {
		for _, h := range platform.Accepted() {
			if strings.Contains(string(h.Body), `"unassign"`) && strings.Contains(string(h.Body), "sb:rules.reload:4") {
				return true
			}
		}
		return false
	})
	if _, body, _ := do(t, "GET", url+"/v1/decisions?after=3", "", ""); !strings.Contains(body, `"conversation":"e1","agent":"b"`) {
		t.Errorf("decisions after the reload: %s", body)
	}
	if _, body, _ := do(t, "GET", url+"/v1/conversations/e1/events", "", ""); !strings.Contains(body, `"event":"sb:rules.reload:4"`) {
		t.Errorf("e1's timeline does not show the reload that let it go: %s", body)
	}
	// Explained: who left, what each conversation lost.
	code, why, _ := do(t, "GET", url+"/v1/events/sb:rules.reload:4/explain?format=text", "", "")
	for _, want := range []string{"the rules change by ops (b left) from ", "e1: taken from b, who is not in the new team", "e2: leaves the line of group N, which the new team does not have"} {
		if code != 200 || !strings.Contains(why, want) {
			t.Errorf("the reload explained: %d %s\nwant it to say %q", code, why, want)
		}
	}
	_, before, _ := do(t, "GET", url+"/v1/conversations/e1", "", "")
	if strings.Contains(before, `"agent":`) || !strings.Contains(before, `"previous_agent":"b"`) {
		t.Errorf("e1 after the reload: %s", before)
	}
	// A reload that lets nothing go says nothing.
	write("agents:\n  - {id: a, status: online}\ngroups:\n  G: [a]\n", "on new conversation -> tag x; assign group G")
	if code, body, _ := do(t, "POST", url+"/v1/rules/reload", "", ""); code != 200 || strings.Contains(body, `"decision"`) {
		t.Errorf("a reload that lets nothing go: %d %s", code, body)
	}
	sent := len(platform.Accepted())
	stop()

	url, stop = run()
	if _, after, _ := do(t, "GET", url+"/v1/conversations/e1", "", ""); after != before {
		t.Errorf("e1 after a restart:\n%s\nbefore:\n%s", after, before)
	}
	// The reload's record is filed under k1, whose conversation it names:
	// erasing k1 leaves it a reload that replays.
	if code, body, _ := do(t, "DELETE", url+"/v1/contacts/k1", "", ""); code != 200 {
		t.Fatalf("erasing k1: %d %s", code, body)
	}
	_, agents, _ := do(t, "GET", url+"/v1/agents", "", "")
	stop()
	url, stop = run()
	defer stop()
	if _, after, _ := do(t, "GET", url+"/v1/agents", "", ""); after != agents {
		t.Errorf("agents after an erasure and a restart:\n%s\nbefore:\n%s", after, agents)
	}
	do(t, "POST", url+"/v1/events", "", msg("e4", "k4"))
	waitFor(t, "e4 at the platform", func() bool { return len(platform.Accepted()) > sent })
	for _, h := range platform.Accepted()[sent:] {
		if strings.Contains(string(h.Body), "sb:rules.reload:4") {
			t.Errorf("the reload's decision was sent again after the restart")
		}
	}
}

// TestDotIDsRefused: "." and ".." cannot be a path segment (a URL path
// cleans them away), so an event, conversation or contact named so would
// have no page in the API or the console: refused, naming the field.
func TestDotIDsRefused(t *testing.T) {
	url, stop := start(t, filepath.Join(t.TempDir(), "sb.db"), "")
	defer stop()
	for _, c := range []struct{ body, field string }{
		{msg("..", "k1"), `"field":"id"`},
		{msg(".", "k1"), `"field":"id"`},
		{msg("e1", ".."), `"field":"contact.id"`},
		{strings.Replace(msg("e2", "k2"), `"channel"`, `"conversation":"..","channel"`, 1), `"field":"conversation"`},
	} {
		if code, body, _ := do(t, "POST", url+"/v1/events", "", c.body); code != 400 || !strings.Contains(body, c.field) || !strings.Contains(body, "URL path") {
			t.Errorf("%s: %d %s", c.body, code, body)
		}
	}
	if _, body, _ := do(t, "GET", url+"/v1/decisions?after=0", "", ""); strings.Contains(body, `"event":"`) {
		t.Errorf("a refused event was stored: %s", body)
	}
}
