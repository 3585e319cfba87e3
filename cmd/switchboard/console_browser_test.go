package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	ctx, cancelTime := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelTime(); cancel(); cancelAlloc() })
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
