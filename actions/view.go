package actions

import (
	"math/rand/v2"
	"sort"

	"github.com/switchboard-dev/switchboard/dsl"
)

// View indexes the members of a group that have a set of skills, for
// conversations of one cost. It is a segment tree over the members in group
// order: each node keeps how many members below it are eligible and, for
// each algorithm, the best of them. Picking is a walk down the tree.
type View struct {
	group   *Group
	skills  []string
	cost    dsl.Cost
	members []*Agent
	gpos    []int // each member's position in the group
	size    int   // leaves, a power of two
	tree    []node
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

type node struct {
	count  int32
	idle   key // longest idle: oldest activity first
	active key // least active: fewest open, then longest idle
	avail  key // most available: most spare, then longest idle
	fair   key // fair: assigned least recently, never first
	served key // fewest served: fewest since coming online, then longest idle
	free   key // longest free: free the longest, never busy first
}

var worstNode = node{idle: worst, active: worst, avail: worst, fair: worst, served: worst, free: worst}

func newView(g *Group, skills []string, cost dsl.Cost) *View {
	v := &View{group: g, skills: skills, cost: cost}
	for i, a := range g.Members {
		if a.HasSkills(skills) {
			v.members = append(v.members, a)
			v.gpos = append(v.gpos, i)
		}
	}
	v.size = 1
	for v.size < len(v.members) {
		v.size *= 2
	}
	v.tree = make([]node, 2*v.size)
	for i := range v.tree {
		v.tree[i] = worstNode
	}
	for i, a := range v.members {
		a.slots = append(a.slots, viewSlot{view: v, leaf: i})
		v.setLeaf(i)
	}
	for i := v.size - 1; i >= 1; i-- {
		v.pull(i)
	}
	return v
}

func (v *View) setLeaf(i int) {
	a := v.members[i]
	n := &v.tree[v.size+i]
	if !a.Online() || a.excluded || !a.Fits(v.cost) {
		*n = worstNode
		return
	}
	idle := a.LastActive.UnixNano()
	if a.LastActive.IsZero() {
		idle = -1 << 62 // never active: first
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
	pos := int32(i)
	*n = node{
		count:  1,
		idle:   key{a: idle, pos: pos},
		active: key{a: int64(a.Open), b: idle, pos: pos},
		avail:  key{a: -a.Spare(), b: idle, pos: pos},
		fair:   key{a: int64(a.assigned), pos: pos},
		served: key{a: int64(a.Served), b: idle, pos: pos},
		free:   key{a: free, pos: pos},
	}
}

func (v *View) pull(i int) {
	l, r := &v.tree[2*i], &v.tree[2*i+1]
	n := &v.tree[i]
	n.count = l.count + r.count
	n.idle = minKey(l.idle, r.idle)
	n.active = minKey(l.active, r.active)
	n.avail = minKey(l.avail, r.avail)
	n.fair = minKey(l.fair, r.fair)
	n.served = minKey(l.served, r.served)
	n.free = minKey(l.free, r.free)
}

func minKey(a, b key) key {
	if b.less(a) {
		return b
	}
	return a
}

func (v *View) update(leaf int) {
	v.setLeaf(leaf)
	for i := (v.size + leaf) / 2; i >= 1; i /= 2 {
		v.pull(i)
	}
}

// Eligible counts the members that could take a conversation now.
func (v *View) Eligible() int { return int(v.tree[1].count) }

// Members are the view's agents in group order.
func (v *View) Members() []*Agent { return v.members }

// Group is the group the view indexes.
func (v *View) Group() *Group { return v.group }

func (v *View) pick(alg dsl.Algorithm, rng *rand.Rand) *Agent {
	root := v.tree[1]
	if root.count == 0 {
		return nil
	}
	var k key
	switch alg {
	case dsl.Random:
		return v.members[v.nth(int32(rng.IntN(int(root.count))))]
	case dsl.LongestIdle:
		k = root.idle
	case dsl.LeastActive:
		k = root.active
	case dsl.MostAvailable:
		k = root.avail
	case dsl.Fair:
		k = root.fair
	case dsl.FewestServed:
		k = root.served
	case dsl.LongestFree:
		k = root.free
	default: // round robin
		return v.members[v.nextAfter(v.group.last)]
	}
	return v.members[k.pos]
}

// nth returns the leaf of the n-th (0-based) eligible member.
func (v *View) nth(n int32) int {
	i := 1
	for i < v.size {
		if l := v.tree[2*i].count; n < l {
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
			before += v.tree[2*i].count
			i, lo = 2*i+1, mid
		}
	}
	if before >= v.tree[1].count {
		return -1
	}
	return v.nth(before)
}
