package engine

import (
	"container/heap"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
)

// What a snapshot keeps of offers: each conversation's offer in flight and
// the agents excluded from its offers, and the assign that offers it, so
// that its else runs after a restore as it would have before.

// encodeAssign writes an assign that offers a conversation: where it is in
// its rule, and what it says, so that a restore finds the rule's own (with
// its else) or, if the rules changed, one that offers the same way.
func (e *Engine) encodeAssign(w *encoder, rule string, a *dsl.Assign) {
	idx, depth := e.locate(rule, a)
	w.uint(uint64(idx))
	w.uint(uint64(depth))
	w.bool(a.Reassign)
	w.str(string(a.Target))
	w.str(a.Name)
	w.str(string(a.Algorithm))
	w.strs(a.Skills)
	w.float(a.Cost.Units)
	w.float(a.Cost.Percent)
	w.bool(a.EvenIfOffline)
	w.bool(a.IncludingAway)
	w.uint(uint64(a.Limit))
	w.int(int64(a.LimitPer))
	w.int(int64(a.Offer))
}

func (e *Engine) decodeAssign(d *decoder, rule string) *dsl.Assign {
	idx, depth := d.small(), d.small()
	a := &dsl.Assign{Reassign: d.bool(), Target: dsl.Target(d.str()), Name: d.str(), Algorithm: dsl.Algorithm(d.str()),
		Skills: d.strs()}
	a.Cost.Units, a.Cost.Percent = d.float(), d.float()
	a.EvenIfOffline, a.IncludingAway = d.bool(), d.bool()
	a.Limit, a.LimitPer, a.Offer = d.small(), time.Duration(d.int()), time.Duration(d.int())
	if live := e.at(rule, idx, depth); live != nil && live.Reassign == a.Reassign && live.String() == a.String() {
		return live
	}
	return a
}

// locate finds an assign in its rule: the action's position plus one (0
// when not found) and how many elses deep it is.
func (e *Engine) locate(rule string, a *dsl.Assign) (idx, depth int) {
	for _, r := range e.rs.Rules {
		if r.Name != rule {
			continue
		}
		for i, act := range r.Actions {
			for d := 0; act != nil; d++ {
				if act == dsl.Action(a) {
					return i + 1, d
				}
				as, ok := act.(*dsl.Assign)
				if !ok {
					break
				}
				act = as.Else
			}
		}
	}
	return 0, 0
}

// at returns the assign locate found; nil if there is none there.
func (e *Engine) at(rule string, idx, depth int) *dsl.Assign {
	if idx == 0 {
		return nil
	}
	for _, r := range e.rs.Rules {
		if r.Name != rule || idx > len(r.Actions) {
			continue
		}
		act := r.Actions[idx-1]
		for range depth {
			as, ok := act.(*dsl.Assign)
			if !ok {
				return nil
			}
			act = as.Else
		}
		as, _ := act.(*dsl.Assign)
		return as
	}
	return nil
}

func (e *Engine) encodeOffer(w *encoder, c *conversation) {
	w.uint(uint64(len(c.excluded)))
	for _, a := range c.excluded {
		w.uint(agentRef(a))
	}
	o := c.offer
	w.bool(o != nil)
	if o == nil {
		return
	}
	w.uint(agentRef(o.agent))
	w.time(o.expires)
	w.int(o.load)
	w.uint(o.seq)
	w.str(o.rule)
	e.encodeAssign(w, o.rule, o.assign)
	if o.group != nil {
		w.str(o.group.Name)
	} else {
		w.str("")
	}
	w.bool(o.reassign)
	w.bool(o.fromQueue)
	encodeReply(w, o.then, o.thenRule)
}

func (e *Engine) decodeOffer(d *decoder, c *conversation) {
	for range d.length() {
		if a := e.agentAt(d); a != nil {
			c.excluded = append(c.excluded, a)
		}
	}
	if !d.bool() {
		return
	}
	o := &offer{conv: c, agent: e.agentAt(d), expires: d.time(), load: d.int(), seq: d.uint(), rule: d.str()}
	o.assign = e.decodeAssign(d, o.rule)
	if g := d.str(); g != "" {
		if o.group = e.pool.Group(g); o.group == nil && d.err == nil {
			d.fail("conversation %s is offered from group %q, which the team does not have", c.id, g)
		}
	}
	o.reassign, o.fromQueue = d.bool(), d.bool()
	o.then, o.thenRule = d.heldReply()
	if d.err != nil {
		return
	}
	if o.agent == nil {
		d.fail("conversation %s is offered to nobody", c.id)
		return
	}
	c.offer = o
	heap.Push(&e.offers, o)
}

// encodeReply writes a reply held until a conversation is placed: its
// template, as it may belong to a rule set that was reloaded since.
func encodeReply(w *encoder, r *dsl.Reply, rule string) {
	if r == nil {
		w.bool(false)
		return
	}
	w.bool(true)
	w.bool(r.AfterAssign)
	w.str(r.Text.Source)
	w.uint(uint64(len(r.Text.Parts)))
	for _, p := range r.Text.Parts {
		w.str(p.Text)
		w.str(p.Field)
	}
	w.str(rule)
}

// heldReply reads what encodeReply wrote.
func (d *decoder) heldReply() (*dsl.Reply, string) {
	if !d.bool() {
		return nil, ""
	}
	return d.reply(), d.str()
}

// remapOffers carries offers over a reload: each to the new pool's agent
// of the same id (an offer to an agent who left is withdrawn), with the
// excluded agents who are still there. It returns the agent who left
// with the offer withdrawn, if any.
func (n *Engine) remapOffers(c *conversation) (left string) {
	c.excluded = n.remapAgents(c.excluded)
	o := c.offer
	if o == nil {
		return ""
	}
	na := n.pool.Agent(o.agent.ID)
	if na == nil {
		c.offer = nil
		return o.agent.ID
	}
	o.agent = na
	if o.group != nil {
		o.group = n.pool.Group(o.group.Name)
	}
	heap.Push(&n.offers, o)
	return ""
}

// remapAgents maps agents onto the new pool's, dropping those who left.
func (n *Engine) remapAgents(list []*actions.Agent) []*actions.Agent {
	var out []*actions.Agent
	for _, a := range list {
		if na := n.pool.Agent(a.ID); na != nil {
			out = append(out, na)
		}
	}
	return out
}

// encodeNotify writes a notification held for waiting work.
func encodeNotify(w *encoder, h actions.HeldNotify) {
	n := h.Notify
	w.str(h.Rule)
	w.str(string(n.To))
	w.str(n.Name)
	w.str(n.Via)
	w.bool(n.Text != nil)
	if n.Text != nil {
		w.str(n.Text.Source)
		w.uint(uint64(len(n.Text.Parts)))
		for _, p := range n.Text.Parts {
			w.str(p.Text)
			w.str(p.Field)
		}
	}
}

// heldNotify reads what encodeNotify wrote.
func (d *decoder) heldNotify() actions.HeldNotify {
	h := actions.HeldNotify{Rule: d.str()}
	n := &dsl.Notify{To: dsl.Recipient(d.str()), Name: d.str(), Via: d.str()}
	if n.To != dsl.NotifyAgent && d.err == nil {
		d.fail("a held notification for %q, not for the agent", n.To)
	}
	if d.bool() {
		n.Text = &dsl.Template{Source: d.str()}
		n.Text.Parts = make([]dsl.TemplatePart, d.length())
		for i := range n.Text.Parts {
			n.Text.Parts[i] = dsl.TemplatePart{Text: d.str(), Field: d.str()}
		}
	}
	h.Notify = n
	return h
}
