package engine

import (
	"bytes"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/triggers"
)

// sameValue reports whether two attribute values are the same to a
// condition or a decision: times are the same instant in the same zone.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		y, ok := b.(time.Time)
		xn, xo := x.Zone()
		yn, yo := y.Zone()
		return ok && x.Equal(y) && xn == yn && xo == yo && (x.Location() == time.Local) == (y.Location() == time.Local)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case []string:
		y, ok := b.([]string)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) || (x == nil) != (y == nil) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	}
	return a == b
}

// TestSnapshotValues: every type an attribute can hold comes back as it
// was, and encodes to the same bytes again.
func TestSnapshotValues(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	at := time.Date(2026, 1, 5, 9, 30, 0, 123456789, time.UTC)
	values := []any{
		nil, true, false, 0, -7, 1 << 40, int64(-1) << 62, 0.0, 2.5, -1e300,
		"", "text", "é → \x00",
		at, at.In(time.Local), at.In(time.FixedZone("", 2*3600)), at.In(time.FixedZone("CET", 3600)), at.In(paris), time.Time{},
		time.Duration(0), 90 * time.Minute,
		[]any(nil), []any{}, []any{1, "a", nil, []any{2.5}, map[string]any{"x": at}},
		[]string(nil), []string{}, []string{"vip", ""},
		map[string]any(nil), map[string]any{}, map[string]any{"b": 1, "a": []string{"x"}, "c": map[string]any{"d": nil}},
	}
	for _, v := range values {
		var w encoder
		if err := w.value(v, 0); err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		d := decoder{b: w.b}
		back := d.value(0)
		if d.err != nil || d.off != len(w.b) {
			t.Fatalf("%#v: decoded with %v, %d of %d bytes", v, d.err, d.off, len(w.b))
		}
		if !sameValue(v, back) {
			t.Errorf("%#v came back as %#v", v, back)
		}
		var again encoder
		if err := again.value(back, 0); err != nil || !bytes.Equal(w.b, again.b) {
			t.Errorf("%#v: encodes to other bytes once restored (%v)", v, err)
		}
	}
	for _, v := range []any{[]int{1}, struct{}{}, new(int), map[string]string{}, uint(1)} {
		var w encoder
		if err := w.value(v, 0); err == nil {
			t.Errorf("%#v (%T) encoded; want an error", v, v)
		}
	}
}

// TestSnapshotAttrs: custom attributes from events and from set actions
// come back as they were.
func TestSnapshotAttrs(t *testing.T) {
	rs, ds := dsl.Build(dsl.Sources{
		Team: &dsl.Source{Name: "team.yaml", Text: []byte("agents:\n  - {id: a, status: online}\n")},
		Rules: []dsl.Source{{Name: "routing.rules", Text: []byte(`on incoming message -> set contact.attrs.now = now; set contact.attrs.at = message.at; set contact.attrs.d = duration("1h30m"); set contact.attrs.i = 3; set contact.attrs.f = 2.5; set contact.attrs.l = [1, 'a', nil]; set contact.attrs.m = {'k': true}; set contact.attrs.t = contact.tags; set contact.attrs.self = contact.attrs
`)}},
	})
	if rs == nil {
		t.Fatal(ds)
	}
	eng := New(rs, Options{})
	ev, err := triggers.DecodeEvent([]byte(`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00+02:00","channel":"sms","to":"x",
		"contact":{"id":"k1","tags":[],"attrs":{"plan":"pro","n":1.5,"ok":true,"none":null,"list":[1,"a",{"b":null}],"obj":{"x":[]}}},"message":{"text":"hi"}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.DecideAt(ev, time.Date(2026, 1, 5, 7, 0, 0, 0, time.UTC).Local()); err != nil {
		t.Fatal(err)
	}
	data, err := eng.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Restore(rs, data)
	if err != nil {
		t.Fatal(err)
	}
	want, got := eng.contacts.get("k1").attrs, back.contacts.get("k1").attrs
	if len(want) != 15 || !sameValue(want, got) {
		t.Errorf("attributes came back as\n%#v\nwant\n%#v", got, want)
	}
	if tags := back.contacts.get("k1").tags; tags == nil || len(tags) != 0 {
		t.Errorf("tags came back as %#v, want empty", tags)
	}
}
