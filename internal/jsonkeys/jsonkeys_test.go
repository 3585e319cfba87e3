package jsonkeys

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	ID    string         `json:"id"`
	Attrs map[string]any `json:"attrs,omitempty"`
}

type Embedded struct {
	Extra string `json:"extra"`
}

type doc struct {
	Embedded
	ID       string    `json:"id"`
	At       time.Time `json:"at"`
	Who      *inner    `json:"who,omitempty"`
	Items    []inner   `json:"items"`
	Note     string    // untagged: its Go name
	Skipped  string    `json:"-"`
	Raw      json.RawMessage
	Free     any              `json:"free"`
	Children map[string]inner `json:"children"`
}

func TestCheck(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"id":"a","at":"2026-01-01T00:00:00Z","who":{"id":"b","attrs":{"Tier":1,"tier":2}}}`, ""},
		{`{"extra":"x","Note":"n","Raw":{"a":1,"A":2},"free":[{"x":1},{"X":2}]}`, ""},
		{`{"children":{"a":{"id":"1"},"A":{"id":"2"}}}`, ""},
		{`{"id":"a","id":"b"}`, `field "id": given twice: give each field once`},
		{`{"ID":"a"}`, `field "ID": names are case-sensitive: write "id"`},
		{`{"note":"n"}`, `field "note": names are case-sensitive: write "Note"`},
		{`{"Extra":"x"}`, `field "Extra": names are case-sensitive: write "extra"`},
		{`{"who":{"Id":"b"}}`, `field "who.Id": names are case-sensitive: write "id"`},
		{`{"who":{"id":"b","attrs":{"tier":1,"tier":2}}}`, `field "who.attrs.tier": given twice: give each field once`},
		{`{"items":[{"id":"a"},{"id":"b","id":"c"}]}`, `field "items[1].id": given twice: give each field once`},
		{`{"free":{"a":[1,{"k":1,"k":2}]}}`, `field "free.a[1].k": given twice: give each field once`},
		{`{"children":{"x":{"iD":"1"}}}`, `field "children.x.iD": names are case-sensitive: write "id"`},
		{`{"Raw":{"a":{"b":1,"b":2}}}`, `field "Raw.a.b": given twice: give each field once`},
		// Escapes are read as the decoder reads them.
		{`{"i\u0064":"a","id":"b"}`, `field "id": given twice: give each field once`},
		{`{"\u0049D":"a"}`, `field "ID": names are case-sensitive: write "id"`},
		{`{"who":{"attrs":{"a\"b":1,"a\"b":2}}}`, `field "who.attrs.a\"b": given twice: give each field once`},
		// Equal folded but not equal: the decoders match the Kelvin sign
		// to k, and the long s to s.
		{`{"who":{"attrs":{"k":1}},"Skipped":"x"}`, `field "Skipped": unknown field`},
		// Not JSON: left to the decoder.
		{`{"id":`, ""},
		{`{"id" "a", "id": "b"`, ""},
		{``, ""},
	} {
		err := For(reflect.TypeFor[doc]()).Check([]byte(c.in))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("Check(%s):\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

// TestCheckFolding: keys the decoders match by Unicode folding (the Kelvin
// sign for k, the long s for s) are named as case mismatches too.
func TestCheckFolding(t *testing.T) {
	type kv struct {
		K string `json:"k"`
		S string `json:"s"`
	}
	for _, in := range []string{"{\"\u212a\":\"x\"}", "{\"\u017f\":\"x\"}"} {
		var v kv
		if err := json.Unmarshal([]byte(in), &v); err != nil || v == (kv{}) {
			t.Fatalf("encoding/json no longer folds %s: %v %+v", in, err, v)
		}
		err := For(reflect.TypeFor[kv]()).Check([]byte(in))
		if err == nil || !strings.Contains(err.Error(), "case-sensitive") {
			t.Errorf("Check(%s) = %v, want a case mismatch", in, err)
		}
	}
}

// TestCheckManyKeys: an object with many keys is checked in linear time,
// and a duplicate far into it is found.
func TestCheckManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"who":{"id":"x","attrs":{`)
	for i := range 200000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%04d":1`, i)
	}
	b.WriteString(`,"k0007":2}}}`)
	err := For(reflect.TypeFor[doc]()).Check([]byte(b.String()))
	if err == nil || err.Error() != `field "who.attrs.k0007": given twice: give each field once` {
		t.Fatalf("got %v", err)
	}
}

// TestCheckDeep: nesting is followed to a bound, not to the end of the
// stack.
func TestCheckDeep(t *testing.T) {
	in := `{"free":` + strings.Repeat("[", maxDepth+10) + strings.Repeat("]", maxDepth+10) + `}`
	err := For(reflect.TypeFor[doc]()).Check([]byte(in))
	if err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkCheck(b *testing.B) {
	in := []byte(`{"id":"e1","extra":"message.received","at":"2026-01-01T00:00:00Z","who":{"id":"k1","attrs":{"tier":"gold","vip":true}},"items":[{"id":"a"}],"free":{"x":[1,2,3]}}`)
	c := For(reflect.TypeFor[doc]())
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Check(in); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzCheck: on any JSON document, read as free-form, Check finds a key
// given twice exactly when encoding/json's tokens show one.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `[{"a":{"b":[1,{"c":1,"c":2}]}}]`, `{"a\u0062":1,"ab":2}`, `{"a":"\"","b":"\\"}`, `"x"`, `{"A":1,"a":2}`} {
		f.Add(s)
	}
	free := For(reflect.TypeFor[any]())
	f.Fuzz(func(t *testing.T, in string) {
		if !json.Valid([]byte(in)) {
			return
		}
		want := hasDuplicate(t, in)
		err := free.Check([]byte(in))
		if got := err != nil; got != want {
			t.Fatalf("Check(%q) = %v, want a duplicate: %v", in, err, want)
		}
	})
}

// hasDuplicate says whether an object of valid JSON gives a key twice,
// from encoding/json's tokens.
func hasDuplicate(t *testing.T, in string) bool {
	dec := json.NewDecoder(strings.NewReader(in))
	type frame struct {
		keys  map[string]bool
		isObj bool
		key   bool // the next string is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				if top != nil && top.isObj {
					top.key = true
				}
				stack = append(stack, &frame{keys: map[string]bool{}, isObj: true, key: true})
			case '[':
				if top != nil && top.isObj {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top == nil || !top.isObj {
			continue
		}
		if top.key {
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k], top.key = true, false
		} else {
			top.key = true
		}
	}
}
