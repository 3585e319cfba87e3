package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

// The snapshot's encoding: uvarints and varints (encoding/binary), strings
// as a length and their bytes, lists and maps as a count and their
// elements (a count of n+1, 0 for nil, where nil and empty differ to a
// condition or a decision), map keys in sorted order.

type encoder struct{ b []byte }

func (w *encoder) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *encoder) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *encoder) byte(v byte)   { w.b = append(w.b, v) }

func (w *encoder) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *encoder) str(s string) {
	w.uint(uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *encoder) float(f float64) { w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(f)) }

// count writes the length of a list or map that may be nil.
func (w *encoder) count(n int, isNil bool) {
	if isNil {
		w.uint(0)
	} else {
		w.uint(uint64(n) + 1)
	}
}

func (w *encoder) strs(list []string) {
	w.count(len(list), list == nil)
	for _, s := range list {
		w.str(s)
	}
}

// Times keep their instant and their zone: UTC, Local, or a zone's name
// and offset at that instant (restored as a fixed zone).
const (
	timeZero  = iota // the zero time
	timeUTC          // UTC
	timeLocal        // time.Local
	timeZone         // a zone name and offset
)

func (w *encoder) time(t time.Time) {
	loc := t.Location()
	switch {
	case loc == time.UTC && t.IsZero():
		w.byte(timeZero)
		return
	case loc == time.UTC:
		w.byte(timeUTC)
	case loc == time.Local:
		w.byte(timeLocal)
	default:
		name, offset := t.Zone()
		w.byte(timeZone)
		w.str(name)
		w.int(int64(offset))
	}
	w.int(t.Unix())
	w.uint(uint64(t.Nanosecond()))
}

// Value tags: the types a custom attribute can hold, from an event's JSON
// or from a set action's expression.
const (
	valNil = iota
	valFalse
	valTrue
	valInt
	valInt64
	valFloat
	valString
	valTime
	valDuration
	valList    // []any
	valStrings // []string
	valMap     // map[string]any
)

// maxDepth bounds the nesting of a value, and so its recursion: a map that
// holds itself is an error, not a crash.
const maxDepth = 64

func (w *encoder) value(v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("values nested more than %d deep (a value that holds itself?)", maxDepth)
	}
	switch x := v.(type) {
	case nil:
		w.byte(valNil)
	case bool:
		if x {
			w.byte(valTrue)
		} else {
			w.byte(valFalse)
		}
	case int:
		w.byte(valInt)
		w.int(int64(x))
	case int64:
		w.byte(valInt64)
		w.int(x)
	case float64:
		w.byte(valFloat)
		w.float(x)
	case string:
		w.byte(valString)
		w.str(x)
	case time.Time:
		w.byte(valTime)
		w.time(x)
	case time.Duration:
		w.byte(valDuration)
		w.int(int64(x))
	case []any:
		w.byte(valList)
		w.count(len(x), x == nil)
		for _, e := range x {
			if err := w.value(e, depth+1); err != nil {
				return err
			}
		}
	case []string:
		w.byte(valStrings)
		w.strs(x)
	case map[string]any:
		w.byte(valMap)
		return w.valueMap(x, depth)
	default:
		return fmt.Errorf("a value of type %T, which a snapshot cannot hold", v)
	}
	return nil
}

func (w *encoder) valueMap(m map[string]any, depth int) error {
	w.count(len(m), m == nil)
	if len(m) == 0 {
		return nil
	}
	write := func(k string) error {
		w.str(k)
		if err := w.value(m[k], depth+1); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return nil
	}
	if len(m) == 1 {
		for k := range m {
			return write(k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := write(k); err != nil {
			return err
		}
	}
	return nil
}

// decoder reads what an encoder wrote. The first problem sticks: later
// reads return zero values, and err says what was wrong. No input makes it
// panic or allocate more than the input could hold.
type decoder struct {
	b []byte
	// text, when set, is b as a string: strings are parts of it, so that
	// reading them allocates nothing (a million contacts' names would take
	// a million allocations).
	text  string
	off   int
	err   error
	zones map[zone]*time.Location
	// replies are the held replies read so far (see reply).
	replies []*dsl.Reply
	// format is the snapshot's format version.
	format uint32
	// syms remembers interned values by a hash of their text.
	syms [256]sym
}

type zone struct {
	name   string
	offset int
}

var errTruncated = errors.New("data ends too early")

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("at byte %d: %s", d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.off += n
	return v
}

// small reads a non-negative int.
func (d *decoder) small() int {
	v := d.uint()
	if v > math.MaxInt {
		d.fail("number %d out of range", v)
		return 0
	}
	return int(v)
}

// intv reads a varint that fits an int.
func (d *decoder) intv() int {
	v := d.int()
	if int64(int(v)) != v {
		d.fail("number %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("%v", errTruncated)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad boolean")
	return false
}

// bytes returns the next n bytes, a part of the input.
func (d *decoder) bytes() []byte {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("%v", errTruncated)
		return nil
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v
}

func (d *decoder) str() string {
	b := d.bytes()
	switch {
	case len(b) == 0:
		return ""
	case len(d.text) == len(d.b):
		return d.text[d.off-len(b) : d.off]
	}
	return string(b)
}

// sym reads an interned string. Few values are interned (languages,
// countries, agent ids), so most are found in d.syms.
func (d *decoder) sym() sym {
	b := d.bytes()
	if len(b) == 0 {
		return sym{}
	}
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &d.syms[h%uint32(len(d.syms))]
	if slot.String() != string(b) {
		*slot = intern(string(b))
	}
	return *slot
}

func (d *decoder) float() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.off < 8 {
		d.fail("%v", errTruncated)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off:]))
	d.off += 8
	return v
}

// count reads the length of a list or map whose elements take at least one
// byte each; isNil for a nil one.
func (d *decoder) count() (n int, isNil bool) {
	v := d.uint()
	if d.err != nil || v == 0 {
		return 0, d.err == nil
	}
	if v-1 > uint64(len(d.b)-d.off) {
		d.fail("%d elements in %d bytes", v-1, len(d.b)-d.off)
		return 0, false
	}
	return int(v - 1), false
}

// length reads the number of elements of a list that cannot be nil.
func (d *decoder) length() int {
	v := d.uint()
	if v > uint64(len(d.b)-d.off) {
		d.fail("%d elements in %d bytes", v, len(d.b)-d.off)
		return 0
	}
	return int(v)
}

func (d *decoder) strs() []string {
	n, isNil := d.count()
	if isNil {
		return nil
	}
	list := make([]string, n)
	for i := range list {
		list[i] = d.str()
	}
	return list
}

func (d *decoder) time() time.Time {
	var loc *time.Location
	switch tag := d.byte(); tag {
	case timeZero:
		return time.Time{}
	case timeUTC:
		loc = time.UTC
	case timeLocal:
		loc = time.Local
	case timeZone:
		z := zone{name: string(d.bytes()), offset: d.intv()}
		if loc = d.zones[z]; loc == nil {
			loc = time.FixedZone(z.name, z.offset)
			if d.zones == nil {
				d.zones = map[zone]*time.Location{}
			}
			d.zones[z] = loc
		}
	default:
		d.fail("bad time")
		return time.Time{}
	}
	sec, nsec := d.int(), d.uint()
	if nsec >= 1e9 {
		d.fail("bad time")
	}
	if d.err != nil {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).In(loc)
}

func (d *decoder) value(depth int) any {
	if depth > maxDepth {
		d.fail("values nested more than %d deep", maxDepth)
		return nil
	}
	switch tag := d.byte(); tag {
	case valNil:
		return nil
	case valFalse:
		return false
	case valTrue:
		return true
	case valInt:
		v := d.int()
		if int64(int(v)) != v {
			d.fail("int out of range")
		}
		return int(v)
	case valInt64:
		return d.int()
	case valFloat:
		return d.float()
	case valString:
		return d.str()
	case valTime:
		return d.time()
	case valDuration:
		return time.Duration(d.int())
	case valList:
		n, isNil := d.count()
		if isNil {
			return []any(nil)
		}
		list := make([]any, n)
		for i := range list {
			list[i] = d.value(depth + 1)
		}
		return list
	case valStrings:
		return d.strs()
	case valMap:
		return d.valueMap(depth)
	default:
		d.fail("bad value tag %d", tag)
		return nil
	}
}

func (d *decoder) valueMap(depth int) map[string]any {
	n, isNil := d.count()
	if isNil {
		return nil
	}
	m := make(map[string]any, n)
	prev := ""
	for i := range n {
		k := d.str()
		if i > 0 && k <= prev {
			d.fail("map keys out of order")
		}
		prev = k
		m[k] = d.value(depth + 1)
		if d.err != nil {
			return nil
		}
	}
	return m
}
