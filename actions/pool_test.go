package actions

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

func testTeam(n int) *dsl.Team {
	src := "agents:\n"
	var members []string
	for i := range n {
		id := fmt.Sprintf("a%d", i)
		members = append(members, id)
		src += fmt.Sprintf("  - id: %s\n    status: online\n", id)
		if i%3 != 0 {
			src += fmt.Sprintf("    capacity: %d\n", 1+i%4)
		}
		if i%2 == 0 {
			src += "    skills: [fr]\n"
		}
	}
	src += "groups:\n  G: ["
	for i, m := range members {
		if i > 0 {
			src += ", "
		}
		src += m
	}
	src += "]\nstatuses: {lunch: away, training: offline, available: online}\n"
	team, ds := dsl.ParseTeam("team.yaml", []byte(src))
	if ds.HasErrors() {
		panic(ds)
	}
	return team
}

// reference picks by scanning, straight from the definitions.
func reference(g *Group, alg dsl.Algorithm, skills []string, cost dsl.Cost, away bool, except *Agent) *Agent {
	var eligible []*Agent
	for _, a := range g.Members {
		present := a.Presence == "online" || away && a.Presence == "away"
		if a != except && present && a.Fits(cost) && a.HasSkills(skills) {
			eligible = append(eligible, a)
		}
	}
	if len(eligible) == 0 {
		return nil
	}
	idleLess := func(a, b *Agent) bool { // a idle longer than b
		if a.LastActive.IsZero() != b.LastActive.IsZero() {
			return a.LastActive.IsZero()
		}
		if !a.LastActive.Equal(b.LastActive) {
			return a.LastActive.Before(b.LastActive)
		}
		return g.pos[a] < g.pos[b]
	}
	best := eligible[0]
	for _, a := range eligible[1:] {
		var better bool
		switch alg {
		case dsl.LongestIdle:
			better = idleLess(a, best)
		case dsl.LeastActive:
			better = a.Open < best.Open || (a.Open == best.Open && idleLess(a, best))
		case dsl.MostAvailable:
			better = a.Spare() > best.Spare() || (a.Spare() == best.Spare() && idleLess(a, best))
		case dsl.Fair: // least recently assigned; never first; then member order
			better = a.assigned < best.assigned || (a.assigned == best.assigned && g.pos[a] < g.pos[best])
		case dsl.FewestServed:
			better = a.Served < best.Served || (a.Served == best.Served && idleLess(a, best))
		case dsl.LongestFree: // never busy first, then free the longest, then member order
			switch {
			case a.Busy() != best.Busy():
				better = !a.Busy()
			case !a.Busy() || a.FreeSince().Equal(best.FreeSince()):
				better = g.pos[a] < g.pos[best]
			default:
				better = a.FreeSince().Before(best.FreeSince())
			}
		}
		if better {
			best = a
		}
	}
	if alg == dsl.RoundRobin {
		for _, a := range eligible {
			if g.pos[a] > g.last {
				return a
			}
		}
		return eligible[0]
	}
	return best
}

func TestPickMatchesReference(t *testing.T) {
	team := testTeam(37)
	p := NewPool(team, nil, 1)
	g := p.Group("G")
	rng := rand.New(rand.NewPCG(7, 7))
	now := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	costs := []dsl.Cost{{}, {Units: 2}, {Percent: 50}}
	skillSets := [][]string{nil, {"fr"}}
	type taken struct {
		a    *Agent
		load int64
	}
	var open []taken
	for step := range 20000 {
		now = now.Add(time.Duration(rng.IntN(3)) * time.Second) // ties happen
		switch op := rng.IntN(10); {
		case op < 2:
			a := p.Agents[rng.IntN(len(p.Agents))]
			p.SetStatus(a, []string{"online", "away", "offline", "lunch", "training", "available"}[rng.IntN(6)], now)
		case op < 4 && len(open) > 0:
			i := rng.IntN(len(open))
			p.Release(open[i].a, open[i].load, now)
			open = append(open[:i], open[i+1:]...)
		case op < 5:
			p.Touch(p.Agents[rng.IntN(len(p.Agents))], now)
		default:
			algs := []dsl.Algorithm{dsl.RoundRobin, dsl.LongestIdle, dsl.LeastActive, dsl.MostAvailable, dsl.Fair, dsl.FewestServed, dsl.LongestFree}
			alg := algs[rng.IntN(len(algs))]
			cost := costs[rng.IntN(len(costs))]
			skills := skillSets[rng.IntN(len(skillSets))]
			var except *Agent
			if rng.IntN(4) == 0 {
				except = p.Agents[rng.IntN(len(p.Agents))]
			}
			away := rng.IntN(3) == 0
			v := p.View("G", skills, cost, away)
			got := p.Pick(v, alg, except)
			want := reference(g, alg, skills, cost, away, except)
			if got != want {
				t.Fatalf("step %d: %s %v %v away %v except %v: got %v, want %v", step, alg, skills, cost, away, except, name(got), name(want))
			}
			if got != nil {
				load := got.CostOf(cost)
				p.Take(got, load, now)
				p.Turn(g, got)
				open = append(open, taken{got, load})
			}
		}
	}
}

func name(a *Agent) string {
	if a == nil {
		return "nobody"
	}
	return a.ID
}

func TestRandomIsSeededAndUniform(t *testing.T) {
	team := testTeam(10)
	counts := map[string]int{}
	var first []string
	for run := range 2 {
		p := NewPool(team, nil, 42)
		v := p.View("G", nil, dsl.Cost{}, false)
		for i := range 5000 {
			a := p.Pick(v, dsl.Random, nil)
			if run == 0 {
				counts[a.ID]++
				first = append(first, a.ID)
			} else if first[i] != a.ID {
				t.Fatalf("same seed, different pick at %d", i)
			}
		}
	}
	for id, n := range counts {
		if n < 350 || n > 650 {
			t.Errorf("%s picked %d times of 5000 among 10", id, n)
		}
	}
}
