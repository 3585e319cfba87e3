package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The explanations the timeline fake gives, as the service does.
var fakeTraces = map[string]string{
	"m2":        `{"event":"m2","type":"message.received","at":"2026-01-05T09:00:02Z","notes":["opens conversation m2 (contact k1, channel \"whatsapp\", to \"+1\"): new conversation rules run first, then incoming message rules"],"steps":[{"trigger":"conversation.created","rules":[{"rule":"r.rules:1","pos":"r.rules:1:1","matched":true,"actions":[{"action":"assign group G by least_active","outcome":"no online member of G can take it now; waits in G","members":[{"agent":"a","reason":"full 1/1"},{"agent":"b","reason":"offline"}]}]}]}],"decision":{"event":"m2","conversation":"m2","actions":[{"type":"queued","rule":"r.rules:1","conversation":"m2","group":"G"}]}}`,
	"m3":        `{"event":"m3","type":"message.received","at":"2026-01-05T09:00:03Z","steps":[],"decision":{"event":"m3","conversation":"m2","actions":[]}}`,
	"s1":        `{"event":"s1","type":"agent.status","at":"2026-01-05T09:00:04Z","steps":[{"trigger":"waiting work","placed":["m2 (priority 5, waiting since 09:00:02) placed with b, as rule \"r.rules:1\" queued it"]}],"decision":{"event":"s1","conversation":null,"actions":[{"type":"assign","rule":"r.rules:1","conversation":"m2","agent":"b","group":"G","algorithm":"least_active","from_queue":true}]}}`,
	"sb:tick:1": `{"event":"sb:tick:1","type":"tick","at":"2026-01-05T09:02:06Z","steps":[{"trigger":"conversation.unanswered: m1 has waited since 2026-01-05T09:00:01Z","rules":[{"rule":"late","pos":"r.rules:2:1","matched":true,"actions":[{"action":"tag late","outcome":"tagged"}]}]},{"trigger":"conversation.unanswered: m2 has waited since 2026-01-05T09:00:02Z","rules":[{"rule":"late","pos":"r.rules:2:1","matched":true,"actions":[{"action":"tag late","outcome":"tagged"}]}]}],"decision":{"event":"sb:tick:1","conversation":null,"actions":[{"type":"tag","rule":"late","conversation":"m1","tag":"late"},{"type":"tag","rule":"late","conversation":"m2","tag":"late"}]}}`,
	// Every kind of rule: not matched (and why), matched with an owner
	// that is offline and a group as the else, skipped.
	"e6": `{"event":"e6","type":"message.received","at":"2026-01-05T09:40:00Z","notes":["opens conversation e6 (contact k1)"],"steps":[{"trigger":"conversation.created","rules":[` +
		`{"rule":"new customer, someone online","pos":"routing.rules:4:1","matched":false,"clause":"contact.is_new","values":[{"expr":"contact.is_new","value":"false"}]},` +
		`{"rule":"returning customer goes to the owner","pos":"routing.rules:20:1","matched":true,"actions":[{"action":"assign owner","outcome":"owner ana is offline; else:","else":{"action":"assign group Support by longest_idle","outcome":"assigned to ben","members":[{"agent":"ana","reason":"offline"},{"agent":"ben","chosen":true,"reason":"chosen: never active"},{"agent":"chloe","reason":"away"}]}}]},` +
		`{"rule":"everyone else","pos":"routing.rules:30:1","matched":false,"skipped":"not run: an earlier rule stopped the event"}]}],` +
		`"decision":{"event":"e6","conversation":"e6","actions":[{"type":"assign","rule":"returning customer goes to the owner","conversation":"e6","agent":"ben","group":"Support","algorithm":"longest_idle"}]}}`,
}

// fakeTimelineAPI answers as the service's API does for conversation m2
// (open: its opening message, a later one, the status change that placed
// it, a tick), for x1 (closed, found by an event, a window at a time) and
// for event e6.
func fakeTimelineAPI(t *testing.T) http.Handler {
	events := `[` +
		`{"seq":2,"event":"m2","type":"message.received","at":"2026-01-05T09:00:02Z","decision":{"event":"m2","conversation":"m2","actions":[{"type":"queued","rule":"r.rules:1","conversation":"m2","group":"G"}]},"body":{"id":"m2","type":"message.received","channel":"whatsapp","to":"+1","contact":{"id":"k1"},"message":{"id":"x","text":"hola <b>"}}},` +
		`{"seq":3,"event":"m3","type":"message.received","at":"2026-01-05T09:00:03Z","decision":{"event":"m3","conversation":"m2","actions":[]},"body":{"id":"m3","type":"message.received","channel":"whatsapp","to":"+1","contact":{"id":"k1"}}},` +
		`{"seq":4,"event":"s1","type":"agent.status","at":"2026-01-05T09:00:04Z","decision":{"event":"s1","conversation":null,"actions":[{"type":"assign","rule":"r.rules:1","conversation":"m2","agent":"b","group":"G","algorithm":"least_active","from_queue":true}]},"body":{"id":"s1","type":"agent.status","agent":"b","status":"online"}},` +
		`{"seq":7,"event":"sb:tick:1","type":"tick","at":"2026-01-05T09:02:06Z","decision":{"event":"sb:tick:1","conversation":null,"actions":[{"type":"tag","rule":"late","conversation":"m1","tag":"late"},{"type":"tag","rule":"late","conversation":"m2","tag":"late"}]},"body":{"id":"sb:tick:1","type":"tick"}}]`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch p := r.URL.Path; {
		case p == "/v1/conversations/m2/events":
			if q.Get("limit") != fmt.Sprint(timelineLimit) {
				t.Errorf("the page asked for limit %q", q.Get("limit"))
			}
			fmt.Fprintf(w, `{"conversation":"m2","contact":"k1","events":%s,"from":1,"through":9,"earlier":false,"closed":false,"more":false,"next":9,"stopped":"end","window":10000}`, events)
		case p == "/v1/conversations/m2":
			fmt.Fprint(w, `{"id":"m2","contact":"k1","channel":"whatsapp","to":"+1","status":"open","agent":"b","priority":5,"tags":["late"],"created_at":"2026-01-05T09:00:02Z"}`)
		case p == "/v1/conversations/x1/events" && q.Get("event") == "m5":
			// A window of the log, read on with after.
			from := q.Get("after")
			if from == "" {
				from = "0"
			}
			fmt.Fprintf(w, `{"conversation":"x1","events":[],"from":%s,"through":10000,"earlier":%v,"closed":false,"more":true,"next":10000,"stopped":"window","window":10000}`, from, q.Has("after"))
		case p == "/v1/conversations/x1":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no open conversation \"x1\"","field":"id"}`)
		case strings.HasSuffix(p, "/explain") && strings.HasPrefix(p, "/v1/events/"):
			id := strings.TrimSuffix(strings.TrimPrefix(p, "/v1/events/"), "/explain")
			tr, ok := fakeTraces[id]
			switch {
			case !ok:
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprintf(w, `{"error":"no event %q","field":"id"}`, id)
			case q.Get("format") == "text":
				fmt.Fprintf(w, "event %s: the trace as text\n", id)
			default:
				fmt.Fprint(w, tr)
			}
		case p == "/v1/events/e6":
			fmt.Fprint(w, `{"event":"e6","conversation":"e6","actions":[{"type":"assign","rule":"returning customer goes to the owner","conversation":"e6","agent":"ben","group":"Support","algorithm":"longest_idle"}]}`+"\n")
		case strings.HasPrefix(p, "/v1/conversations/"):
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no conversation \"nope\": none is open with that id. Pass ?event=ID, the id of any event of the conversation, to find it in the log","field":"id"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"no such endpoint"}`)
		}
	})
}

func timelineConsole(t *testing.T) *Console {
	c, err := New(Config{API: fakeTimelineAPI(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mustHave fails for each of wants the page does not hold.
func mustHave(t *testing.T, what, page string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(page, want) {
			t.Errorf("%s lacks %q", what, want)
		}
	}
	if t.Failed() {
		t.Logf("%s:\n%s", what, page)
	}
}

// TestConversationPage: an open conversation's page says where it is now,
// then each event in a line with its decision in words, a link to its
// explanation and the explanation itself, inline, without JavaScript.
func TestConversationPage(t *testing.T) {
	c := timelineConsole(t)
	w := do(c, "GET", "/conversations/m2", "127.0.0.1:1", nil)
	if w.Code != 200 {
		t.Fatalf("the conversation page: %d\n%s", w.Code, w.Body.String())
	}
	page := w.Body.String()
	mustHave(t, "the conversation page", page,
		"open, with agent b", "late", // where it is now
		"message from contact k1 on whatsapp: ‘hola &lt;b&gt;’", // what each event said
		"agent b came online",
		"timer: unanswered since 2026-01-05 09:00:02 UTC, rule late",
		"m2 waits in group G", // each decision in words
		"m2 assigned to agent b (group G), from the waiting line",
		"tag m2 late",
		"The same decision took 1 action on other conversations.",
		`href="/events/m2"`, `href="/events/s1"`, `href="/events/sb:tick:1"`, // links to the explanations
		`<summary>Why: the explanation of s1</summary>`, // and the explanations inline
		"m2 (priority 5, waiting since 09:00:02) placed with b",
		"That is everything so far",
	)
	if n := strings.Count(page, "<details>"); n != 4 {
		t.Errorf("%d explanations inline, want 4", n)
	}
	// The tick's decision, as this conversation's line says it: its own
	// action only (the explanation says the rest).
	if !strings.Contains(page, "<p>Decision:</p><ul><li>tag m2 late</li></ul>") {
		t.Error("the tick's decision about m2 is not said alone")
	}
	// The events come oldest first.
	if i, j := strings.Index(page, `data-event="m2"`), strings.Index(page, `data-event="sb:tick:1"`); i < 0 || j < i {
		t.Errorf("not oldest first: m2 at %d, the tick at %d", i, j)
	}
}

// TestConversationWindow: a conversation found by one of its events is
// read a window of the log at a time; the page says so and links on,
// keeping the event.
func TestConversationWindow(t *testing.T) {
	c := timelineConsole(t)
	w := do(c, "GET", "/conversations/x1?event=m5", "127.0.0.1:1", nil)
	mustHave(t, "x1's page", w.Body.String(),
		"It is not open now.",
		"The search stopped after reading 10000 records of the log",
		`href="/conversations/x1?event=m5&amp;after=10000"`,
	)
	w = do(c, "GET", "/conversations/x1?event=m5&after=10000", "127.0.0.1:1", nil)
	mustHave(t, "x1's next page", w.Body.String(),
		"the conversation has, or may have, earlier events",
		`href="/conversations/x1?event=m5"`, // the first page
	)
}

// TestConversationNotFound: an unknown conversation is a page that says
// so, and what to do, whatever its id holds.
func TestConversationNotFound(t *testing.T) {
	c := timelineConsole(t)
	for _, path := range []string{"/conversations/nope", "/conversations/a%2Fb", "/conversations/%22%3Cq%3E", "/conversations/" + strings.Repeat("z", 5000)} {
		w := do(c, "GET", path, "127.0.0.1:1", nil)
		if w.Code != 404 || !strings.Contains(w.Body.String(), "was not found") || !strings.Contains(w.Body.String(), "Pass ?event=ID") || strings.Contains(w.Body.String(), "<q>") {
			t.Errorf("%.60s: %d\n%s", path, w.Code, w.Body.String())
		}
	}
}

// TestEventExplained: the explanation is drawn for a team lead: each
// rule matched, not matched (the clause and its values) or not run, each
// action's outcome and a table of the members, chosen or not and why;
// the text trace stays, and the page links to the conversation.
func TestEventExplained(t *testing.T) {
	c := timelineConsole(t)
	w := do(c, "GET", "/events/e6", "127.0.0.1:1", nil)
	if w.Code != 200 {
		t.Fatalf("the event page: %d\n%s", w.Code, w.Body.String())
	}
	page := w.Body.String()
	mustHave(t, "the event page", page,
		`Rules “on new conversation”`,
		`<span class="badge badge-unmatched">Did not match</span> rule <strong>new customer, someone online</strong>`,
		"It did not match because this was not true: <code>contact.is_new</code>",
		"<code>contact.is_new</code> was <code>false</code>",
		`<span class="badge badge-matched">Matched</span> rule <strong>returning customer goes to the owner</strong>`,
		"<code>assign owner</code>: owner ana is offline; else:",
		"Otherwise: <code>assign group Support by longest_idle</code>: assigned to ben",
		`<tr class="chosen"><td>ben</td><td>✓ chosen</td><td>never active</td></tr>`,
		`<tr><td>ana</td><td>not chosen</td><td>offline</td></tr>`,
		`<tr><td>chloe</td><td>not chosen</td><td>away</td></tr>`,
		`<span class="badge badge-skipped">Not run</span> rule <strong>everyone else</strong>`,
		"It did not run: an earlier rule stopped the event.",
		"e6 assigned to agent ben (group Support)",
		`<pre id="trace">event e6: the trace as text`,
		`href="/conversations/e6?event=e6"`,
		`&#34;agent&#34;:&#34;ben&#34;`, // the decision as stored
	)
	// The live page links each decision's conversation.
	w = do(newConsole(t, ""), "GET", "/", "127.0.0.1:1", nil)
	mustHave(t, "the desk", w.Body.String(), `href="/events/e1"`, `href="/conversations/e1?event=e1"`, `<a href="/conversations/e1">e1</a>`, `<a href="/conversations/e2">e2</a>`)
}

// TestTimerSaid: a tick's line on a conversation's page names the timer
// that fired for it, unanswered or inactive, with since when, and the
// rules it ran; release and close are said in words.
func TestTimerSaid(t *testing.T) {
	why := &explanation{Steps: []traceStep{
		{Trigger: "conversation.unanswered: other has waited since 2026-01-05T09:00:00Z"},
		{Trigger: "conversation.inactive: c1 has had no word from its contact since an agent wrote at 2026-01-05T09:05:00Z",
			Rules: []traceRule{{Rule: "on hold", Matched: true}, {Rule: "abandoned"}}},
	}}
	if got, want := timerSaid("c1", why), "timer: inactive: no word from the contact since an agent wrote at 2026-01-05 09:05:00 UTC, rule on hold"; got != want {
		t.Errorf("timerSaid = %q, want %q", got, want)
	}
	if got, want := timerSaid("c2", why), "timer: a rule's timer fired"; got != want {
		t.Errorf("timerSaid of another conversation = %q, want %q", got, want)
	}
	if got, want := (traceStep{Trigger: why.Steps[1].Trigger}).Title(), "Timer “on inactive”: c1 has had no word from its contact since an agent wrote at 2026-01-05T09:05:00Z"; got != want {
		t.Errorf("Title = %q, want %q", got, want)
	}
	for a, want := range map[string]string{
		`{"type":"release","conversation":"c1","agent":"ana"}`: "c1 stays with agent ana, whose capacity it frees until the contact writes",
		`{"type":"close","conversation":"c1","agent":"ana"}`:   "c1 closed",
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(a), &m); err != nil {
			t.Fatal(err)
		}
		if got := describeAction(m); got != want {
			t.Errorf("describeAction(%s) = %q, want %q", a, got, want)
		}
	}
}
