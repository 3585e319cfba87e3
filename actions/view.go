package actions

import (
	"math/rand/v2"
	"sort"

	"github.com/switchboard-dev/switchboard/dsl"
)

// View indexes the members of a group that have a set of skills, for
// conversations of one cost. It is a segment tree over the members in group
// order: each node keeps how many members below it are eligible and, for
// each algorithm the view is asked for, the best of them. Picking is a walk
// down the tree. An algorithm's keys are built the first time the view is
// asked for it, so that a view pays on every change only for the
// algorithms its rules use.
type View struct {
	pool    *Pool
	group   *Group
	want    Want
	members []*Agent
	gpos    []int // each member's position in the group
	size    int   // leaves, a power of two
	count   []int32
	// keys holds one tree of keys per algorithm slot in use; nil for the
	// others. used lists the slots in use.
	keys [numSlots][]key
	used []slot
	key  viewKey
	// slot is each member's place in its agent's slots.
	slot []int32
	// other: the view of a channel no budget lists, kept while it is
	// among the channels used last (touched is its last use) or while
	// waiting work holds it (pins); dropped once let go, when it no
	// longer follows its members.
	other   bool
	touched uint64
	pins    int
	dropped bool
}

// leave takes the view out of its members' indexes: each agent's last
// slot takes its place.
func (v *View) leave() {
	for i, a := range v.members {
		j, last := v.slot[i], len(a.slots)-1
		if moved := a.slots[last]; int(j) != last {
			a.slots[j] = moved
			moved.view.slot[moved.leaf] = j
		}
		a.slots[last] = viewSlot{}
		a.slots = a.slots[:last]
	}
}

// key orders members for one algorithm: smaller is better. The last part
// is the member position, so ties go to member order.
type key struct {
	a, b int64
	pos  int32
}

func (k key) less(o key) bool {
	if k.a != o.a {
		return k.a < o.a
	}
	if k.b != o.b {
		return k.b < o.b
	}
	return k.pos < o.pos
}

var worst = key{a: 1<<63 - 1, b: 1<<63 - 1, pos: 1<<31 - 1}

// slot is an algorithm's tree of keys.
type slot uint8

const (
	slotIdle   slot = iota // longest idle: oldest activity first
	slotActive             // least active: fewest open, then longest idle
	slotAvail              // most available: most spare, then longest idle
	slotFair               // fair: assigned least recently, never first
	slotServed             // fewest served: fewest since coming online, then longest idle
	slotFree               // longest free: free the longest, never busy first
	numSlots
	noSlot slot = numSlots // round robin and random need only the counts
)

func slotOf(alg dsl.Algorithm) slot {
	switch alg {
	case dsl.LongestIdle:
		return slotIdle
	case dsl.LeastActive:
		return slotActive
	case dsl.MostAvailable:
		return slotAvail
	case dsl.Fair:
		return slotFair
	case dsl.FewestServed:
		return slotServed
	case dsl.LongestFree:
		return slotFree
	}
	return noSlot
}

func newView(p *Pool, g *Group, want Want) *View {
	v := &View{pool: p, group: g, want: want}
	for i, a := range g.Members {
		if a.HasSkills(want.Skills) {
			v.members = append(v.members, a)
			v.gpos = append(v.gpos, i)
		}
	}
	v.size = 1
	for v.size < len(v.members) {
		v.size *= 2
	}
	v.count = make([]int32, 2*v.size)
	v.slot = make([]int32, len(v.members))
	for i, a := range v.members {
		v.slot[i] = int32(len(a.slots))
		a.slots = append(a.slots, viewSlot{view: v, leaf: i})
		if v.eligible(a) {
			v.count[v.size+i] = 1
		}
	}
	for i := v.size - 1; i >= 1; i-- {
		v.count[i] = v.count[2*i] + v.count[2*i+1]
	}
	return v
}

// use builds the keys of an algorithm's slot, if not built yet.
func (v *View) use(s slot) {
	if s == noSlot || v.keys[s] != nil {
		return
	}
	t := make([]key, 2*v.size)
	for i := range t {
		t[i] = worst
	}
	v.keys[s] = t
	v.used = append(v.used, s)
	for i, a := range v.members {
		if v.eligible(a) {
			t[v.size+i] = v.leafKey(s, a, int32(i))
		}
	}
	for i := v.size - 1; i >= 1; i-- {
		t[i] = minKey(t[2*i], t[2*i+1])
	}
}

func (v *View) eligible(a *Agent) bool {
	w := &v.want
	return (a.Online() || w.Away && a.Away() || w.Offline) && !a.excluded && a.Fits(w.Cost, w.Channel) &&
		(w.Limit == 0 || !v.pool.Limited(a, w.Limit, w.Per))
}

// leafKey is a member's key for one algorithm.
func (v *View) leafKey(s slot, a *Agent, pos int32) key {
	idle := a.LastActive.UnixNano()
	if a.LastActive.IsZero() {
		idle = -1 << 62 // never active: first
	}
	switch s {
	case slotIdle:
		return key{a: idle, pos: pos}
	case slotActive:
		return key{a: int64(a.OpenOn(v.want.Channel)), b: idle, pos: pos}
	case slotAvail:
		return key{a: -a.Spare(v.want.Channel), b: idle, pos: pos}
	case slotFair:
		return key{a: int64(a.assigned), pos: pos}
	case slotServed:
		return key{a: int64(a.Served), b: idle, pos: pos}
	}
	var free int64
	switch f := a.FreeSince(); {
	case !a.Busy():
		free = -1 << 62 // never busy: first
	case f.IsZero():
		free = -1 << 61 // free since the start
	default:
		free = f.UnixNano()
	}
	return key{a: free, pos: pos}
}

func minKey(a, b key) key {
	if b.less(a) {
		return b
	}
	return a
}

func (v *View) update(leaf int) {
	a := v.members[leaf]
	i := v.size + leaf
	ok := v.eligible(a)
	if ok {
		v.count[i] = 1
	} else {
		v.count[i] = 0
	}
	for _, s := range v.used {
		if ok {
			v.keys[s][i] = v.leafKey(s, a, int32(leaf))
		} else {
			v.keys[s][i] = worst
		}
	}
	for i /= 2; i >= 1; i /= 2 {
		v.count[i] = v.count[2*i] + v.count[2*i+1]
		for _, s := range v.used {
			t := v.keys[s]
			t[i] = minKey(t[2*i], t[2*i+1])
		}
	}
}

// Eligible counts the members that could take a conversation now.
func (v *View) Eligible() int { return int(v.count[1]) }

// Members are the view's agents in group order.
func (v *View) Members() []*Agent { return v.members }

// Group is the group the view indexes.
func (v *View) Group() *Group { return v.group }

// Want is what the view indexes the group's members for.
func (v *View) Want() Want { return v.want }

func (v *View) pick(alg dsl.Algorithm, rng *rand.Rand) *Agent {
	n := v.count[1]
	if n == 0 {
		return nil
	}
	switch alg {
	case dsl.Random:
		return v.members[v.nth(int32(rng.IntN(int(n))))]
	}
	s := slotOf(alg)
	if s == noSlot { // round robin
		return v.members[v.nextAfter(v.group.last)]
	}
	v.use(s)
	return v.members[v.keys[s][1].pos]
}

// nth returns the leaf of the n-th (0-based) eligible member.
func (v *View) nth(n int32) int {
	i := 1
	for i < v.size {
		if l := v.count[2*i]; n < l {
			i = 2 * i
		} else {
			n -= l
			i = 2*i + 1
		}
	}
	return i - v.size
}

// nextAfter returns the leaf of the first eligible member after group
// position last, wrapping around to the start of the group.
func (v *View) nextAfter(last int) int {
	start := sort.SearchInts(v.gpos, last+1)
	if leaf := v.firstFrom(start); leaf >= 0 {
		return leaf
	}
	return v.firstFrom(0)
}

// firstFrom returns the first eligible leaf at or after from, or -1.
func (v *View) firstFrom(from int) int {
	if from >= len(v.members) {
		return -1
	}
	// Count the eligible leaves before from, then take the next one.
	before := int32(0)
	i, lo, hi := 1, 0, v.size
	for i < v.size {
		mid := (lo + hi) / 2
		if from < mid {
			i, hi = 2*i, mid
		} else {
			before += v.count[2*i]
			i, lo = 2*i+1, mid
		}
	}
	if before >= v.count[1] {
		return -1
	}
	return v.nth(before)
}
