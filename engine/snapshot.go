package engine

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
)

// A snapshot is the engine's whole live state, so that a service restarts
// from its newest snapshot and the tail of its log rather than from the
// whole log, and explains an old event from the nearest snapshot before it.
//
// Format (version 1): a header, then the body.
//
//	header  "SWBSNAP\x00", the format version and the CRC-32C (Castagnoli)
//	        of the body, each a little-endian uint32
//	body    the rule set version and seed; the clock, the reported time and
//	        the sequence counter; the random source; each agent (team.yaml
//	        order): status, load, open conversations, last activity,
//	        assignments and peak load; each group's round-robin turn; the
//	        waiting totals; each contact, in the order they came; each open
//	        conversation by id, with its place in a waiting line; each live
//	        unanswered timer, in the order they fire
//
// The same state gives the same bytes: conversations and custom
// attributes are written in the order of their ids and names, contacts in
// the order the events brought them, which replaying the same events
// gives and a restored engine keeps. (That is also the order they lie in
// memory: a million contacts are written in a fraction of the time they
// would take in the order of their ids.) What the engine keeps only to go
// faster (free lists, indexes, caches) is not in it.

// SnapshotFormat is the version of the snapshot format this build writes
// and reads.
//
// 2: a reply held for a waiting conversation keeps the rule that made it.
// 3: each agent's turns (fair, fewest_served, longest_free).
// 4: each conversation's status, custom attributes, previous agent and
// assignee group; the closed conversations kept for reopening; agents'
// statuses by name (team.yaml's own statuses); waiting work's including
// away.
// 5: each agent's latest assignment times (fairness limits); waiting
// work's channel, fairness limit, offer time and excluded agents.
// 6: offers in flight, each conversation's excluded agents, each agent's
// declined and missed offers, and the assign that queued waiting work
// offered when placed.
// 7: the notifications held for waiting work (notify agent while it
// waits for one).
// 8: each conversation's inactive clock and whether its capacity is
// released; the inactive rules' timers.
// Formats 1 to 7 are still read.
const SnapshotFormat = 8

const (
	snapshotMagic  = "SWBSNAP\x00"
	snapshotHeader = len(snapshotMagic) + 8
)

var (
	// ErrSnapshotFormat is wrapped by Restore's error when the data is not
	// a snapshot of the format this build reads: another version, or not a
	// snapshot at all. Replaying the log instead is the way out.
	ErrSnapshotFormat = errors.New("not a snapshot this version of switchboard reads")
	// ErrSnapshotCorrupt is wrapped by Restore's error when the data fails
	// its checksum or does not decode.
	ErrSnapshotCorrupt = errors.New("corrupt snapshot")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot encodes the engine's whole live state. The same state gives the
// same bytes. It fails, changing nothing, when a contact's custom
// attribute holds a value no snapshot can hold (see [Engine.AppendSnapshot]).
func (e *Engine) Snapshot() ([]byte, error) {
	return e.AppendSnapshot(make([]byte, 0, e.snapshotSize()))
}

// AppendSnapshot appends the snapshot to dst. Custom attributes may hold
// nil, bools, ints, int64s, float64s, strings, time.Times,
// time.Durations, []any, []string and map[string]any (what an event's JSON
// or a set action's expression gives); any other type is an error naming
// the contact and the attribute.
func (e *Engine) AppendSnapshot(dst []byte) ([]byte, error) {
	start := len(dst)
	w := encoder{b: append(dst, snapshotMagic...)}
	w.b = binary.LittleEndian.AppendUint32(w.b, SnapshotFormat)
	w.b = append(w.b, 0, 0, 0, 0) // the checksum, once the body is written
	body := len(w.b)
	if err := e.encode(&w); err != nil {
		return dst, err
	}
	binary.LittleEndian.PutUint32(w.b[body-4:], crc32.Checksum(w.b[body:], castagnoli))
	e.lastSnapshot = len(w.b) - start
	return w.b, nil
}

// snapshotSize guesses the size of the next snapshot.
func (e *Engine) snapshotSize() int {
	return max(e.lastSnapshot+e.lastSnapshot/8, 64*e.contacts.len()+128*len(e.convs)+1024)
}

func (e *Engine) encode(w *encoder) error {
	w.str(e.rs.Version)
	w.uint(e.seed)
	w.time(e.clock)
	w.time(e.reported)
	w.uint(e.seq)
	w.str(string(e.pool.RandState()))

	w.uint(uint64(len(e.pool.Agents)))
	for _, a := range e.pool.Agents {
		w.str(a.ID)
		w.str(a.Status)
		w.int(a.Load)
		w.int(int64(a.Open))
		w.time(a.LastActive)
		w.uint(uint64(a.Declined))
		w.uint(uint64(a.Missed))
		w.uint(uint64(a.MissedInARow))
		st := e.stats.agents[a]
		w.uint(uint64(st.assigned))
		w.int(st.peak)
		turns := e.pool.Turns(a)
		w.uint(turns.Assigned)
		w.uint(uint64(turns.Served))
		w.time(turns.Finished)
		w.time(turns.OnlineSince)
		recent := e.pool.Recent(a)
		w.uint(uint64(len(recent)))
		for _, t := range recent {
			w.time(t)
		}
	}
	w.uint(e.pool.Assignments())
	w.uint(uint64(len(e.pool.Groups)))
	for _, g := range e.pool.Groups {
		w.str(g.Name)
		w.int(int64(g.LastTurn()))
	}
	w.uint(uint64(e.stats.waited))
	w.int(int64(e.stats.waitTotal))
	w.int(int64(e.stats.waitMax))

	// Contacts, in the order they came.
	w.uint(uint64(e.contacts.len()))
	for _, chunk := range e.contacts.chunks {
		for i := range chunk {
			c := &chunk[i]
			w.str(c.id)
			w.str(c.name)
			w.str(c.email)
			w.str(c.phone)
			w.str(c.lang.String())
			w.str(c.country.String())
			w.str(c.owner.String())
			w.str(c.lastSender.String())
			w.strs(c.tags)
			if err := w.valueMap(c.attrs, 0); err != nil {
				return fmt.Errorf("contact %s: attribute %w", c.id, err)
			}
			w.uint(uint64(c.conversations))
		}
	}

	convs := slices.SortedFunc(maps.Values(e.convs), func(a, b *conversation) int { return strings.Compare(a.id, b.id) })
	w.uint(uint64(len(convs)))
	for _, c := range convs {
		if err := e.encodeConversation(w, c); err != nil {
			return err
		}
	}
	// Closed conversations kept for reopening, contact by contact in the
	// order they came, each contact's in its own order.
	var kept []*conversation
	for _, chunk := range e.contacts.chunks {
		for i := range chunk {
			for v := chunk[i].closed; v != nil; v = v.nextOpen {
				kept = append(kept, v)
			}
		}
	}
	w.uint(uint64(len(kept)))
	for _, c := range kept {
		if err := e.encodeConversation(w, c); err != nil {
			return err
		}
		w.time(c.closedAt)
	}

	// Live timers only, in the order they fire.
	var timers []*timer
	for _, t := range e.timers {
		if t.live() {
			timers = append(timers, t)
		}
	}
	slices.SortFunc(timers, func(a, b *timer) int {
		return cmp.Or(a.due.Compare(b.due), cmp.Compare(a.batch, b.batch), cmp.Compare(a.order, b.order))
	})
	w.uint(uint64(len(timers)))
	for _, t := range timers {
		w.time(t.due)
		w.str(t.conv.id)
		w.uint(uint64(t.streak))
		w.uint(uint64(e.ruleOrder[t.rule]))
		w.uint(uint64(t.order))
		w.uint(t.batch)
	}
	return nil
}

// Conversation flags.
const (
	convContactNew = 1 << iota // the contact had no earlier conversation
	convOpen                   // the contact's open one on its channel and to
	convWaiting                // in a waiting line
)

// convStatuses are the conversation statuses as a snapshot numbers them.
var convStatuses = []string{StatusOpen, StatusPending, StatusSnoozed, StatusClosed}

func (e *Engine) encodeConversation(w *encoder, c *conversation) error {
	w.str(c.id)
	w.str(c.contact.id)
	w.str(c.channel)
	w.str(c.to)
	var flags byte
	if c.contactNew {
		flags |= convContactNew
	}
	if c.contact.isOpen(c) {
		flags |= convOpen
	}
	if c.waiting != nil {
		flags |= convWaiting
	}
	w.byte(flags)
	w.time(c.createdAt)
	w.int(int64(c.priority))
	w.count(len(c.tags), len(c.tags) == 0) // no tags are nil to conditions
	for _, t := range c.tags {
		w.str(t)
	}
	w.uint(agentRef(c.assignee))
	w.int(c.load)
	w.str(c.queue)
	w.time(c.waitingSince)
	w.uint(uint64(c.streak))
	w.str(c.lastMessage.ID)
	w.str(c.lastMessage.Text)
	w.str(c.lastMessage.Lang)
	w.uint(c.batch)
	w.byte(byte(slices.Index(convStatuses, c.status)))
	if err := w.valueMap(c.attrs, 0); err != nil {
		return fmt.Errorf("conversation %s: attribute %w", c.id, err)
	}
	w.str(c.previous.String())
	w.str(c.group)
	w.bool(c.held)
	w.time(c.quietSince)
	w.uint(c.quietBatch)
	w.bool(c.released)
	e.encodeOffer(w, c)
	if wt := c.waiting; wt != nil {
		w.str(wt.Rule)
		w.int(int64(wt.Priority))
		w.time(wt.Since)
		w.uint(wt.Seq)
		if wt.Group != nil {
			w.uint(uint64(slices.Index(e.pool.Groups, wt.Group)) + 1)
		} else {
			w.uint(0)
		}
		w.uint(agentRef(wt.Agent))
		w.str(string(wt.Algorithm))
		w.float(wt.Cost.Units)
		w.float(wt.Cost.Percent)
		w.count(len(wt.Skills), len(wt.Skills) == 0)
		for _, s := range wt.Skills {
			w.str(s)
		}
		w.bool(wt.EvenIfOffline)
		w.bool(wt.IncludingAway)
		w.uint(agentRef(wt.Except))
		w.str(wt.Channel)
		w.uint(uint64(wt.Limit))
		w.int(int64(wt.Per))
		w.int(int64(wt.Offer))
		w.uint(uint64(len(wt.Excluded)))
		for _, a := range wt.Excluded {
			w.uint(agentRef(a))
		}
		w.bool(wt.Offer > 0)
		if wt.Offer > 0 {
			e.encodeAssign(w, wt.Rule, e.assignOf(wt))
		}
		// The reply held for when the work is placed, and the
		// notifications.
		encodeReply(w, wt.Then, wt.ThenRule)
		w.uint(uint64(len(wt.Notify)))
		for _, h := range wt.Notify {
			encodeNotify(w, h)
		}
	}
	return nil
}

// statusCodes are the agent statuses as snapshots before format 4
// numbered them.
var statusCodes = []string{dsl.StatusOnline, dsl.StatusAway, dsl.StatusOffline}

// agentRef is an agent's position in the pool plus one; 0 for none.
func agentRef(a *actions.Agent) uint64 {
	if a == nil {
		return 0
	}
	return uint64(a.Index) + 1
}

// live reports whether the timer can still fire: its conversation is open
// and unanswered in the same streak. A dead timer never comes back to life.
// (An inactive rule's timer leaves the heap when its clock stops, so it is
// live while it is there.)
func (t *timer) live() bool {
	c := t.conv
	if t.quiet() {
		return c.status != StatusClosed
	}
	return c.status == StatusOpen && c.streak == t.streak && !c.waitingSince.IsZero()
}

// Restore builds an engine for rs in the state of a snapshot taken on rs
// (the rule set of the same version). Data of another format is an error
// wrapping ErrSnapshotFormat; data that fails its checksum or does not
// decode, one wrapping ErrSnapshotCorrupt.
func Restore(rs *dsl.RuleSet, data []byte) (*Engine, error) {
	if len(data) < len(snapshotMagic) || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: no snapshot header", ErrSnapshotFormat)
	}
	if len(data) < snapshotHeader {
		return nil, fmt.Errorf("%w: %d bytes, the header alone takes %d", ErrSnapshotCorrupt, len(data), snapshotHeader)
	}
	v := binary.LittleEndian.Uint32(data[len(snapshotMagic):])
	if v < 1 || v > SnapshotFormat {
		return nil, fmt.Errorf("%w: format version %d; this build reads versions 1 to %d", ErrSnapshotFormat, v, SnapshotFormat)
	}
	body := data[snapshotHeader:]
	if sum := binary.LittleEndian.Uint32(data[snapshotHeader-4:]); sum != crc32.Checksum(body, castagnoli) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrSnapshotCorrupt)
	}
	d := &decoder{b: body, text: string(body), format: v}
	if v := d.str(); d.err == nil && v != rs.Version {
		return nil, fmt.Errorf("the snapshot was taken on rule set version %q, not %q", v, rs.Version)
	}
	e := New(rs, Options{Seed: d.uint()})
	e.decode(d)
	if d.err == nil {
		e.settle()
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d bytes left over", len(d.b)-d.off)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, d.err)
	}
	e.lastSnapshot = len(data)
	return e, nil
}

func (e *Engine) decode(d *decoder) {
	e.clock = d.time()
	e.reported = d.time()
	e.seq = d.uint()
	if d.err != nil {
		return
	}
	if err := e.pool.SetRandState(d.bytes()); err != nil && d.err == nil {
		d.fail("random source: %v", err)
	}

	if n := d.length(); n != len(e.pool.Agents) && d.err == nil {
		d.fail("%d agents, the team has %d", n, len(e.pool.Agents))
	}
	// Snapshots before format 3 did not keep what fair, fewest_served
	// and longest_free read: those start afresh from them.
	turns := make([]actions.Turns, len(e.pool.Agents))
	for i, a := range e.pool.Agents {
		if id := d.bytes(); d.err == nil && string(id) != a.ID {
			d.fail("agent %q where the team has %q", id, a.ID)
		}
		// Before format 4 a status was online, away or offline, by number.
		var status string
		if d.format >= 4 {
			status = d.str()
		} else if code := int(d.byte()); code < len(statusCodes) {
			status = statusCodes[code]
		} else {
			d.fail("agent %s: bad status", a.ID)
		}
		load, open, last := d.int(), d.intv(), d.time()
		if d.format >= 6 {
			a.Declined, a.Missed, a.MissedInARow = d.small(), d.small(), d.small()
		}
		st := e.stats.agents[a]
		st.assigned, st.peak = d.small(), d.int()
		if d.format >= 3 {
			turns[i] = actions.Turns{Assigned: d.uint(), Served: d.small(), Finished: d.time(), OnlineSince: d.time()}
		}
		if d.format >= 5 {
			recent := make([]time.Time, d.length())
			for j := range recent {
				recent[j] = d.time()
			}
			e.pool.SetRecent(a, recent)
		}
		if d.err != nil {
			return
		}
		if err := e.pool.SetState(a, status, load, open, last); err != nil {
			d.fail("%v", err)
			return
		}
	}
	if d.format >= 3 {
		e.pool.SetAssignments(d.uint())
		for i, a := range e.pool.Agents {
			if err := e.pool.SetTurns(a, turns[i]); err != nil && d.err == nil {
				d.fail("%v", err)
			}
		}
	}
	if n := d.length(); n != len(e.pool.Groups) && d.err == nil {
		d.fail("%d groups, the team has %d", n, len(e.pool.Groups))
	}
	for _, g := range e.pool.Groups {
		if name := d.bytes(); d.err == nil && string(name) != g.Name {
			d.fail("group %q where the team has %q", name, g.Name)
		}
		if last := d.intv(); d.err == nil {
			if err := g.SetLastTurn(last); err != nil {
				d.fail("%v", err)
			}
		}
	}
	e.stats.waited = d.small()
	e.stats.waitTotal = time.Duration(d.int())
	e.stats.waitMax = time.Duration(d.int())

	if !e.decodeContacts(d) {
		return
	}

	n := d.length()
	if d.err != nil {
		return
	}
	e.convs = make(map[string]*conversation, n)
	var waiting []*actions.Waiting
	prev := ""
	for i := range n {
		c := e.decodeConversation(d)
		if d.err != nil {
			return
		}
		if i > 0 && c.id <= prev {
			d.fail("conversations out of order")
			return
		}
		prev = c.id
		e.convs[c.id] = c
		if c.waiting != nil {
			waiting = append(waiting, c.waiting)
		}
	}
	sortWaiting(waiting)
	for _, w := range waiting {
		e.lineFor(w).Add(w)
	}
	if d.format >= 4 && !e.decodeKept(d) {
		return
	}
	e.fileKept()

	n = d.length()
	if d.err != nil {
		return
	}
	e.timers = make(timerHeap, 0, n)
	for range n {
		t := &timer{due: d.time()}
		id := d.bytes()
		t.streak = d.small()
		rule := d.small()
		t.order = d.small()
		t.batch = d.uint()
		if d.err != nil {
			return
		}
		if t.conv = e.convs[string(id)]; t.conv == nil {
			d.fail("a timer for conversation %q, which is not open", id)
			return
		}
		if rule >= len(e.rs.Rules) {
			d.fail("rule %d is not an unanswered or inactive rule", rule)
			return
		}
		t.rule = e.rs.Rules[rule]
		if slot := slices.Index(e.inactive, t.rule); slot >= 0 {
			c := t.conv
			if c.quietSince.IsZero() || c.quiet != nil && c.quiet[slot] != nil {
				d.fail("conversation %s: an inactive timer it cannot have", c.id)
				return
			}
			if c.quiet == nil {
				c.quiet = make([]*timer, len(e.inactive))
			}
			t.slot, c.quiet[slot] = slot, t
		} else if !slices.Contains(e.unanswered, t.rule) {
			d.fail("rule %d is not an unanswered or inactive rule", rule)
			return
		}
		t.conv.timers++
		t.index = len(e.timers)
		e.timers = append(e.timers, t)
	}
	heap.Init(&e.timers)
}

// decodeKept reads the closed conversations kept for reopening.
func (e *Engine) decodeKept(d *decoder) bool {
	n := d.length()
	for range n {
		if d.err != nil {
			return false
		}
		c := e.decodeConversation(d)
		if d.err != nil {
			return false
		}
		c.closedAt = d.time()
		if c.status != StatusClosed || c.waiting != nil || c.assignee != nil || c.contact.isOpen(c) {
			d.fail("kept conversation %s is not closed", c.id)
			return false
		}
		if c.contact.closedFor(c.channel, c.to) != nil {
			d.fail("contact %s keeps two closed conversations on %q %q", c.contact.id, c.channel, c.to)
			return false
		}
		c.kept = true
		// Appended, so that the chain keeps the order it was written in.
		p := &c.contact.closed
		for *p != nil {
			p = &(*p).nextOpen
		}
		*p = c
	}
	return d.err == nil
}

// decodeContacts reads the contacts into one chunk. Another goroutine
// files them by id as they are read: a million ids take about as long to
// file as to read. It reports whether all went well.
func (e *Engine) decodeContacts(d *decoder) bool {
	n := d.length()
	if d.err != nil {
		return false
	}
	slab := make([]contact, n)
	byID := make(map[string]*contact, n)
	read := make(chan int, 64) // how many are read, every so often
	filed := make(chan bool)   // whether every id was new
	go func() {
		i := 0
		for upto := range read {
			for ; i < upto; i++ {
				byID[slab[i].id] = &slab[i]
			}
		}
		filed <- len(byID) == i
	}()
	for i := range slab {
		c := &slab[i]
		c.id = d.str()
		c.name, c.email, c.phone = d.str(), d.str(), d.str()
		c.lang, c.country, c.owner, c.lastSender = d.sym(), d.sym(), d.sym(), d.sym()
		c.tags = d.strs()
		c.attrs = d.valueMap(0)
		c.conversations = d.small()
		if d.err != nil {
			break
		}
		if (i+1)%4096 == 0 {
			read <- i + 1
		}
	}
	if d.err == nil {
		read <- n
	}
	close(read)
	if !<-filed && d.err == nil {
		d.fail("a contact id is there twice")
	}
	e.contacts = contactSet{byID: byID, chunks: [][]contact{slab}}
	return d.err == nil
}

func (e *Engine) decodeConversation(d *decoder) *conversation {
	c := &conversation{id: d.str(), status: StatusOpen}
	contactID := d.bytes()
	c.channel, c.to = d.str(), d.str()
	flags := d.byte()
	c.createdAt = d.time()
	c.priority = d.intv()
	c.tags = d.strs()
	c.assignee = e.agentAt(d)
	c.load = d.int()
	c.queue = d.str()
	c.waitingSince = d.time()
	c.streak = d.small()
	c.lastMessage.ID, c.lastMessage.Text, c.lastMessage.Lang = d.str(), d.str(), d.str()
	c.batch = d.uint()
	if d.format >= 4 {
		status := int(d.byte())
		if status >= len(convStatuses) && d.err == nil {
			d.fail("conversation %s: bad status", c.id)
		}
		if d.err == nil {
			c.status = convStatuses[status]
		}
		c.attrs = d.valueMap(0)
		c.previous = d.sym()
		c.group = d.str()
		c.held = d.bool()
	}
	if d.format >= 8 {
		c.quietSince = d.time()
		c.quietBatch = d.uint()
		c.released = d.bool()
		if c.released && c.assignee == nil && d.err == nil {
			d.fail("conversation %s: released, but with no agent", c.id)
		}
	}
	if d.format >= 6 {
		e.decodeOffer(d, c)
	}
	if d.err != nil {
		return nil
	}
	if c.contact = e.contacts.get(string(contactID)); c.contact == nil {
		d.fail("conversation %s: no contact %q", c.id, contactID)
		return nil
	}
	c.contactNew = flags&convContactNew != 0
	if flags&convOpen != 0 {
		if c.contact.openFor(c.channel, c.to) != nil {
			d.fail("conversation %s: contact %s has two open conversations on %q %q", c.id, c.contact.id, c.channel, c.to)
			return nil
		}
		c.contact.setOpen(c)
	}
	if flags&convWaiting == 0 {
		return c
	}
	w := &actions.Waiting{Conversation: c.id, Rule: d.str(), Priority: d.intv(), Since: d.time(), Seq: d.uint()}
	group := d.uint()
	w.Agent = e.agentAt(d)
	w.Algorithm = dsl.Algorithm(d.str())
	w.Cost.Units, w.Cost.Percent = d.float(), d.float()
	w.Skills = d.strs()
	w.EvenIfOffline = d.bool()
	if d.format >= 4 {
		w.IncludingAway = d.bool()
	}
	w.Except = e.agentAt(d)
	if d.format >= 5 {
		w.Channel = d.str()
		w.Limit = d.small()
		w.Per = time.Duration(d.int())
		w.Offer = time.Duration(d.int())
		for range d.length() {
			if a := e.agentAt(d); a != nil {
				w.Excluded = append(w.Excluded, a)
			}
		}
	}
	if d.format >= 6 && d.bool() {
		w.Assign = e.decodeAssign(d, w.Rule)
	}
	if d.bool() {
		w.Then = d.reply()
		if d.format >= 2 {
			w.ThenRule = d.str()
		}
	}
	if d.format >= 7 {
		for range d.length() {
			if d.err == nil && len(w.Notify) >= maxHeldNotify {
				d.fail("conversation %s holds more than %d notifications", c.id, maxHeldNotify)
			}
			if d.err != nil {
				break
			}
			w.Notify = append(w.Notify, d.heldNotify())
		}
	}
	if d.err != nil {
		return nil
	}
	switch {
	case group > uint64(len(e.pool.Groups)):
		d.fail("conversation %s waits in group %d of %d", c.id, group, len(e.pool.Groups))
	case (group == 0) == (w.Agent == nil):
		d.fail("conversation %s waits for a group and an agent, or for neither", c.id)
	case group > 0:
		w.Group = e.pool.Groups[group-1]
		w.View = e.pool.View(w.Want())
	}
	c.waiting = w
	return c
}

// agentAt reads an agentRef.
func (e *Engine) agentAt(d *decoder) *actions.Agent {
	i := d.uint()
	switch {
	case i == 0:
		return nil
	case i > uint64(len(e.pool.Agents)):
		d.fail("agent %d of %d", i, len(e.pool.Agents))
		return nil
	}
	return e.pool.Agents[i-1]
}

// reply reads a held reply. Replies of the same text are one value, as
// they were when a rule held them.
func (d *decoder) reply() *dsl.Reply {
	r := &dsl.Reply{AfterAssign: d.bool(), Text: &dsl.Template{Source: d.str()}}
	r.Text.Parts = make([]dsl.TemplatePart, d.length())
	for i := range r.Text.Parts {
		r.Text.Parts[i] = dsl.TemplatePart{Text: d.str(), Field: d.str()}
	}
	for _, o := range d.replies {
		if o.AfterAssign == r.AfterAssign && o.Text.Source == r.Text.Source && slices.Equal(o.Text.Parts, r.Text.Parts) {
			return o
		}
	}
	if len(d.replies) < 64 {
		d.replies = append(d.replies, r)
	}
	return r
}
