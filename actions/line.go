package actions

import (
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

// Waiting is work that no agent could take yet: it waits in the line of a
// group or of one agent, and is placed by the algorithm it was queued with.
type Waiting struct {
	Conversation string
	Rule         string
	Priority     int
	Since        time.Time
	Seq          uint64
	// Group and View when waiting for a group; Agent when waiting for one.
	Group     *Group
	View      *View
	Algorithm dsl.Algorithm
	Agent     *Agent
	Cost      dsl.Cost
	Skills    []string
	// Channel is the conversation's channel, whose budget it draws on.
	Channel string
	// Limit and Per are the group assign's fairness limit.
	Limit int
	Per   time.Duration
	// Offer, when not 0, offers the work to the agent who can take it,
	// for that long, instead of assigning it.
	Offer time.Duration
	// Excluded agents declined or let an offer of the work expire.
	Excluded []*Agent
	// Assign is the assign that queued the work, when known: its else runs
	// if, offered later, nobody is left to take it.
	Assign *dsl.Assign
	// EvenIfOffline entries take their agent, or their group's members,
	// whatever the status.
	EvenIfOffline bool
	// IncludingAway: the group's away members may take it too.
	IncludingAway bool
	// Except is never chosen: the agent a reassign moved the work from.
	Except *Agent
	// Then is sent once the work is placed: a greeting "after assignment",
	// or a reply that names the agent. ThenRule is the rule that made it;
	// "" for the rule that queued the work.
	Then     *dsl.Reply
	ThenRule string
	// Notify are the notifications to its agent (notify agent) held until
	// the work is placed: the agent who takes it gets them then.
	Notify []HeldNotify
	// pinned is the view the work holds while in a line: its channel's
	// views are not let go meanwhile.
	pinned *View
}

// pin makes v the view the work holds; nil for none.
func (w *Waiting) pin(v *View) {
	if w.pinned != nil {
		w.pinned.pins--
	}
	if w.pinned = v; v != nil {
		v.pins++
	}
}

// Want is what waiting work for a group asks of its members.
func (w *Waiting) Want() Want {
	return Want{Group: w.Group.Name, Skills: w.Skills, Cost: w.Cost, Away: w.IncludingAway, Offline: w.EvenIfOffline, Limit: w.Limit, Per: w.Per, Channel: w.Channel}
}

// Before orders waiting work: lowest priority number first, then oldest,
// then first queued.
func (w *Waiting) Before(o *Waiting) bool {
	if w.Priority != o.Priority {
		return w.Priority < o.Priority
	}
	if !w.Since.Equal(o.Since) {
		return w.Since.Before(o.Since)
	}
	return w.Seq < o.Seq
}

// Line is waiting work in order.
type Line struct {
	entries []*Waiting
}

// Entries returns the entries in order; do not modify it.
func (l *Line) Entries() []*Waiting { return l.entries }

// Add puts w in its place.
func (l *Line) Add(w *Waiting) {
	i, _ := slices.BinarySearchFunc(l.entries, w, func(e, t *Waiting) int {
		if e.Before(t) {
			return -1
		}
		return 1
	})
	l.entries = slices.Insert(l.entries, i, w)
	w.pin(w.View)
}

// Remove takes w out of the line.
func (l *Line) Remove(w *Waiting) {
	if i := slices.Index(l.entries, w); i >= 0 {
		l.entries = slices.Delete(l.entries, i, i+1)
		w.pin(nil)
	}
}

// Placeable reports the agent that could take w now, or nil.
func (p *Pool) Placeable(w *Waiting) *Agent {
	if w.Agent != nil {
		a := w.Agent
		ok := a.Fits(w.Cost, w.Channel) && a.HasSkills(w.Skills) && (a.Online() || w.EvenIfOffline) && !slices.Contains(w.Excluded, a)
		if ok {
			return a
		}
		return nil
	}
	if w.View != nil && w.View.dropped {
		w.View = p.View(w.Want())
		if w.pinned != nil {
			w.pin(w.View)
		}
	}
	return p.Pick(w.View, w.Algorithm, w.Except, w.Excluded)
}

// HeldNotify is a notify agent held for waiting work, and its rule.
type HeldNotify struct {
	Notify *dsl.Notify
	Rule   string
}
