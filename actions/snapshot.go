package actions

import (
	"fmt"
	"time"
)

// What an engine snapshot keeps of a pool, and how it is put back. The
// indexes (views) are not kept: they follow from the agents' state.

// RandState returns the state of the random source, which the random
// algorithm draws from.
func (p *Pool) RandState() []byte {
	b, _ := p.src.MarshalBinary() // a PCG's never fails
	return b
}

// SetRandState puts back a state RandState returned.
func (p *Pool) SetRandState(b []byte) error { return p.src.UnmarshalBinary(b) }

// LastTurn is the member position the group assigned last, for round
// robin; -1 for none.
func (g *Group) LastTurn() int { return g.last }

// SetLastTurn puts back what LastTurn returned.
func (g *Group) SetLastTurn(pos int) error {
	if pos < -1 || pos >= len(g.Members) {
		return fmt.Errorf("group %s has no member position %d", g.Name, pos)
	}
	g.last = pos
	return nil
}

// SetState puts back an agent's live state: status, load, open
// conversations and last activity.
func (p *Pool) SetState(a *Agent, status string, load int64, open int, lastActive time.Time) error {
	presence, ok := p.Presence(status)
	if !ok {
		return fmt.Errorf("agent %s: unknown status %q", a.ID, status)
	}
	p.setStatus(a, status, presence)
	a.Load, a.Open, a.LastActive = load, open, lastActive
	a.refresh()
	return nil
}

// Turns is what fair, fewest_served and longest_free know of an agent,
// as a snapshot keeps it.
type Turns struct {
	Assigned    uint64 // the pool's number of its last assignment; 0: never
	Served      int
	Finished    time.Time
	OnlineSince time.Time
}

// Turns returns an agent's Turns.
func (p *Pool) Turns(a *Agent) Turns {
	return Turns{Assigned: a.assigned, Served: a.Served, Finished: a.Finished, OnlineSince: a.OnlineSince}
}

// SetTurns puts back what Turns returned.
func (p *Pool) SetTurns(a *Agent, t Turns) error {
	if t.Assigned > p.assignments || t.Served < 0 {
		return fmt.Errorf("agent %s: assignment %d of %d, %d served", a.ID, t.Assigned, p.assignments, t.Served)
	}
	a.assigned, a.Served, a.Finished, a.OnlineSince = t.Assigned, t.Served, t.Finished, t.OnlineSince
	a.refresh()
	return nil
}

// Assignments is how many assignments the pool made.
func (p *Pool) Assignments() uint64 { return p.assignments }

// SetAssignments puts back what Assignments returned.
func (p *Pool) SetAssignments(n uint64) { p.assignments = n }

// Recent returns the times of the agent's latest assignments that
// fairness limits count, oldest first.
func (p *Pool) Recent(a *Agent) []time.Time { return a.recent.times() }

// SetRecent puts back what Recent returned. Times beyond what the rules'
// largest limit needs are dropped.
func (p *Pool) SetRecent(a *Agent, times []time.Time) {
	a.recent = ring{t: make([]time.Time, p.keep)}
	for _, t := range times {
		a.recent.add(t)
	}
	a.refresh()
}

// SetOffers sets how many offers each agent holds, as counted from the
// conversations offered: offers(a) for each agent. The capacity they hold
// is in the agent's load already.
func (p *Pool) SetOffers(offers func(*Agent) int) {
	for _, a := range p.Agents {
		a.offers = offers(a)
		a.refresh()
	}
}
