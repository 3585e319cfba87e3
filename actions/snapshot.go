package actions

import (
	"fmt"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
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
	switch status {
	case dsl.StatusOnline, dsl.StatusAway, dsl.StatusOffline:
	default:
		return fmt.Errorf("agent %s: unknown status %q", a.ID, status)
	}
	p.SetStatus(a, status)
	a.Load, a.Open, a.LastActive = load, open, lastActive
	a.refresh()
	return nil
}
