package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds Debian's headless browser; CI installs it (.ci/run), and
// a test that needs it fails there rather than skip.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium to drive: .ci/run installs Debian's chromium")
	}
	t.Skip("no chromium: apt-get install chromium")
	return ""
}

// browser starts a headless chromium at the given width.
func browser(t *testing.T, width int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.WindowSize(width, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// A window is never narrower than 500 px: the page's width is set
	// as a phone's would be.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), 900)); err != nil {
		t.Fatal(err)
	}
	ctx, cancelTime := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelTime)
	return ctx
}

// screenshot saves the page as docs/console/NAME.png when
// UPDATE_SCREENSHOTS=1: the README's pictures are the tests' own.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "console", name+".png")
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleBrowser drives the console in Debian's chromium against the
// real serve: log in with the token; an event posted to the API shows on
// the desk without a reload (the agent's load and the decision); its
// explanation opens from the decision; a write without the page's CSRF
// token is refused; a dead email is listed and retried; the page fits a
// phone's width.
func TestConsoleBrowser(t *testing.T) {
	bin := binary(t)
	ctx := browser(t, 1280)
	dir := t.TempDir()
	s := startServe(t, bin, "-", "--rules", serveRules(t, dir), "--data", filepath.Join(dir, "sb.db"), "--token", "desk-token")
	base := "http://" + s.addr

	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "login")
	err = chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("token"), "desk-token"),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("agents")),
	)
	heading, herr := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
	if err != nil || herr != nil || heading != "The desk, live" {
		t.Fatalf("after logging in: %q %v %v", heading, err, herr)
	}

	// An event, posted as the platform does; the open page shows it.
	if code, body := s.postAuth(`{"id":"e1","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k1"}}`, "desk-token"); code != 200 {
		t.Fatalf("post: %d %s", code, body)
	}
	_, err = chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const l = document.querySelector('tr[data-agent="a1"] .load'); return l && l.textContent.startsWith("1 of 2") })()`, chromedp.WithPollingTimeout(15*time.Second)))
	if err == nil {
		err = chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`li[data-event="e1"]`)))
	}
	if err != nil {
		load, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-agent="a1"] .load`)))
		t.Fatalf("the desk did not show the event without a reload: %v (a1's load %q)", err, load)
	}
	screenshot(t, ctx, "live")

	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`li[data-event="e1"] a`)),
		chromedp.WaitVisible(chromedp.ID("trace")),
	)
	trace, terr := chromedp.Run(ctx, chromedp.Text(chromedp.ID("trace")))
	if err != nil || terr != nil || !strings.Contains(trace, "event e1: message.received") || !strings.Contains(trace, "assigned to a1") {
		t.Fatalf("the explanation: %v %v\n%s", err, terr, trace)
	}
	screenshot(t, ctx, "explain")

	// The conversation's timeline, from the explanation.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href^="/conversations/e1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`ol.timeline li[data-event="e1"]`)),
	)
	item, ierr := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`ol.timeline li[data-event="e1"]`)))
	if err != nil || ierr != nil || !strings.Contains(item, "assigned to agent a1") {
		t.Fatalf("the conversation's timeline: %v %v\n%s", err, ierr, item)
	}
	screenshot(t, ctx, "conversation")

	// A write that does not come from a page (no CSRF token) is refused,
	// though the browser holds the session.
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("/logout", {method: "POST"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || code != 403 {
		t.Fatalf("a write without the CSRF token: %d %v", code, err)
	}

	// The email to a1 (no mail server configured) is dead: listed, and
	// retried from the page.
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/deliveries"),
		chromedp.WaitVisible(chromedp.CSS(`#dead tr[data-delivery]`)),
	)
	if err != nil {
		t.Fatalf("the dead email is not listed: %v", err)
	}
	screenshot(t, ctx, "deliveries")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#dead tr[data-delivery] button`)),
		chromedp.WaitVisible(chromedp.CSS(`p[role=status]`)),
	)
	done, derr := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p[role=status]`)))
	if err != nil || derr != nil || !strings.Contains(done, "will be made again now") {
		t.Fatalf("the retry: %q %v %v", done, err, derr)
	}

	// A phone's width: nothing wider than the screen.
	phone := browser(t, 390)
	err = chromedp.Do(phone,
		chromedp.Navigate(base+"/login"),
		chromedp.SendKeys(chromedp.ID("token"), "desk-token"),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("agents")),
	)
	fits, ferr := chromedp.Run(phone, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil || ferr != nil || !fits {
		t.Fatalf("at 390 px: fits %v, %v %v", fits, err, ferr)
	}
}

// copyRuleSet copies an example rule set (its files, not its tests) into
// dir, for a serve whose table the test edits.
func copyRuleSet(t *testing.T, from, dir string) string {
	t.Helper()
	to := filepath.Join(dir, "rules")
	os.Mkdir(to, 0o755)
	for _, f := range []string{"routing.rules", "team.yaml", "mappings.csv"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, f), b, 0o644)
	}
	return to
}

// typeInto replaces what a cell holds by typing, as a person does: htmx
// sees the input events.
func typeInto(id, text string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := chromedp.Evaluate[bool](`(() => { const e = document.getElementById(`+strconv.Quote(id)+`); e.value = ""; e.focus(); return true })()`)(ctx, t); err != nil {
			return chromedp.Void{}, err
		}
		return chromedp.SendKeys(chromedp.ID(id), text)(ctx, t)
	}
}

// TestConsoleTableBrowser: the mapping table in the browser against the
// real serve. A misspelt group is marked on its cell as it is typed; once
// fixed, Preview shows the rows' counts change on the traffic already
// decided; Publish makes the next event go by the edited row, and the
// rules page names who published and which row changed. A publish after
// the file changed on disk is refused.
func TestConsoleTableBrowser(t *testing.T) {
	bin := binary(t)
	ctx := browser(t, 1280)
	dir := t.TempDir()
	rules := copyRuleSet(t, filepath.Join("..", "..", "rules", "examples", "segment-table"), dir)
	s := startServe(t, bin, "-", "--rules", rules, "--data", filepath.Join(dir, "sb.db"), "--token", "desk-token")
	base := "http://" + s.addr
	// Last week's traffic: two French speakers, a German and a Dutch one.
	for i, lang := range []string{"fr", "fr", "de", "nl"} {
		ev := fmt.Sprintf(`{"id":"w%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","lang":%q}}`, i, i, lang)
		if code, body := s.postAuth(ev, "desk-token"); code != 200 {
			t.Fatalf("post: %d %s", code, body)
		}
	}

	err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/table"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "desk-token"),
		chromedp.SendKeys(chromedp.ID("name"), "Dana Kim"),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("editor")),
	)
	if err != nil {
		t.Fatalf("the table after logging in: %v", err)
	}
	// Row 6 is German speakers: r4c1 is its when, r4c2 its group. The
	// team lead sends Dutch speakers there too, to the French team.
	if v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("r4c0"))); err != nil || v != "German speakers" {
		t.Fatalf("row 6 is %q (%v)", v, err)
	}
	cellNotes := func(id string) string {
		s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("d-`+id+`").textContent`))
		return s
	}
	err = chromedp.Do(ctx, typeInto("r4c1", "language is one of de, nl"), typeInto("r4c2", "Frnech"))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("d-r4c2").textContent.includes('unknown group "Frnech"')`, chromedp.WithPollingTimeout(10*time.Second)))
	}
	if err != nil {
		t.Fatalf("the misspelt group is not marked on its cell: %v (notes %q)", err, cellNotes("r4c2"))
	}
	if n := cellNotes("r4c2"); !strings.Contains(n, `did you mean "French"`) {
		t.Errorf("the group cell's note: %q", n)
	}
	if n := cellNotes("r4c1"); n != "" {
		t.Errorf("the when cell has notes: %q", n)
	}
	focused, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id`))
	if focused != "r4c2" {
		t.Errorf("the cell being typed in lost its focus to %q", focused)
	}
	screenshot(t, ctx, "table")
	err = chromedp.Do(ctx, typeInto("r4c2", "French"))
	if err == nil {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("summary").dataset.errors === "0" && document.getElementById("d-r4c2").textContent === ""`, chromedp.WithPollingTimeout(10*time.Second)))
	}
	if err != nil {
		summary, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("summary")))
		t.Fatalf("the fixed group is still marked: %v (notes %q; %s)", err, cellNotes("r4c2"), summary)
	}

	// Preview: the German row takes the Dutch speaker from the last row.
	err = chromedp.Do(ctx, chromedp.Click(chromedp.ID("preview-button")), chromedp.WaitVisible(chromedp.ID("preview")))
	if err != nil {
		t.Fatalf("preview: %v", err)
	}
	count := func(seg, col string) string {
		s, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#preview tr[data-segment="`+seg+`"] .`+col)))
		return strings.Fields(s + " -")[0]
	}
	if b, a := count("German speakers", "before"), count("German speakers", "after"); b != "1" || a != "2" {
		t.Errorf("German speakers: %s → %s, want 1 → 2", b, a)
	}
	if b, a := count("Everyone else", "before"), count("Everyone else", "after"); b != "1" || a != "0" {
		t.Errorf("Everyone else: %s → %s, want 1 → 0", b, a)
	}
	if b, a := count("French speakers", "before"), count("French speakers", "after"); b != "2" || a != "2" {
		t.Errorf("French speakers: %s → %s, want 2 → 2", b, a)
	}
	if moved, _ := chromedp.Run(ctx, chromedp.Text(chromedp.ID("moved-count"))); !strings.HasPrefix(moved, "2 ") {
		t.Errorf("moved: %q", moved)
	}
	screenshot(t, ctx, "preview")

	// Publish: the name comes from the login.
	err = chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("reason"), "Amélie speaks German and Dutch"),
		chromedp.Click(chromedp.ID("publish-button")),
		chromedp.WaitVisible(chromedp.CSS(`p.done[role=status]`)),
	)
	done, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p.done[role=status]`)))
	if err != nil || !strings.Contains(done, "Published") {
		alert, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('[role=alert]') || {}).textContent || ""`))
		t.Fatalf("publish: %v %q %q", err, done, alert)
	}
	code, body := s.postAuth(`{"id":"after","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k9","lang":"nl"}}`, "desk-token")
	if code != 200 || !strings.Contains(body, `"rule":"mappings.csv:6 (German speakers)"`) || !strings.Contains(body, `"agent":"amelie"`) {
		t.Fatalf("the next Dutch speaker is not routed by the edited row: %d %s", code, body)
	}

	// The rules page: who published, and what changed.
	err = chromedp.Do(ctx, chromedp.Navigate(base+"/rules"), chromedp.WaitVisible(chromedp.ID("history")))
	hist, herr := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#history tbody tr`)))
	if err != nil || herr != nil || !strings.Contains(hist, "Dana Kim") || !strings.Contains(hist, "Amélie speaks German and Dutch") ||
		!strings.Contains(hist, `row 6 (German speakers): when "language is de" → "language is one of de, nl"; group "Support" → "French"`) {
		t.Fatalf("the history: %v %v\n%s", err, herr, hist)
	}
	screenshot(t, ctx, "rules")

	// Someone changes the file on the server while the editor is open:
	// the publish is refused, and the file is left as they wrote it.
	err = chromedp.Do(ctx, chromedp.Navigate(base+"/table"), chromedp.WaitVisible(chromedp.ID("editor")), typeInto("r0c2", "Support"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(rules, "mappings.csv")
	theirs, _ := os.ReadFile(path)
	theirs = append(theirs, "Italian speakers,language is it,Support,,,\n"...)
	os.WriteFile(path, theirs, 0o644)
	err = chromedp.Do(ctx, chromedp.Click(chromedp.ID("publish-button")), chromedp.WaitVisible(chromedp.CSS(`[role=alert]`)))
	alert, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`[role=alert]`)))
	if err != nil || !strings.Contains(alert, "changed on disk since you opened the editor") {
		t.Fatalf("a publish over a changed file: %v %q", err, alert)
	}
	if now, _ := os.ReadFile(path); string(now) != string(theirs) {
		t.Fatalf("the refused publish wrote the file:\n%s", now)
	}

	// A phone's width: the pages fit; the grid scrolls within itself.
	phone := browser(t, 390)
	err = chromedp.Do(phone,
		chromedp.Navigate(base+"/login?next=/table"),
		chromedp.SendKeys(chromedp.ID("token"), "desk-token"),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("editor")),
	)
	for _, page := range []string{"/table", "/rules"} {
		if err == nil {
			err = chromedp.Do(phone, chromedp.Navigate(base+page), chromedp.WaitReady(chromedp.CSS("h1")))
		}
		fits, ferr := chromedp.Run(phone, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
		if err != nil || ferr != nil || !fits {
			wide, _ := chromedp.Run(phone, chromedp.Evaluate[string](`document.documentElement.scrollWidth + " > " + window.innerWidth + ": " + [...document.querySelectorAll("body *")].filter(e => e.parentElement && (e.parentElement.id == "editor" || e.parentElement.tagName == "MAIN")).slice(0, 30).map(e => e.tagName + "#" + e.id + "." + e.className + " " + Math.round(e.getBoundingClientRect().left) + "-" + Math.round(e.getBoundingClientRect().right) + "/" + e.scrollWidth).join(", ")`))
			t.Fatalf("%s at 390 px: fits %v, %v %v; wider than the screen: %s", page, fits, err, ferr, wide)
		}
	}
}
