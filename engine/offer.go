package engine

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
	"github.com/switchboard-dev/switchboard/triggers"
)

// Offers (assign … offer 30s): instead of assigning, the chosen agent is
// offered the conversation and capacity is held for it. An offer.accepted
// event assigns it; an offer.declined event, or the offer's time running
// out, offers it to the next agent the assign would choose, never one who
// declined or let an offer of the conversation expire. When nobody is
// left, the assign's else runs, or the conversation waits.

// offer is a conversation offered to one agent.
type offer struct {
	conv    *conversation
	agent   *actions.Agent
	expires time.Time
	load    int64
	// assign is the assign that offers it: its target, algorithm, time
	// and else; rule, the rule it belongs to.
	assign *dsl.Assign
	rule   string
	group  *actions.Group // the group it was offered from; nil for one agent
	// reassign: the conversation stays with its agent until the offer is
	// accepted.
	reassign  bool
	fromQueue bool
	// then is a reply held until the conversation is assigned.
	then     *dsl.Reply
	thenRule string
	seq      uint64 // orders offers that expire at the same instant
}

// live reports whether the offer is still the conversation's.
func (o *offer) live() bool { return o.conv.offer == o }

type offerHeap []*offer

func (h offerHeap) Len() int { return len(h) }
func (h offerHeap) Less(i, j int) bool {
	if !h[i].expires.Equal(h[j].expires) {
		return h[i].expires.Before(h[j].expires)
	}
	return h[i].seq < h[j].seq
}
func (h offerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *offerHeap) Push(x any)   { *h = append(*h, x.(*offer)) }
func (h *offerHeap) Pop() any {
	old := *h
	o := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return o
}

// nextExpiry returns the earliest live offer expiring by t, dropping the
// answered and withdrawn ones on the way; nil if none.
func (e *Engine) nextExpiry(t time.Time) *offer {
	for len(e.offers) > 0 {
		o := e.offers[0]
		if !o.live() {
			heap.Pop(&e.offers)
			continue
		}
		if o.expires.After(t) {
			return nil
		}
		return o
	}
	return nil
}

// makeOffer offers the conversation to agent for the assign's offer time,
// holding capacity for it.
func (e *Engine) makeOffer(conv *conversation, agent *actions.Agent, a *dsl.Assign, rule string, g *actions.Group, reassign, fromQueue bool) *offer {
	e.withdraw(conv) // a reassign while an offer is out replaces it
	var then *dsl.Reply
	var thenRule string
	if w := conv.waiting; w != nil {
		then, thenRule = w.Then, w.ThenRule
		e.unqueue(conv)
	}
	if !reassign {
		e.unplace(conv)
	}
	load := agent.CostOf(a.Cost, conv.channel)
	e.pool.Offer(agent, load, conv.channel)
	e.seq++
	expires := e.clock.Add(a.Offer)
	if expires.After(lastTime) {
		expires = lastTime
	}
	o := &offer{conv: conv, agent: agent, expires: expires, load: load, assign: a, rule: rule, group: g,
		reassign: reassign, fromQueue: fromQueue, then: then, thenRule: thenRule, seq: e.seq}
	conv.offer = o
	heap.Push(&e.offers, o)
	act := Action{Type: ActOffer, Rule: rule, Conversation: conv.id, Agent: agent.ID, Expires: o.expires, FromQueue: fromQueue}
	if g != nil {
		act.Group, act.Algorithm = g.Name, string(a.Algorithm)
	}
	if reassign && conv.assignee != nil {
		act.From = conv.assignee.ID
	}
	e.out = append(e.out, act)
	return o
}

// lastTime is the last instant RFC 3339 can write: offers made near it
// expire there, not in a year of five digits.
var lastTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)

// withdraw ends the conversation's offer in flight, if any, giving back the
// capacity held for it.
func (e *Engine) withdraw(conv *conversation) {
	o := conv.offer
	if o == nil {
		return
	}
	conv.offer = nil
	e.pool.Unoffer(o.agent, o.load, conv.channel)
	e.dirty = append(e.dirty, o.agent)
}

// answerable says why an agent cannot answer a conversation's offer at t;
// "" when it can.
func (e *Engine) answerable(ev *triggers.Event, t time.Time) (field, why string) {
	conv := e.convs[ev.Conversation]
	switch {
	case conv == nil:
		return "conversation", fmt.Sprintf("no open conversation %q", ev.Conversation)
	case conv.offer == nil:
		return "conversation", fmt.Sprintf("conversation %q has no offer waiting for an answer (it is %s)", conv.id, conv.where())
	case conv.offer.agent.ID != ev.Agent:
		return "agent", fmt.Sprintf("conversation %q is offered to %q, not %q", conv.id, conv.offer.agent.ID, ev.Agent)
	case !t.Before(conv.offer.expires):
		return "conversation", fmt.Sprintf("the offer of conversation %q to %q expired at %s", conv.id, ev.Agent, conv.offer.expires.UTC().Format(time.RFC3339Nano))
	}
	return "", ""
}

// answered applies an offer.accepted or offer.declined event.
func (e *Engine) answered(ev *triggers.Event) string {
	conv := e.convs[ev.Conversation]
	if conv == nil {
		return ev.Conversation // closed by an earlier rule of this instant
	}
	o := conv.offer
	if o == nil || o.agent.ID != ev.Agent {
		// An unanswered rule due before this event moved it on.
		if e.trace != nil {
			e.trace.note("the offer of conversation %s to %s was withdrawn before the answer (it is %s): nothing changes", conv.id, ev.Agent, conv.where())
		}
		return conv.id
	}
	a := o.agent
	if ev.Type == triggers.TypeOfferAccepted {
		a.MissedInARow = 0
		if e.trace != nil {
			e.trace.note("%s accepts the offer of conversation %s", a.ID, conv.id)
		}
		e.accept(conv, o)
		return conv.id
	}
	a.Declined++
	a.MissedInARow = 0
	if e.trace != nil {
		e.trace.note("%s declines the offer of conversation %s: offer declined rules run, then it is offered on", a.ID, conv.id)
	}
	e.offerEnded(conv, o, triggers.OfferDeclined)
	return conv.id
}

// accept assigns an offered conversation to the agent who accepted it.
func (e *Engine) accept(conv *conversation, o *offer) {
	e.withdraw(conv)
	// The capacity held is what it takes, whatever a reload changed since.
	e.commitLoad(conv, o.agent, o.load, o.rule, o.group, o.assign.Algorithm, o.reassign, o.fromQueue, true)
	if o.then != nil {
		rule := o.thenRule
		if rule == "" {
			rule = o.rule
		}
		ctx := evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to}
		e.setEnv(&ctx)
		e.out = append(e.out, Action{Type: ActReply, Rule: rule, Conversation: conv.id, Text: e.render(o.then.Text, &ctx)})
	}
}

// expire ends an offer whose time ran out.
func (e *Engine) expire(o *offer) {
	e.advance(o.expires)
	e.reported = o.expires
	conv, a := o.conv, o.agent
	a.Missed++
	a.MissedInARow++
	e.offerEnded(conv, o, triggers.OfferExpired)
	e.drain()
}

// offerEnded handles a declined or expired offer: the agent is excluded
// from the conversation's offers, the kind's rules run (seeing the agent),
// and unless they placed it the conversation is offered on.
func (e *Engine) offerEnded(conv *conversation, o *offer, kind triggers.Kind) {
	e.withdraw(conv)
	if !slices.Contains(conv.excluded, o.agent) {
		conv.excluded = append(conv.excluded, o.agent)
	}
	ctx := &evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to, agent: o.agent, offered: true}
	step := kind.String()
	if kind == triggers.OfferExpired && e.trace != nil {
		step = fmt.Sprintf("offer.expired: %s did not answer the offer of %s by %s", o.agent.ID, conv.id, o.expires.UTC().Format(time.RFC3339Nano))
		e.beginStep(step)
		step = ""
	}
	e.runStep(kind, ctx, step)
	if conv.status == StatusClosed || ctx.placed || conv.offer != nil || conv.waiting != nil || conv.queue != "" ||
		(conv.assignee != nil && !o.reassign) {
		return // the rules placed it
	}
	e.offerOn(conv, o, ctx)
}

// offerOn offers the conversation to the next agent the assign would
// choose, leaving out every excluded one; when nobody is left, the
// assign's else runs, or the conversation waits in the group (excluded
// agents left out), or, for one agent, it is left unassigned.
func (e *Engine) offerOn(conv *conversation, o *offer, ctx *evalCtx) {
	a := o.assign
	var at *ActionTrace
	if e.trace != nil {
		step := e.beginStep(fmt.Sprintf("the offer of %s moves on", conv.id))
		at = &ActionTrace{Action: describe(a)}
		pos := "kept by a snapshot"
		if a.Pos.Line > 0 {
			pos = a.Pos.String()
		}
		step.Rules = append(step.Rules, &RuleTrace{Rule: o.rule, Pos: pos, Matched: true, Actions: []*ActionTrace{at}})
	}
	var except *actions.Agent
	if o.reassign {
		except = conv.assignee
	}
	if conv.status != StatusOpen {
		if at != nil {
			at.set("not offered on: the conversation is " + conv.status)
		}
		return
	}
	if a.Target == dsl.TargetGroup {
		v := e.pool.View(actions.WantOf(a, conv.channel))
		if v != nil {
			agent := e.pool.Pick(v, a.Algorithm, except, conv.excluded)
			if at != nil {
				at.Members = e.explainMembers(v, a, agent, except, conv.excluded)
			}
			if agent != nil {
				n := e.makeOffer(conv, agent, a, o.rule, v.Group(), o.reassign, false)
				n.then, n.thenRule = o.then, o.thenRule
				if at != nil {
					at.set("offered to " + agent.ID + " until " + n.expires.UTC().Format(time.RFC3339Nano))
				}
				return
			}
		}
	}
	// Nobody is left.
	if a.Else != nil {
		if at != nil {
			at.set("nobody left to offer it to; else:")
		}
		ctx.placed = false
		e.runElse(a, &dsl.Rule{Name: o.rule}, ctx, at)
		return
	}
	if o.reassign && conv.assignee != nil {
		if at != nil {
			at.set("nobody left to offer it to, and no else: it stays with " + conv.assignee.ID)
		}
		return
	}
	if a.Target != dsl.TargetGroup || e.pool.Group(a.Name) == nil {
		if at != nil {
			at.set("nobody left to offer it to, and no else: it stays " + conv.where())
		}
		return
	}
	e.queue(conv, a, o.rule, at, reason{name: "nobody left in " + a.Name, what: " to offer it to now"})
	if w := conv.waiting; w != nil {
		w.Then, w.ThenRule = o.then, o.thenRule
	}
}

// recall takes back the offers an agent holds when it goes offline: each
// is offered on as after a decline, without counting a decline or a miss,
// and without running rules. The agent is left out of that round only:
// back online, it may be offered the work again, as TaskRouter's task goes
// back to pending when its worker drops.
func (e *Engine) recall(a *actions.Agent) {
	var held []*offer
	for _, o := range e.offers {
		if o.live() && o.agent == a {
			held = append(held, o)
		}
	}
	slices.SortFunc(held, func(x, y *offer) int { return cmp.Compare(x.seq, y.seq) })
	for _, o := range held {
		conv := o.conv
		if e.trace != nil {
			e.trace.note("%s goes offline: its offer of %s is taken back and offered on", a.ID, conv.id)
		}
		e.withdraw(conv)
		left := !slices.Contains(conv.excluded, a) // not left out already
		if left {
			conv.excluded = append(conv.excluded, a)
		}
		ctx := &evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to, agent: a, offered: true}
		e.offerOn(conv, o, ctx)
		if left {
			conv.excluded = slices.DeleteFunc(conv.excluded, func(x *actions.Agent) bool { return x == a })
			if w := conv.waiting; w != nil {
				w.Excluded = slices.DeleteFunc(w.Excluded, func(x *actions.Agent) bool { return x == a })
			}
		}
	}
}
