package engine

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/actions"
	"github.com/switchboard-dev/switchboard/dsl"
)

// do runs one action of a matched rule. It returns the action's trace when
// tracing.
func (e *Engine) do(act dsl.Action, r *dsl.Rule, ctx *evalCtx) *ActionTrace {
	var at *ActionTrace
	if e.trace != nil {
		at = &ActionTrace{Action: describe(act)}
	}
	switch a := act.(type) {
	case *dsl.Assign:
		e.assign(a, r, ctx, at)
	case *dsl.Reply:
		if ctx.conv == nil {
			at.set("not sent: the event has no conversation")
			break
		}
		if a.AfterAssign && (!ctx.placed || ctx.conv.assignee == nil) {
			if w := ctx.conv.waiting; ctx.placed && w != nil {
				w.Then = a
				at.set("held: sent when the conversation leaves its waiting line")
			} else {
				at.set("not sent: the conversation was not assigned")
			}
			break
		}
		// A reply that names the agent while the conversation only waits
		// for one would name nobody: it is held, and sent naming the agent
		// who takes it (one held reply per conversation).
		if w := ctx.conv.waiting; w != nil && ctx.conv.assignee == nil && w.Then == nil && namesAgent(a.Text) {
			w.Then, w.ThenRule = a, r.Name
			at.set("held until placed: it names the agent, and the conversation waits for one")
			break
		}
		text := e.render(a.Text, ctx)
		e.out = append(e.out, Action{Type: ActReply, Rule: r.Name, Conversation: ctx.conv.id, Text: text})
		at.set("sent")
	case *dsl.Notify:
		e.notify(a, r, ctx, at)
	case *dsl.Tag:
		if ctx.conv == nil {
			at.set("not tagged: the event has no conversation")
			break
		}
		if !contains(ctx.conv.tags, a.Name) {
			ctx.conv.tags = append(ctx.conv.tags, a.Name)
		}
		e.out = append(e.out, Action{Type: ActTag, Rule: r.Name, Conversation: ctx.conv.id, Tag: a.Name})
		at.set("tagged")
	case *dsl.Set:
		e.set(a, r, ctx, at)
	case *dsl.Stop:
		ctx.stopped = true
		at.set("no later action or rule runs for this event")
	case *dsl.Untag:
		if ctx.conv == nil {
			at.set("not untagged: the event has no conversation")
			break
		}
		if i := slices.Index(ctx.conv.tags, a.Name); i >= 0 {
			ctx.conv.tags = slices.Delete(ctx.conv.tags, i, i+1)
			at.set("untagged")
		} else {
			at.set("untagged (it did not have the tag)")
		}
		e.out = append(e.out, Action{Type: ActUntag, Rule: r.Name, Conversation: ctx.conv.id, Tag: a.Name})
		e.setEnv(ctx)
	case *dsl.Unassign:
		conv := ctx.conv
		if conv == nil || conv.assignee == nil && conv.offer == nil {
			at.set("does nothing: the conversation has no agent")
			break
		}
		agent, offered := conv.assignee, false
		if agent == nil {
			agent, offered = conv.offer.agent, true
		}
		e.unplace(conv)
		ctx.placed = false
		e.out = append(e.out, Action{Type: ActUnassign, Rule: r.Name, Conversation: conv.id, Agent: agent.ID})
		switch {
		case at != nil && offered:
			at.set("the offer to " + agent.ID + " is withdrawn and the capacity held for it freed; it waits nowhere")
		case at != nil:
			at.set("taken from " + agent.ID + ", whose capacity is freed; it waits nowhere")
		}
		e.setEnv(ctx)
	case *dsl.Cancel:
		conv := ctx.conv
		if conv == nil || conv.waiting == nil {
			at.set("does nothing: the conversation waits in no line")
			break
		}
		act := Action{Type: ActCancel, Rule: r.Name, Conversation: conv.id}
		if w := conv.waiting; w.Agent != nil {
			act.Agent = w.Agent.ID
		} else {
			act.Group = w.Group.Name
		}
		if at != nil {
			at.set("leaves its line: it was " + conv.where())
		}
		e.unqueue(conv)
		ctx.placed = false
		e.out = append(e.out, act)
		e.setEnv(ctx)
	case *dsl.Release:
		conv := ctx.conv
		switch {
		case conv == nil || conv.assignee == nil:
			at.set("does nothing: the conversation has no agent")
		case conv.released:
			at.set("does nothing: its capacity is released already, until the contact writes")
		default:
			a := conv.assignee
			e.pool.Unreserve(a, conv.load, conv.channel)
			conv.released = true
			e.dirty = append(e.dirty, a)
			e.out = append(e.out, Action{Type: ActRelease, Rule: r.Name, Conversation: conv.id, Agent: a.ID})
			if at != nil {
				at.set("stays with " + a.ID + ", whose capacity it frees until the contact writes again")
			}
			e.setEnv(ctx)
		}
	case *dsl.Close:
		conv := ctx.conv
		switch {
		case conv == nil:
			at.set("does nothing: the event has no conversation")
		case conv.status == StatusClosed:
			at.set("does nothing: the conversation is closed already")
		default:
			act := Action{Type: ActClose, Rule: r.Name, Conversation: conv.id}
			if conv.assignee != nil {
				act.Agent = conv.assignee.ID
			}
			if at != nil {
				at.set("closed (it was " + conv.where() + "); no conversation closed rules run")
			}
			e.out = append(e.out, act)
			e.close(conv, false)
			e.setEnv(ctx)
		}
	}
	return at
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// reason says why an assign could not place a conversation. It is kept in
// parts and put into words only when a trace asks, so that deciding
// allocates nothing.
type reason struct {
	who  string // "owner", "last_sender", "" for a named user or a group
	name string // the agent id or group name
	what string // what is wrong, after the name
}

func (r reason) String() string {
	if r.who == "" {
		return r.name + r.what
	}
	return r.who + " " + r.name + r.what
}

// outcome of trying to place a conversation.
type outcome int

const (
	placedNow   outcome = iota // assigned, or given to a queue
	queuedNow                  // waiting in a line
	unavailable                // nobody online: else, or wait
	impossible                 // cannot be placed this way: else, or nothing
)

func (e *Engine) assign(a *dsl.Assign, r *dsl.Rule, ctx *evalCtx, at *ActionTrace) {
	conv := ctx.conv
	switch {
	case conv == nil:
		at.set("does nothing: the event has no conversation")
		return
	case conv.status == StatusClosed:
		at.set("does nothing: the conversation is closed")
		return
	case conv.status != StatusOpen:
		if at != nil {
			at.set("does nothing: the conversation is " + conv.status + "; it can be assigned once it turns open")
		}
		return
	case ctx.placed:
		at.set("skipped: an earlier action of this event already placed the conversation")
		return
	case !a.Reassign && conv.placed():
		if at != nil {
			at.set("does nothing: the conversation is already " + conv.where() + " (use reassign to move it)")
		}
		return
	}
	if a.Priority != 0 {
		conv.priority = a.Priority
	}
	res, why := e.place(conv, a, r.Name, at)
	switch res {
	case placedNow, queuedNow:
		ctx.placed = true
		e.setEnv(ctx) // later conditions see the new agent and owner
		return
	case unavailable:
		if a.Else == nil || a.ElseAndWait {
			e.queue(conv, a, r.Name, at, why)
			ctx.placed = true
			e.setEnv(ctx)
			if a.Else != nil {
				if at != nil {
					at.Outcome += "; and:"
				}
				e.runElse(a, r, ctx, at)
			}
			return
		}
	case impossible:
		if a.Else == nil {
			if at != nil {
				at.set("not placed: " + why.String())
			}
			return
		}
	}
	if at != nil {
		at.set(why.String() + "; else:")
	}
	e.runElse(a, r, ctx, at)
}

// runElse runs an assign's else, traced under at.
func (e *Engine) runElse(a *dsl.Assign, r *dsl.Rule, ctx *evalCtx, at *ActionTrace) {
	var et *ActionTrace
	if at != nil {
		et = &ActionTrace{Action: describe(a.Else)}
		at.Else = et
	}
	switch next := a.Else.(type) {
	case *dsl.Assign:
		e.assign(next, r, ctx, et)
	default:
		sub := e.do(next, r, ctx)
		if at != nil {
			at.Else = sub
		}
	}
}

// place tries to give the conversation to the assign's target. On success
// it records the decision; otherwise it says why not.
func (e *Engine) place(conv *conversation, a *dsl.Assign, rule string, at *ActionTrace) (outcome, reason) {
	from := conv.assignee
	switch a.Target {
	case dsl.TargetQueue:
		if conv.queue == a.Name {
			return impossible, reason{name: "already in queue ", what: a.Name}
		}
		e.unplace(conv)
		conv.queue = a.Name
		e.out = append(e.out, Action{Type: ActAssign, Rule: rule, Conversation: conv.id, Queue: a.Name, From: agentID(from, a.Reassign)})
		if at != nil {
			at.set("given to queue " + a.Name)
		}
		return placedNow, reason{}

	case dsl.TargetGroup:
		v := e.pool.View(actions.WantOf(a, conv.channel))
		if v == nil {
			return impossible, reason{name: "there is no group ", what: a.Name}
		}
		var except *actions.Agent
		if a.Reassign {
			except = from
		}
		// Agents who declined or missed an offer of the conversation are
		// never chosen from a group for it again.
		agent := e.pool.Pick(v, a.Algorithm, except, conv.excluded)
		if at != nil {
			at.Members = e.explainMembers(v, a, agent, except, conv.excluded)
		}
		if agent != nil {
			if a.Offer > 0 {
				o := e.makeOffer(conv, agent, a, rule, v.Group(), a.Reassign, false)
				if at != nil {
					at.set("offered to " + agent.ID + " until " + o.expires.UTC().Format(time.RFC3339Nano))
				}
				return placedNow, reason{}
			}
			e.commit(conv, agent, a.Cost, rule, v.Group(), a.Algorithm, a.Reassign, false, false)
			if at != nil {
				at.set("assigned to " + agent.ID)
			}
			return placedNow, reason{}
		}
		if except != nil && !e.othersIn(v.Group(), a, except, conv) {
			// Waiting for another member would be waiting for ever.
			return impossible, reason{name: "no member of " + a.Name, what: " but its agent " + except.ID + " could take it: it stays with " + except.ID}
		}
		present := e.pool.OnlineCount(a.Name)
		if a.IncludingAway {
			present += e.pool.AwayCount(a.Name)
		}
		if a.EvenIfOffline {
			present = len(v.Group().Members)
		}
		anyPresent := present > 0
		if except != nil && presentFor(a, except) && v.Group().Has(except) {
			present-- // the current agent does not count: it must move
		}
		for _, x := range conv.excluded { // nor do those who declined it
			if x != except && presentFor(a, x) && v.Group().Has(x) {
				present--
			}
		}
		if e.pool.PerChannel() { // nor those who take nothing on its channel
			for _, m := range v.Group().Members {
				if m != except && !slices.Contains(conv.excluded, m) && presentFor(a, m) && m.TakesNone(conv.channel) {
					present--
				}
			}
		}
		if a.EvenIfOffline {
			if present > 0 {
				e.queue(conv, a, rule, at, reason{name: "no member of " + a.Name, what: " can take it now"})
				return queuedNow, reason{}
			}
			return unavailable, reason{name: "no member of " + a.Name, what: " is left to take it"}
		}
		who := "online"
		if a.IncludingAway {
			who = "online or away"
		}
		if present > 0 {
			e.queue(conv, a, rule, at, reason{name: "no " + who + " member of " + a.Name, what: " can take it now"})
			return queuedNow, reason{}
		}
		if anyPresent {
			// Some are, but they are left out: the agent it must move from,
			// those who declined or missed it, those who take nothing on
			// its channel.
			return unavailable, reason{name: "no " + who + " member of " + a.Name, what: " is left to take it"}
		}
		return unavailable, reason{name: "no member of " + a.Name, what: " is " + who}

	default: // user, owner, last_sender, previous_agent
		id := a.Name
		switch a.Target {
		case dsl.TargetOwner:
			if id = conv.contact.owner.String(); id == "" {
				return impossible, reason{name: "the contact has no owner"}
			}
		case dsl.TargetLastSender:
			if id = conv.contact.lastSender.String(); id == "" {
				return impossible, reason{name: "no agent has written to the contact yet"}
			}
		case dsl.TargetPreviousAgent:
			if id = conv.previous.String(); id == "" {
				return impossible, reason{name: "the conversation has had no agent before"}
			}
		}
		agent := e.pool.Agent(id)
		who := reason{name: id}
		if a.Target != dsl.TargetUser {
			who.who = string(a.Target)
		}
		switch {
		case agent == nil:
			who.what = " is not in team.yaml"
			return impossible, who
		case a.Reassign && agent == from:
			return impossible, reason{name: "the conversation is already with ", what: id}
		case !agent.HasSkills(a.Skills):
			who.what = " lacks a required skill"
			return impossible, who
		case agent.TakesNone(conv.channel):
			who.what = fmt.Sprintf(" takes no conversations on channel %q (no capacity for it in team.yaml)", conv.channel)
			return impossible, who
		case a.Offer > 0 && slices.Contains(conv.excluded, agent):
			who.what = " declined or let an offer of this conversation expire"
			return impossible, who
		case !agent.Online() && !a.EvenIfOffline:
			who.what = " is " + agent.Status
			return unavailable, who
		case !agent.Fits(a.Cost, conv.channel):
			if at != nil {
				who.what = " is full (" + loadText(agent, conv.channel) + ")"
			}
			e.queue(conv, a, rule, at, who)
			return queuedNow, reason{}
		}
		if a.Offer > 0 {
			o := e.makeOffer(conv, agent, a, rule, nil, a.Reassign, false)
			if at != nil {
				at.set("offered to " + id + " until " + o.expires.UTC().Format(time.RFC3339Nano))
			}
			return placedNow, reason{}
		}
		e.commit(conv, agent, a.Cost, rule, nil, "", a.Reassign, false, false)
		if at != nil && agent.Online() {
			at.set("assigned to " + id)
		} else if at != nil {
			at.set("assigned to " + id + ", who is " + agent.Status + " (even if offline)")
		}
		return placedNow, reason{}
	}
}

func agentID(a *actions.Agent, reassign bool) string {
	if a == nil || !reassign {
		return ""
	}
	return a.ID
}

// unplace takes the conversation from wherever it is: its agent's capacity
// is freed, its place in a line given up, its queue left, its offer
// withdrawn.
func (e *Engine) unplace(conv *conversation) {
	if conv.offer != nil {
		e.withdraw(conv)
	}
	if a := conv.assignee; a != nil {
		if !conv.released {
			e.pool.Release(a, conv.load, conv.channel, e.clock)
			e.dirty = append(e.dirty, a)
		}
		conv.released = false
		if conv.previous.String() != a.ID {
			conv.previous = intern(a.ID)
		}
		conv.assignee, conv.load, conv.group = nil, 0, ""
	}
	if conv.waiting != nil {
		e.unqueue(conv)
	}
	conv.queue = ""
}

// commit gives the conversation to an agent.
func (e *Engine) commit(conv *conversation, agent *actions.Agent, cost dsl.Cost, rule string, g *actions.Group, alg dsl.Algorithm, reassign, fromQueue, offered bool) {
	e.commitLoad(conv, agent, agent.CostOf(cost, conv.channel), rule, g, alg, reassign, fromQueue, offered)
}

// commitLoad is commit with the load the conversation takes worked out.
func (e *Engine) commitLoad(conv *conversation, agent *actions.Agent, load int64, rule string, g *actions.Group, alg dsl.Algorithm, reassign, fromQueue, offered bool) {
	from := agentID(conv.assignee, reassign)
	e.unplace(conv)
	e.pool.Take(agent, load, conv.channel, e.clock)
	conv.assignee, conv.load = agent, load
	st := e.stats.agents[agent]
	st.assigned++
	st.peak = max(st.peak, agent.Load)
	act := Action{Type: ActAssign, Rule: rule, Conversation: conv.id, Agent: agent.ID, From: from, FromQueue: fromQueue, Offered: offered}
	if g != nil {
		e.pool.Turn(g, agent)
		act.Group, act.Algorithm = g.Name, string(alg)
		conv.group = g.Name
	}
	// The first agent a contact is assigned to becomes its owner, unless
	// the CRM gave one, or owners come only from the CRM.
	if conv.contact.owner == (sym{}) && (e.rs.Team == nil || !e.rs.Team.OwnersFromCRM) {
		conv.contact.owner = intern(agent.ID)
	}
	e.out = append(e.out, act)
}

// assignOf is the assign that queued waiting work: the rule's own when
// known, or one made from what the work keeps (with no else).
func (e *Engine) assignOf(w *actions.Waiting) *dsl.Assign {
	if w.Assign != nil {
		return w.Assign
	}
	a := &dsl.Assign{Target: dsl.TargetGroup, Algorithm: w.Algorithm, Skills: w.Skills, Cost: w.Cost,
		IncludingAway: w.IncludingAway, Limit: w.Limit, LimitPer: w.Per, Offer: w.Offer, EvenIfOffline: w.EvenIfOffline}
	if w.Group != nil {
		a.Name = w.Group.Name
	} else {
		a.Target, a.Name = dsl.TargetUser, w.Agent.ID
	}
	w.Assign = a
	return a
}

// queue puts the conversation in the waiting line of the assign's group or
// agent.
func (e *Engine) queue(conv *conversation, a *dsl.Assign, rule string, at *ActionTrace, why reason) {
	w := &actions.Waiting{Conversation: conv.id, Rule: rule, Priority: conv.priority, Since: e.clock,
		Algorithm: a.Algorithm, Cost: a.Cost, Skills: a.Skills, EvenIfOffline: a.EvenIfOffline, IncludingAway: a.IncludingAway,
		Channel: conv.channel, Limit: a.Limit, Per: a.LimitPer, Offer: a.Offer, Assign: a}
	if len(conv.excluded) > 0 {
		w.Excluded = slices.Clone(conv.excluded)
	}
	var line *actions.Line
	act := Action{Type: ActQueued, Rule: rule, Conversation: conv.id}
	if a.Target == dsl.TargetGroup {
		w.Group = e.pool.Group(a.Name)
		w.View = e.pool.View(w.Want())
		line = e.groupLines[w.Group]
		if line == nil {
			line = &actions.Line{}
			e.groupLines[w.Group] = line
		}
		act.Group = a.Name
	} else {
		id := a.Name
		switch a.Target {
		case dsl.TargetOwner:
			id = conv.contact.owner.String()
		case dsl.TargetLastSender:
			id = conv.contact.lastSender.String()
		case dsl.TargetPreviousAgent:
			id = conv.previous.String()
		}
		w.Agent = e.pool.Agent(id)
		line = e.agentLines[w.Agent]
		if line == nil {
			line = &actions.Line{}
			e.agentLines[w.Agent] = line
		}
		act.Agent = id
	}
	if a.Reassign {
		act.From = agentID(conv.assignee, true)
		w.Except = conv.assignee
	}
	e.unplace(conv)
	e.seq++
	w.Seq = e.seq
	line.Add(w)
	conv.waiting = w
	e.out = append(e.out, act)
	if at != nil {
		at.set(why.String() + "; waits " + strings.TrimPrefix(conv.where(), "waiting "))
	}
}

func (e *Engine) unqueue(conv *conversation) {
	w := conv.waiting
	if w.Group != nil {
		e.groupLines[w.Group].Remove(w)
	} else {
		e.agentLines[w.Agent].Remove(w)
	}
	conv.waiting = nil
}

// drain places waiting work, lowest priority number first, then oldest,
// while the agents whose capacity freed or who came online can take it.
func (e *Engine) drain() {
	if len(e.dirty) == 0 {
		return
	}
	defer func() { e.dirty = e.dirty[:0] }()
	var lines []*actions.Line
	for _, a := range e.dirty {
		if l := e.agentLines[a]; l != nil && !containsLine(lines, l) {
			lines = append(lines, l)
		}
		for _, g := range e.pool.GroupsOf(a) {
			if l := e.groupLines[g]; l != nil && !containsLine(lines, l) {
				lines = append(lines, l)
			}
		}
	}
	var step *Step
	for {
		var best *actions.Waiting
		var bestAgent *actions.Agent
		for _, l := range lines {
			for _, w := range l.Entries() {
				if best != nil && best.Before(w) {
					break
				}
				if agent := e.pool.Placeable(w); agent != nil {
					best, bestAgent = w, agent
					break
				}
			}
		}
		if best == nil {
			return
		}
		conv := e.convs[best.Conversation]
		then, thenRule, held := best.Then, best.ThenRule, best.Notify
		if thenRule == "" {
			thenRule = best.Rule
		}
		wait := e.clock.Sub(best.Since)
		e.stats.waited++
		e.stats.waitTotal += wait
		e.stats.waitMax = max(e.stats.waitMax, wait)
		if e.stats.waits != nil {
			e.stats.waits = append(e.stats.waits, wait)
		}
		if best.Offer > 0 {
			o := e.makeOffer(conv, bestAgent, e.assignOf(best), best.Rule, best.Group, false, true)
			o.then, o.thenRule = then, thenRule
			e.sendHeld(conv, bestAgent, held)
			if e.trace != nil {
				if step == nil {
					step = e.beginStep("waiting work")
				}
				step.Placed = append(step.Placed, fmt.Sprintf("%s (priority %d, waiting since %s) offered to %s until %s, as rule %q queued it",
					conv.id, best.Priority, best.Since.Format("15:04:05"), bestAgent.ID, o.expires.UTC().Format(time.RFC3339Nano), best.Rule))
			}
			continue
		}
		e.commit(conv, bestAgent, best.Cost, best.Rule, best.Group, best.Algorithm, false, true, false)
		if e.trace != nil {
			if step == nil {
				step = e.beginStep("waiting work")
			}
			step.Placed = append(step.Placed, fmt.Sprintf("%s (priority %d, waiting since %s) placed with %s, as rule %q queued it",
				conv.id, best.Priority, best.Since.Format("15:04:05"), bestAgent.ID, best.Rule))
		}
		if then != nil {
			ctx := evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to}
			e.setEnv(&ctx)
			e.out = append(e.out, Action{Type: ActReply, Rule: thenRule, Conversation: conv.id, Text: e.render(then.Text, &ctx)})
		}
		e.sendHeld(conv, bestAgent, held)
	}
}

// maxHeldNotify bounds the notifications held for one waiting
// conversation.
const maxHeldNotify = 8

// sendHeld sends the notifications held for waiting work to the agent who
// took it (or was offered it).
func (e *Engine) sendHeld(conv *conversation, agent *actions.Agent, held []actions.HeldNotify) {
	for _, h := range held {
		var text string
		if h.Notify.Text != nil {
			ctx := evalCtx{conv: conv, contact: conv.contact, channel: conv.channel, to: conv.to, agent: agent}
			e.setEnv(&ctx)
			text = e.render(h.Notify.Text, &ctx)
		}
		e.out = append(e.out, Action{Type: ActNotify, Rule: h.Rule, Target: agent.ID, Via: h.Notify.Via, Conversation: conv.id, Text: text})
	}
}

func containsLine(lines []*actions.Line, l *actions.Line) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

func (e *Engine) notify(n *dsl.Notify, r *dsl.Rule, ctx *evalCtx, at *ActionTrace) {
	convID := ""
	if ctx.conv != nil {
		convID = ctx.conv.id
	}
	var text string
	if n.Text != nil {
		text = e.render(n.Text, ctx)
	}
	send := func(target string) {
		e.out = append(e.out, Action{Type: ActNotify, Rule: r.Name, Target: target, Via: n.Via, Conversation: convID, Text: text})
	}
	switch n.To {
	case dsl.NotifyAgent:
		switch {
		case ctx.offered && ctx.agent != nil: // the agent who declined or missed the offer
			send(ctx.agent.ID)
		case ctx.conv != nil && ctx.conv.assignee != nil:
			send(ctx.conv.assignee.ID)
		case ctx.conv == nil && ctx.agent != nil:
			send(ctx.agent.ID)
		case ctx.placed && ctx.conv.waiting != nil && len(ctx.conv.waiting.Notify) < maxHeldNotify:
			// This event queued it: the agent who takes it is told then.
			w := ctx.conv.waiting
			w.Notify = append(w.Notify, actions.HeldNotify{Notify: n, Rule: r.Name})
			if at != nil {
				at.set("held: sent to the agent who takes the conversation, when it leaves its waiting line")
			}
			return
		default:
			at.set("nobody notified: the conversation has no agent")
			return
		}
	case dsl.NotifyOwner:
		if ctx.contact == nil || ctx.contact.owner == (sym{}) {
			at.set("nobody notified: the contact has no owner")
			return
		}
		send(ctx.contact.owner.String())
	case dsl.NotifyUser:
		send(n.Name)
	case dsl.NotifyEndpoint:
		e.out = append(e.out, Action{Type: ActNotify, Rule: r.Name, Endpoint: n.Name, Via: n.Via, Conversation: convID, Text: text})
	case dsl.NotifyAddress:
		e.out = append(e.out, Action{Type: ActNotify, Rule: r.Name, Address: n.Name, Via: n.Via, Conversation: convID, Text: text})
	case dsl.NotifyGroup:
		g := e.pool.Group(n.Name)
		if g == nil || len(g.Members) == 0 {
			if at != nil {
				at.set("nobody notified: group " + n.Name + " has no members")
			}
			return
		}
		for _, a := range g.Members {
			send(a.ID)
		}
	}
	at.set("sent")
}

func (e *Engine) set(s *dsl.Set, r *dsl.Rule, ctx *evalCtx, at *ActionTrace) {
	v, err := e.vm.Run(s.Value.Program, e.box)
	if err != nil {
		if at != nil {
			at.set("not set: " + err.Error())
		}
		return
	}
	c, conv := ctx.contact, ctx.conv
	str, _ := v.(string)
	switch {
	case strings.HasPrefix(s.Path, "contact.attrs."):
		if c == nil {
			at.set("not set: the event has no contact")
			return
		}
		setAttr(&c.attrs, strings.TrimPrefix(s.Path, "contact.attrs."), v)
	case strings.HasPrefix(s.Path, "conversation.attrs."):
		if conv == nil {
			at.set("not set: the event has no conversation")
			return
		}
		setAttr(&conv.attrs, strings.TrimPrefix(s.Path, "conversation.attrs."), v)
	case s.Path == "conversation.status":
		switch {
		case conv == nil:
			at.set("not set: the event has no conversation")
			return
		case str != StatusOpen && str != StatusPending && str != StatusSnoozed:
			if at != nil {
				at.set(fmt.Sprintf("not set: %q is not open, pending or snoozed", str))
			}
			return
		case conv.status == StatusClosed:
			at.set("not set: the conversation is closed")
			return
		}
		if at != nil && conv.waiting != nil && str != StatusOpen {
			at.set(fmt.Sprintf("%s is now %v; it leaves its waiting line (it was %s)", s.Path, v, conv.where()))
		}
		e.setStatus(conv, str)
	case s.Path == "agent.status":
		agent := ctx.agent
		if agent == nil && conv != nil {
			agent = conv.assignee
		}
		if agent == nil {
			at.set("not set: the event has no agent (and the conversation none)")
			return
		}
		if _, ok := e.pool.Presence(str); !ok {
			if at != nil {
				at.set(fmt.Sprintf("not set: the team has no status %q", str))
			}
			return
		}
		was := agent.Presence
		e.pool.SetStatus(agent, str, e.clock)
		if agent.Presence != was && (agent.Online() || agent.Away()) {
			e.dirty = append(e.dirty, agent)
		}
		act := Action{Type: ActSet, Rule: r.Name, Agent: agent.ID, Path: s.Path, Value: v}
		if conv != nil {
			act.Conversation = conv.id
		}
		e.out = append(e.out, act)
		if at != nil {
			at.set(fmt.Sprintf("%s's status is now %v", agent.ID, v))
		}
		if agent.Presence != was && agent.Presence == dsl.StatusOffline && len(e.offers) > 0 {
			e.recall(agent) // offline, it answers no offer
		}
		e.setEnv(ctx)
		return
	case s.Path == "conversation.priority":
		if conv == nil {
			at.set("not set: the event has no conversation")
			return
		}
		n, _ := v.(int)
		if n < 1 {
			if at != nil {
				at.set(fmt.Sprintf("not set: priority %v is below 1", v))
			}
			return
		}
		conv.priority = n
	default:
		if c == nil {
			at.set("not set: the event has no contact")
			return
		}
		switch s.Path {
		case "contact.name":
			c.name = str
		case "contact.email":
			c.email = str
		case "contact.phone":
			c.phone = str
		case "contact.lang":
			c.lang = intern(str)
		case "contact.country":
			c.country = intern(str)
		case "contact.owner":
			c.owner = intern(str)
		}
	}
	act := Action{Type: ActSet, Rule: r.Name, Path: s.Path, Value: v}
	if conv != nil {
		act.Conversation = conv.id
	}
	e.out = append(e.out, act)
	if at != nil {
		at.set(fmt.Sprintf("%s is now %v", s.Path, v))
	}
	e.setEnv(ctx) // later conditions see the new value
}

// setAttr sets a custom attribute to a copy of v.
func setAttr(attrs *map[string]any, key string, v any) {
	if *attrs == nil {
		*attrs = map[string]any{}
	}
	(*attrs)[key] = clone(v)
}

// clone copies the lists and maps in an attribute's new value, which may
// be the engine's own (conversation.tags, contact.attrs): an attribute
// keeps the value it was set to.
func clone(v any) any {
	switch x := v.(type) {
	case []string:
		return slices.Clone(x)
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clone(e)
		}
		return out
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clone(e)
		}
		return out
	}
	return v
}

// render fills a template's placeholders.
func (e *Engine) render(t *dsl.Template, ctx *evalCtx) string {
	if len(t.Parts) == 1 && t.Parts[0].Field == "" {
		return t.Parts[0].Text
	}
	var b strings.Builder
	for _, p := range t.Parts {
		if p.Field == "" {
			b.WriteString(p.Text)
			continue
		}
		b.WriteString(e.placeholder(p.Field, ctx))
	}
	return b.String()
}

func (e *Engine) placeholder(field string, ctx *evalCtx) string {
	env := e.env
	if key, ok := strings.CutPrefix(field, "contact.attrs."); ok {
		if v, ok := env.Contact.Attrs[key]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	who, prop, _ := strings.Cut(field, ".")
	var agent *actions.Agent
	switch who {
	case "agent":
		if ctx.conv != nil {
			agent = ctx.conv.assignee
		}
		if agent == nil {
			agent = ctx.agent
		}
	case "owner":
		if env.Contact.Owner == "" {
			return ""
		}
		agent = e.pool.Agent(env.Contact.Owner)
		if agent == nil {
			if prop == "id" {
				return env.Contact.Owner
			}
			return ""
		}
	}
	if who == "agent" || who == "owner" {
		if agent == nil {
			return ""
		}
		switch prop {
		case "id":
			return agent.ID
		case "name":
			if agent.Name == "" {
				return agent.ID
			}
			return agent.Name
		case "email":
			return agent.Email
		}
		return ""
	}
	if get, ok := placeholderFields[field]; ok {
		return get(env)
	}
	return ""
}

// namesAgent reports whether a text fills in the assigned agent.
func namesAgent(t *dsl.Template) bool {
	for _, p := range t.Parts {
		if strings.HasPrefix(p.Field, "agent.") {
			return true
		}
	}
	return false
}

// presentFor reports whether a group assign a counts member m as present:
// online; away too with including away; whatever its status with even if
// offline.
func presentFor(a *dsl.Assign, m *actions.Agent) bool {
	return m.Online() || a.IncludingAway && m.Away() || a.EvenIfOffline
}

// othersIn reports whether a member of g other than except could ever take
// conv for a: one with the skills, who did not decline or miss it, and
// takes work on its channel, whatever its status now.
func (e *Engine) othersIn(g *actions.Group, a *dsl.Assign, except *actions.Agent, conv *conversation) bool {
	for _, m := range g.Members {
		if m != except && !slices.Contains(conv.excluded, m) && m.HasSkills(a.Skills) && !m.TakesNone(conv.channel) {
			return true
		}
	}
	return false
}
