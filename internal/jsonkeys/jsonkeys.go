package jsonkeys

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// Error is a key the document must not have: Path names it ("contact.ID",
// "attrs.tier", "items[2].id"), Message says what is wrong with it.
type Error struct {
	Path    string
	Message string

	segs []string // innermost first, while the walk unwinds
}

func (e *Error) Error() string { return fmt.Sprintf("field %q: %s", e.Path, e.Message) }

// A Checker checks documents meant for one Go type.
type Checker struct{ shape *shape }

// For returns the Checker of documents decoded into values of type t,
// built once per type.
func For(t reflect.Type) *Checker {
	if c, ok := checkers.Load(t); ok {
		return c.(*Checker)
	}
	c, _ := checkers.LoadOrStore(t, &Checker{build(t, map[reflect.Type]*shape{})})
	return c.(*Checker)
}

var checkers sync.Map // reflect.Type → *Checker

// Check reports the first key of data, a JSON document that a decoder
// has accepted, that the decoder matched by case alone or that its object
// gives twice. It reads nothing else: a document that is not JSON is the
// decoder's to refuse, and passes here.
func (c *Checker) Check(data []byte) error {
	w := walker{data: data}
	_, err := w.value(0, c.shape, 0)
	if err == nil {
		return nil
	}
	var b strings.Builder
	for i := len(err.segs) - 1; i >= 0; i-- {
		s := err.segs[i]
		if b.Len() > 0 && !strings.HasPrefix(s, "[") {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	err.Path, err.segs = b.String(), nil
	return err
}

// maxDepth is how deeply Check follows nested values; a document nested
// deeper is refused, as no Switchboard document is.
const maxDepth = 10000

type kind uint8

const (
	anyKind    kind = iota // free-form: any keys, each once
	structKind             // a struct's fields, by their exact names
	mapKind                // any keys, each once, values of elem's shape
	sliceKind              // elements of elem's shape
)

// shape is what a Go type expects of the JSON that fills it.
type shape struct {
	kind   kind
	fields []field // structKind
	elem   *shape
}

// field is a struct field by its JSON name. A struct's fields are few:
// found faster in a slice than in a map.
type field struct {
	name  string
	shape *shape
}

var (
	anyShape    = &shape{}
	unmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textual     = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func build(t reflect.Type, seen map[reflect.Type]*shape) *shape {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := seen[t]; ok {
		return s
	}
	if p := reflect.PointerTo(t); p.Implements(unmarshaler) || p.Implements(textual) {
		return anyShape // it reads itself
	}
	s := &shape{}
	seen[t] = s
	switch t.Kind() {
	case reflect.Struct:
		s.kind = structKind
		addFields(s, t, seen)
	case reflect.Map:
		s.kind, s.elem = mapKind, build(t.Elem(), seen)
	case reflect.Slice, reflect.Array:
		s.kind, s.elem = sliceKind, build(t.Elem(), seen)
	}
	return s
}

// addFields adds the fields of struct t to s by the names encoding/json
// gives them: the tag's, or the Go name; embedded structs' fields as if
// they were t's own.
func addFields(s *shape, t reflect.Type, seen map[reflect.Type]*shape) {
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				addFields(s, et, seen)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.fields = append(s.fields, field{name, build(f.Type, seen)})
	}
}

type walker struct{ data []byte }

// value walks the value at i and returns the index after it.
func (w *walker) value(i int, s *shape, depth int) (int, *Error) {
	i = w.space(i)
	if i >= len(w.data) {
		return i, nil
	}
	if depth > maxDepth {
		return len(w.data), &Error{Message: fmt.Sprintf("nested more than %d deep", maxDepth)}
	}
	switch w.data[i] {
	case '{':
		return w.object(i+1, s, depth)
	case '[':
		return w.array(i+1, s, depth)
	case '"':
		return w.str(i + 1), nil
	}
	for ; i < len(w.data); i++ {
		switch w.data[i] {
		case ',', ']', '}', ' ', '\t', '\r', '\n':
			return i, nil
		}
	}
	return i, nil
}

// smallObject is how many keys an object may have before their
// uniqueness is checked with a map rather than by comparing each pair.
const smallObject = 16

func (w *walker) object(i int, s *shape, depth int) (int, *Error) {
	var small [smallObject][]byte
	keys := small[:0]
	var many map[string]bool
	for {
		i = w.space(i)
		if i >= len(w.data) {
			return i, nil
		}
		switch w.data[i] {
		case '}':
			return i + 1, nil
		case ',':
			i++
			continue
		case '"':
		default:
			return len(w.data), nil // not JSON: the decoder's to say
		}
		end := w.str(i + 1)
		name := w.data[i+1 : max(i+1, end-1)]
		if bytes.IndexByte(name, '\\') >= 0 {
			var u string
			if json.Unmarshal(w.data[i:end], &u) != nil {
				return len(w.data), nil
			}
			name = []byte(u)
		}
		if many == nil && len(keys) < smallObject {
			for _, k := range keys {
				if bytes.Equal(k, name) {
					return len(w.data), &Error{Message: "given twice: give each field once", segs: []string{string(name)}}
				}
			}
			keys = append(keys, name)
		} else {
			if many == nil {
				many = make(map[string]bool, 2*smallObject)
				for _, k := range keys {
					many[string(k)] = true
				}
			}
			if many[string(name)] {
				return len(w.data), &Error{Message: "given twice: give each field once", segs: []string{string(name)}}
			}
			many[string(name)] = true
		}
		child := anyShape
		switch s.kind {
		case structKind:
			if child = s.field(name); child == nil {
				return len(w.data), &Error{Message: s.unknown(string(name)), segs: []string{string(name)}}
			}
		case mapKind:
			child = s.elem
		}
		if i = w.space(end); i >= len(w.data) || w.data[i] != ':' {
			return len(w.data), nil
		}
		i++
		var err *Error
		if i, err = w.value(i, child, depth+1); err != nil {
			err.segs = append(err.segs, string(name))
			return i, err
		}
	}
}

// field is the shape of the field named name exactly, or nil.
func (s *shape) field(name []byte) *shape {
	for i := range s.fields {
		if s.fields[i].name == string(name) {
			return s.fields[i].shape
		}
	}
	return nil
}

// unknown says what is wrong with a key that names none of s's fields.
func (s *shape) unknown(key string) string {
	for _, f := range s.fields {
		if strings.EqualFold(f.name, key) {
			return fmt.Sprintf("names are case-sensitive: write %q", f.name)
		}
	}
	return "unknown field"
}

func (w *walker) array(i int, s *shape, depth int) (int, *Error) {
	elem := anyShape
	if s.kind == sliceKind {
		elem = s.elem
	}
	for n := 0; ; {
		i = w.space(i)
		if i >= len(w.data) {
			return i, nil
		}
		switch w.data[i] {
		case ']':
			return i + 1, nil
		case ',':
			i++
			n++
			continue
		}
		var err *Error
		if i, err = w.value(i, elem, depth+1); err != nil {
			err.segs = append(err.segs, fmt.Sprintf("[%d]", n))
			return i, err
		}
	}
}

// str returns the index after the string whose text starts at i.
func (w *walker) str(i int) int {
	for i < len(w.data) {
		switch w.data[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
	return len(w.data)
}

func (w *walker) space(i int) int {
	for i < len(w.data) {
		switch w.data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// LoneSurrogate is the offset in data of the first \u escape that names
// half of a UTF-16 surrogate pair without the other half (\ud800 alone, as
// a string cut in the middle of an emoji gives), or -1. A JSON decoder
// turns each into U+FFFD, so two different ids would become one.
func LoneSurrogate(data []byte) int {
	if bytes.IndexByte(data, '\\') < 0 {
		return -1
	}
	high := -1 // the offset of a high half waiting for its low half
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			if high >= 0 {
				return high
			}
			continue
		}
		if i+1 >= len(data) {
			break
		}
		r, ok := rune(-1), false
		if data[i+1] == 'u' && i+6 <= len(data) {
			if v, err := strconv.ParseUint(string(data[i+2:i+6]), 16, 16); err == nil {
				r, ok = rune(v), true
			}
		}
		switch {
		case ok && r >= 0xD800 && r < 0xDC00:
			if high >= 0 {
				return high
			}
			high = i
		case ok && r >= 0xDC00 && r < 0xE000:
			if high < 0 {
				return i
			}
			high = -1
		case high >= 0:
			return high
		}
		if ok {
			i += 5
		} else {
			i++ // the escaped character
		}
	}
	return high
}
