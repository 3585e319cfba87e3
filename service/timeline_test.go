package service

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// timelineTeam has room for one conversation while b is offline: a
// second waits in the group until b comes online.
const timelineTeam = `
agents:
  - {id: a, capacity: 1, status: online}
  - {id: b, capacity: 1, status: offline}
groups:
  G: [a, b]
`

// timelineDesk runs a service on a clock the test moves.
type timelineDesk struct {
	t *testing.T
	*clockedService
}

func newTimelineDesk(t *testing.T) *timelineDesk {
	t.Helper()
	return &timelineDesk{t: t, clockedService: clocked(t, "on new conversation -> assign group G by least_active\non unanswered 1m -> tag late", timelineTeam)}
}

// post sends an event a second after the one before.
func (d *timelineDesk) post(event string) {
	d.t.Helper()
	d.advance(time.Second)
	if code, body, _ := do(d.t, "POST", d.url+"/v1/events", "", event); code != 200 {
		d.t.Fatalf("post %s: %d %s", event, code, body)
	}
}

// timeline is what GET /v1/conversations/{id}/events answers.
type timeline struct {
	Conversation string `json:"conversation"`
	Contact      string `json:"contact"`
	Events       []struct {
		Seq      int64           `json:"seq"`
		Event    string          `json:"event"`
		Type     string          `json:"type"`
		At       time.Time       `json:"at"`
		Body     json.RawMessage `json:"body"`
		Decision json.RawMessage `json:"decision"`
	} `json:"events"`
	From    int64  `json:"from"`
	Through int64  `json:"through"`
	Earlier bool   `json:"earlier"`
	Closed  bool   `json:"closed"`
	More    bool   `json:"more"`
	Next    int64  `json:"next"`
	Stopped string `json:"stopped"`
}

func (tl timeline) ids() []string {
	var out []string
	for _, e := range tl.Events {
		out = append(out, e.Event)
	}
	return out
}

// get asks for a timeline; the path is after /v1/conversations/.
func (d *timelineDesk) get(path string, want int) (timeline, string) {
	d.t.Helper()
	code, body, _ := do(d.t, "GET", d.url+"/v1/conversations/"+path, "", "")
	if code != want {
		d.t.Fatalf("GET %s: %d, want %d\n%s", path, code, want, body)
	}
	var tl timeline
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &tl); err != nil {
			d.t.Fatalf("GET %s: %v\n%s", path, err, body)
		}
	}
	return tl, body
}

// all follows a timeline's pages to its end, checking that each read
// only as much of the log as it may.
func (d *timelineDesk) all(path string) (ids []string, pages int) {
	d.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	tl, _ := d.get(path, 200)
	for pages = 1; ; pages++ {
		if tl.Through-tl.From > int64(timelineWindow) {
			d.t.Fatalf("%s: a page read records %d to %d, more than %d", path, tl.From, tl.Through, timelineWindow)
		}
		ids = append(ids, tl.ids()...)
		if !tl.More {
			return ids, pages
		}
		if pages > 50 {
			d.t.Fatalf("%s: the pages do not end", path)
		}
		tl, _ = d.get(path+sep+"after="+itoa(tl.Next), 200)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// The desk: k1 opens m1 on sms (to a) and m2 on whatsapp (waits: a is
// full, b offline) and writes again in m2; b comes online and gets m2
// from the waiting line; k2 opens m4 (waits); k3 opens x1 (an id of the
// client's) with event m5. A minute on, the unanswered timer tags them
// all in one tick. m1 and x1 are closed.
func timelineScenario(t *testing.T) *timelineDesk {
	d := newTimelineDesk(t)
	msgOn := func(id, contact, channel, conv string) string {
		ev := map[string]any{"id": id, "type": "message.received", "channel": channel, "to": "+1", "contact": map[string]string{"id": contact}}
		if conv != "" {
			ev["conversation"] = conv
		}
		b, _ := json.Marshal(ev)
		return string(b)
	}
	d.post(msgOn("m1", "k1", "sms", ""))
	d.post(msgOn("m2", "k1", "whatsapp", ""))
	d.post(msgOn("m3", "k1", "whatsapp", ""))
	d.post(`{"id":"s1","type":"agent.status","agent":"b","status":"online"}`)
	d.post(msgOn("m4", "k2", "sms", ""))
	d.post(msgOn("m5", "k3", "webchat", "x1"))
	d.advance(2 * time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body, _ := do(t, "GET", d.url+"/v1/conversations/m2", "", "")
		if strings.Contains(body, `"late"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the unanswered timer did not fire: %s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.post(`{"id":"c1","type":"conversation.closed","conversation":"m1"}`)
	d.post(`{"id":"c2","type":"conversation.closed","conversation":"x1"}`)
	return d
}

// TestTimelineOpen: an open conversation's timeline is its opening
// message, its later message, the status change that placed it from the
// waiting line and the tick that tagged it, in log order, with the
// events and decisions as stored; none of the contact's other
// conversation, nor another contact's.
func TestTimelineOpen(t *testing.T) {
	d := timelineScenario(t)
	tl, body := d.get("m2/events", 200)
	if len(tl.Events) != 4 {
		t.Fatalf("m2's timeline:\n%s", body)
	}
	if got := tl.ids(); got[0] != "m2" || got[1] != "m3" || got[2] != "s1" || !strings.HasPrefix(got[3], store.IDPrefix+"tick:") {
		t.Fatalf("m2's timeline: %v\n%s", got, body)
	}
	s1 := tl.Events[2]
	if s1.Type != "agent.status" || !strings.Contains(string(s1.Decision), `"from_queue":true`) || !strings.Contains(string(s1.Body), `"status":"online"`) {
		t.Fatalf("the status change that placed m2: %+v", s1)
	}
	if !strings.Contains(string(tl.Events[3].Decision), `"tag":"late"`) {
		t.Fatalf("the tick: %s", tl.Events[3].Decision)
	}
	for i, e := range tl.Events {
		if e.At.IsZero() || i > 0 && (e.Seq <= tl.Events[i-1].Seq || e.At.Before(tl.Events[i-1].At)) {
			t.Fatalf("not in log order, or without the service's clock: %s", body)
		}
	}
	if tl.Contact != "k1" || tl.Closed || tl.More || tl.Earlier || tl.Stopped != "end" || tl.From != tl.Events[0].Seq-1 {
		t.Fatalf("m2's timeline: %s", body)
	}
	// Read from just before it opened (found by its creation time), and
	// through the end of the log.
	if tl.Next != tl.Through || tl.Through < tl.Events[3].Seq+2 {
		t.Fatalf("m2's timeline should read to the end of the log: %s", body)
	}
	// The other contact's conversation has its own.
	if tl, _ := d.get("m4/events", 200); !slices.Equal(tl.ids()[:1], []string{"m4"}) || slices.Contains(tl.ids(), "m2") {
		t.Fatalf("m4's timeline: %v", tl.ids())
	}
}

// TestTimelineClosed: a closed conversation is found by its id when it is
// its opening event's, else by one of its events; it ends at its close.
func TestTimelineClosed(t *testing.T) {
	d := timelineScenario(t)
	tl, body := d.get("m1/events", 200)
	if got := tl.ids(); len(got) != 3 || got[0] != "m1" || got[2] != "c1" || !tl.Closed || tl.More || tl.Earlier || tl.Stopped != "closed" {
		t.Fatalf("m1's timeline (closed): %v\n%s", got, body)
	}
	if slices.Contains(tl.ids(), "m2") || slices.Contains(tl.ids(), "m3") {
		t.Fatalf("m1's timeline holds k1's other conversation: %v", tl.ids())
	}
	// x1 is the client's id: no event has it, so it takes one of its
	// events to find it.
	_, body = d.get("x1/events", 404)
	if !strings.Contains(body, "?event=") || !strings.Contains(body, `"field":"id"`) {
		t.Fatalf("x1 without event: %s", body)
	}
	for _, ev := range []string{"m5", "c2"} {
		tl, body = d.get("x1/events?event="+ev, 200)
		if got := tl.ids(); len(got) != 3 || got[0] != "m5" || got[2] != "c2" || !tl.Closed || tl.Contact != "k3" {
			t.Fatalf("x1 by event %s: %v\n%s", ev, got, body)
		}
	}
	// An event of another conversation, or none, is said so.
	if _, body := d.get("x1/events?event=m1", 404); !strings.Contains(body, `not about conversation \"x1\"`) || !strings.Contains(body, `"field":"event"`) {
		t.Fatalf("x1 by m1: %s", body)
	}
	if _, body := d.get("x1/events?event=nope", 404); !strings.Contains(body, `no event \"nope\"`) {
		t.Fatalf("x1 by nope: %s", body)
	}
}

// TestTimelineUnknown: unknown conversations and bad parameters are
// answered in words, whatever the id holds.
func TestTimelineUnknown(t *testing.T) {
	d := timelineScenario(t)
	for _, id := range []string{"nope", url.PathEscape("a/b"), url.PathEscape(`"quoted"<x>`), strings.Repeat("z", 200)} {
		if _, body := d.get(id+"/events", 404); !strings.Contains(body, "no conversation") {
			t.Errorf("%s: %s", id, body)
		}
	}
	// An event named like the conversation that did not open it: m3 is
	// a message of m2, so it is not a conversation.
	if _, body := d.get("m3/events", 404); !strings.Contains(body, "no conversation") {
		t.Errorf("m3: %s", body)
	}
	for q, field := range map[string]string{"after=-1": "after", "after=x": "after", "limit=0": "limit", "limit=1001": "limit"} {
		if _, body := d.get("m2/events?"+q, 400); !strings.Contains(body, `"field":"`+field+`"`) {
			t.Errorf("%s: %s", q, body)
		}
	}
}

// TestTimelinePages: a timeline pages with limit and after, and, when the
// log is longer than a window, reads a window at a time; the pages hold
// the whole timeline, once.
func TestTimelinePages(t *testing.T) {
	d := timelineScenario(t)
	whole, _ := d.get("m2/events", 200)
	want := whole.ids()

	tl, body := d.get("m2/events?limit=1", 200)
	if !slices.Equal(tl.ids(), want[:1]) || !tl.More || tl.Stopped != "limit" || tl.Next != tl.Events[0].Seq {
		t.Fatalf("first page of 1: %s", body)
	}
	tl, body = d.get("m2/events?limit=2&after="+itoa(tl.Next), 200)
	if !slices.Equal(tl.ids(), want[1:3]) || !tl.More || !tl.Earlier {
		t.Fatalf("second page of 2: %s", body)
	}
	if got, pages := d.all("m2/events?limit=1"); !slices.Equal(got, want) || pages != 5 {
		t.Fatalf("pages of 1: %v in %d pages, want %v", got, pages, want)
	}

	// A small window: each page reads at most that much of the log, and
	// says so; the pages still add up to the timeline.
	defer func(w int) { timelineWindow = w }(timelineWindow)
	timelineWindow = 3
	tl, body = d.get("m2/events", 200)
	if !tl.More || tl.Stopped != "window" || tl.Through-tl.From != 3 {
		t.Fatalf("a window of 3: %s", body)
	}
	if got, pages := d.all("m2/events"); !slices.Equal(got, want) || pages < 3 {
		t.Fatalf("windows of 3: %v in %d pages, want %v", got, pages, want)
	}
	if got, _ := d.all("x1/events?event=c2"); !slices.Contains(got, "c2") {
		t.Fatalf("x1 by its closing event, windows of 3: %v", got)
	}
}

// TestCloses: a conversation.updated event to closed closes the
// conversation for the timeline, as conversation.closed does; other
// updates do not.
func TestCloses(t *testing.T) {
	rec := func(typ, event string) store.Record {
		return store.Record{Type: typ, Event: []byte(event), Decision: []byte(`{"event":"x","conversation":"c1","actions":[]}`)}
	}
	for _, tc := range []struct {
		r    store.Record
		id   string
		want bool
	}{
		{rec("conversation.closed", `{"conversation":"c1"}`), "c1", true},
		{rec("conversation.updated", `{"conversation":"c1","status":"closed"}`), "c1", true},
		{rec("conversation.updated", `{"conversation":"c1","status":"snoozed"}`), "c1", false},
		{rec("conversation.updated", `{"conversation":"c1","tags":["a"]}`), "c1", false},
		{rec("conversation.closed", `{"conversation":"c1"}`), "c2", false},
	} {
		if got := closes(tc.r, tc.id); got != tc.want {
			t.Errorf("closes(%s %s, %s) = %v, want %v", tc.r.Type, tc.r.Event, tc.id, got, tc.want)
		}
	}
}
