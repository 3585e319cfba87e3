package engine

import (
	"container/heap"
	"maps"
	"slices"
	"strings"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
)

// Reload returns an engine running rs with e's live state: contacts and
// conversations as they are; agents' status, load and activity matched by
// id; waiting lines re-filed in the new rule set's groups; unanswered
// timers rescheduled for its rules. What no longer exists is let go: a
// conversation whose agent left the team (or who held its offer), or that
// waits for a group or an agent that is gone, becomes unassigned and waits
// nowhere. Reload returns what it let go, as the actions that tell the
// platform (an unassign from the agent who left, a cancel from the line
// that is gone), in the order of their conversations' ids. e must not be
// used afterwards.
func (e *Engine) Reload(rs *dsl.RuleSet) (*Engine, []Action) {
	n := New(rs, Options{Seed: e.seed})
	n.pool.TakeOver(e.pool)
	n.clock, n.seq = e.clock, e.seq
	n.contacts, n.convs = e.contacts, e.convs
	n.freeConvs = e.freeConvs
	n.kept, n.keptHead = e.kept, e.keptHead
	for old, st := range e.stats.agents {
		if a := n.pool.Agent(old.ID); a != nil {
			*n.stats.agents[a] = *st
		}
	}
	n.stats.waited, n.stats.waitTotal, n.stats.waitMax = e.stats.waited, e.stats.waitTotal, e.stats.waitMax
	n.stats.waits, n.stats.matched, n.stats.failures = e.stats.waits, e.stats.matched, e.stats.failures

	// Conversations follow their agents into the new pool; waiting work is
	// re-filed in order.
	var waiting []*actions.Waiting
	var letGo []Action
	for _, c := range e.convs {
		if c.assignee != nil {
			if a := n.pool.Agent(c.assignee.ID); a != nil {
				c.assignee = a
			} else {
				letGo = append(letGo, Action{Type: ActUnassign, Conversation: c.id, Agent: c.assignee.ID})
				c.previous = intern(c.assignee.ID)
				c.assignee, c.load, c.group, c.released = nil, 0, "", false
			}
		}
		if c.waiting != nil {
			waiting = append(waiting, c.waiting)
			c.waiting = nil
		}
		c.timers, c.quiet = 0, nil
		if left := n.remapOffers(c); left != "" {
			letGo = append(letGo, Action{Type: ActUnassign, Conversation: c.id, Agent: left})
		}
		if o := c.offer; o != nil {
			o.assign = n.carryAssign(e, o.rule, o.assign)
		}
	}
	n.settle()
	sortWaiting(waiting)
	for _, w := range waiting {
		c := e.convs[w.Conversation]
		if w.Agent != nil {
			a := n.pool.Agent(w.Agent.ID)
			if a == nil {
				letGo = append(letGo, Action{Type: ActCancel, Conversation: c.id, Agent: w.Agent.ID})
				continue
			}
			w.Agent = a
		} else {
			g := n.pool.Group(w.Group.Name)
			if g == nil {
				letGo = append(letGo, Action{Type: ActCancel, Conversation: c.id, Group: w.Group.Name})
				continue
			}
			w.Group = g
			w.View = n.pool.View(w.Want())
		}
		if w.Except != nil {
			w.Except = n.pool.Agent(w.Except.ID)
		}
		w.Excluded = n.remapAgents(w.Excluded)
		if w.Assign != nil {
			w.Assign = n.carryAssign(e, w.Rule, w.Assign)
		}
		n.lineFor(w).Add(w)
		c.waiting = w
	}

	// Timers: each unanswered conversation gets the new rules' unanswered
	// timers that are still ahead of it, each conversation whose contact
	// has not written since an agent did the inactive ones.
	for _, c := range e.convs {
		if !c.quietSince.IsZero() && len(n.inactive) > 0 {
			for i, r := range n.inactive {
				due := c.quietSince.Add(r.Trigger.After)
				if !due.After(n.clock) {
					continue // it ran already, or would have
				}
				if c.quiet == nil {
					c.quiet = make([]*timer, len(n.inactive))
				}
				tm := n.newTimer()
				*tm = timer{due: due, conv: c, rule: r, order: n.ruleOrder[r], batch: c.quietBatch, slot: i}
				heap.Push(&n.timers, tm)
				c.quiet[i] = tm
				c.timers++
			}
		}
		if c.status != StatusOpen || c.waitingSince.IsZero() {
			continue
		}
		for _, r := range n.unanswered {
			due := c.waitingSince.Add(r.Trigger.After)
			if !due.After(n.clock) {
				continue // it would have fired already
			}
			tm := n.newTimer()
			*tm = timer{due: due, conv: c, streak: c.streak, rule: r, order: n.ruleOrder[r], batch: c.batch}
			heap.Push(&n.timers, tm)
			c.timers++
		}
	}
	slices.SortStableFunc(letGo, func(a, b Action) int { return strings.Compare(a.Conversation, b.Conversation) })
	return n, letGo
}

// carryAssign finds in n's rules the assign that stands where a stood in
// old's (same rule, same place, same words), whose else then runs when an
// offer finds nobody left. When the reload changed or removed it, the
// offer keeps going as a said, but without an else: what a snapshot can
// keep of it, so that a restart decides the same.
func (n *Engine) carryAssign(old *Engine, rule string, a *dsl.Assign) *dsl.Assign {
	idx, depth := old.locate(rule, a)
	if live := n.at(rule, idx, depth); live != nil && live.Reassign == a.Reassign && live.String() == a.String() {
		return live
	}
	if a.Else == nil {
		return a
	}
	c := *a
	c.Else = nil
	return &c
}

// settle puts the pool's clock where the engine's is, so that fairness
// windows count from it, and, with budgets per channel, puts each
// conversation's load back on its agent's budget for its channel.
func (n *Engine) settle() {
	defer n.pool.SetClock(n.clock) // last: limits count the offers held
	if !n.pool.PerChannel() {
		held := map[*actions.Agent]int{}
		for _, c := range n.convs {
			if c.offer != nil {
				held[c.offer.agent]++
			}
		}
		n.pool.SetOffers(func(a *actions.Agent) int { return held[a] })
		return
	}
	n.pool.ResetUse()
	for _, id := range slices.Sorted(maps.Keys(n.convs)) {
		c := n.convs[id]
		if c.assignee != nil && !c.released {
			n.pool.Reserve(c.assignee, c.load, c.channel)
		}
		if o := c.offer; o != nil {
			n.pool.Offer(o.agent, o.load, c.channel)
		}
	}
}

// lineFor returns the waiting line w belongs in, creating it.
func (e *Engine) lineFor(w *actions.Waiting) *actions.Line {
	if w.Agent != nil {
		l := e.agentLines[w.Agent]
		if l == nil {
			l = &actions.Line{}
			e.agentLines[w.Agent] = l
		}
		return l
	}
	l := e.groupLines[w.Group]
	if l == nil {
		l = &actions.Line{}
		e.groupLines[w.Group] = l
	}
	return l
}

// sortWaiting orders waiting work as the lines do, so re-filing keeps it.
func sortWaiting(ws []*actions.Waiting) {
	slices.SortFunc(ws, func(a, b *actions.Waiting) int {
		if a.Before(b) {
			return -1
		}
		return 1
	})
}
