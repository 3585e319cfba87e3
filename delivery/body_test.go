package delivery

import (
	"encoding/json"
	"testing"
	"time"
)

// The hand-written CloudEvent is what encoding/json makes of CloudEvent.
func TestCloudEventBody(t *testing.T) {
	at := time.Date(2026, 1, 5, 9, 0, 0, 123456789, time.FixedZone("X", 3600))
	for _, tc := range []struct{ source, subject string }{
		{"switchboard", "c1"},
		{"https://sb.example.com/a?b=<c>&d", ""},
		{"quote\"back\\slash\ttab\u00e9\u2028", "é \"x\""},
	} {
		data := []byte(`{"event":"e1","conversation":"c1","actions":[]}`)
		got := cloudEvent(TypeDecision, tc.source, "sb-1-0", tc.subject, at, 12, data)
		want := marshal(CloudEvent{SpecVersion: "1.0", Type: TypeDecision, Source: tc.source, ID: "sb-1-0", Time: at.UTC(),
			Subject: tc.subject, DataContentType: "application/json", Sequence: "12", Data: data})
		if string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
		if !json.Valid(got) {
			t.Errorf("not JSON: %s", got)
		}
	}
}
