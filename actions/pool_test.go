package actions

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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
		switch {
		case i%7 == 1:
			src += "    capacity: {voice: 1, chat: 2, default: 3}\n"
		case i%7 == 4:
			src += "    capacity: {voice: 1, chat: 3}\n"
		case i%3 != 0:
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

// refBudget is the reference's own count of an agent's use on one
// channel's budget.
type refBudget struct {
	load int64
	open int
}

// refAgent is what the reference knows of an agent, counted by the test
// itself: every assignment time, and the use of each budget.
type refAgent struct {
	times []time.Time
	use   map[string]*refBudget // by budget: the channel, or "" for one budget
}

// budgetOf is the budget a conversation on ch draws on, by team.yaml's
// definition: the channel listed, else its own default budget, else none.
func budgetOf(ta *dsl.Agent, ch string) (key string, capacity int64, per bool) {
	if ta.Channels == nil {
		return "", int64(ta.Capacity) * Unit, false
	}
	for _, b := range ta.Channels {
		if b.Channel == ch {
			return ch, int64(b.Capacity) * Unit, true
		}
	}
	for _, b := range ta.Channels {
		if b.Channel == "default" {
			return ch, int64(b.Capacity) * Unit, true
		}
	}
	return ch, 0, true
}

// reference picks by scanning, straight from the definitions.
func reference(g *Group, team *dsl.Team, ref map[*Agent]*refAgent, now time.Time, alg dsl.Algorithm, w Want, except *Agent, excluded []*Agent) *Agent {
	var eligible []*Agent
	spare := map[*Agent]int64{}
	open := map[*Agent]int{}
	for _, a := range g.Members {
		ta := team.Agent(a.ID)
		key, capacity, per := budgetOf(ta, w.Channel)
		u := ref[a].use[key]
		if u == nil {
			u = &refBudget{}
		}
		open[a] = u.open
		switch {
		case per:
			spare[a] = capacity - u.load
		case capacity == 0:
			spare[a] = 1 << 60
		default:
			spare[a] = capacity - u.load
		}
		cost := Unit
		switch {
		case w.Cost.Percent > 0:
			cost = int(math.Round(float64(capacity) * w.Cost.Percent / 100))
		case w.Cost.Units > 0:
			cost = int(Units(w.Cost.Units))
		}
		fits := spare[a] >= int64(cost) && !(per && capacity == 0)
		inWindow := 0
		for _, t := range ref[a].times {
			if t.After(now.Add(-w.Per)) && !t.After(now) {
				inWindow++
			}
		}
		limited := w.Limit > 0 && inWindow >= w.Limit
		present := a.Presence == "online" || w.Away && a.Presence == "away"
		if a != except && !slices.Contains(excluded, a) && present && fits && !limited && a.HasSkills(w.Skills) {
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
			better = open[a] < open[best] || (open[a] == open[best] && idleLess(a, best))
		case dsl.MostAvailable:
			better = spare[a] > spare[best] || (spare[a] == spare[best] && idleLess(a, best))
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
	// With one unlisted channel's views kept, they are let go and built
	// again all the time, and views held meanwhile are asked too.
	for _, keep := range []int{MaxOtherChannels, 1} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			defer func(n int) { MaxOtherChannels = n }(MaxOtherChannels)
			MaxOtherChannels = keep
			pickMatchesReference(t)
		})
	}
}

func pickMatchesReference(t *testing.T) {
	team := testTeam(37)
	p := NewPool(team, nil, 1)
	g := p.Group("G")
	rng := rand.New(rand.NewPCG(7, 7))
	now := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	costs := []dsl.Cost{{}, {Units: 2}, {Percent: 50}}
	skillSets := [][]string{nil, {"fr"}}
	channels := []string{"", "voice", "chat", "sms", "whatsapp", "line"}
	held := map[string]*View{} // a view asked for earlier, by its want
	limits := []struct {
		n   int
		per time.Duration
	}{{0, 0}, {2, 5 * time.Second}, {3, 20 * time.Second}}
	// The limits are the rules': known before the first assignment.
	for _, l := range limits[1:] {
		p.View(Want{Group: "G", Limit: l.n, Per: l.per})
	}
	ref := map[*Agent]*refAgent{}
	for _, a := range p.Agents {
		ref[a] = &refAgent{use: map[string]*refBudget{}}
	}
	refUse := func(a *Agent, ch string, load int64, open int) {
		key, _, _ := budgetOf(team.Agent(a.ID), ch)
		u := ref[a].use[key]
		if u == nil {
			u = &refBudget{}
			ref[a].use[key] = u
		}
		u.load += load
		u.open += open
	}
	type taken struct {
		a        *Agent
		load     int64
		ch       string
		reserved bool
	}
	var open []taken
	for step := range 30000 {
		now = now.Add(time.Duration(rng.IntN(3)) * time.Second) // ties happen
		p.Advance(now, nil)
		switch op := rng.IntN(10); {
		case op < 2:
			a := p.Agents[rng.IntN(len(p.Agents))]
			p.SetStatus(a, []string{"online", "away", "offline", "lunch", "training", "available"}[rng.IntN(6)], now)
		case op < 4 && len(open) > 0:
			i := rng.IntN(len(open))
			o := open[i]
			if o.reserved {
				p.Unreserve(o.a, o.load, o.ch)
			} else {
				p.Release(o.a, o.load, o.ch, now)
			}
			refUse(o.a, o.ch, -o.load, -1)
			open = append(open[:i], open[i+1:]...)
		case op < 5:
			p.Touch(p.Agents[rng.IntN(len(p.Agents))], now)
		default:
			algs := []dsl.Algorithm{dsl.RoundRobin, dsl.LongestIdle, dsl.LeastActive, dsl.MostAvailable, dsl.Fair, dsl.FewestServed, dsl.LongestFree}
			alg := algs[rng.IntN(len(algs))]
			l := limits[rng.IntN(len(limits))]
			w := Want{Group: "G", Cost: costs[rng.IntN(len(costs))], Skills: skillSets[rng.IntN(len(skillSets))],
				Away: rng.IntN(3) == 0, Channel: channels[rng.IntN(len(channels))], Limit: l.n, Per: l.per}
			var except *Agent
			if rng.IntN(4) == 0 {
				except = p.Agents[rng.IntN(len(p.Agents))]
			}
			var excluded []*Agent
			for range rng.IntN(3) {
				excluded = append(excluded, p.Agents[rng.IntN(len(p.Agents))])
			}
			v := p.View(w)
			key := fmt.Sprintf("%+v", w)
			if h := held[key]; h != nil && rng.IntN(2) == 0 {
				v = h
			}
			held[key] = v
			got := p.Pick(v, alg, except, excluded)
			want := reference(g, team, ref, now, alg, w, except, excluded)
			if got != want {
				for _, a := range []*Agent{got, want} {
					if a != nil {
						t.Logf("%s: presence %s ex %v times %v ring %v now %v limited %v fits %v", a.ID, a.Presence, a.excluded, ref[a].times[max(0, len(ref[a].times)-4):], a.recent.times(), now, p.Limited(a, w.Limit, w.Per), a.Fits(w.Cost, w.Channel))
					}
				}
				t.Fatalf("step %d: %s %+v except %v excluded %d: got %v, want %v", step, alg, w, except, len(excluded), name(got), name(want))
			}
			if got != nil {
				load := got.CostOf(w.Cost, w.Channel)
				reserved := rng.IntN(5) == 0 // an offer: load, not an assignment
				if reserved {
					p.Reserve(got, load, w.Channel)
				} else {
					p.Take(got, load, w.Channel, now)
					p.Turn(g, got)
					ref[got].times = append(ref[got].times, now)
				}
				refUse(got, w.Channel, load, 1)
				open = append(open, taken{got, load, w.Channel, reserved})
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
		v := p.View(Want{Group: "G"})
		for i := range 5000 {
			a := p.Pick(v, dsl.Random, nil, nil)
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

// TestOtherChannelsBounded: channel names come from the events; views for
// channels no budget lists are kept for the MaxOtherChannels used last,
// so a client sending endless names costs neither memory nor time at
// each change of an agent.
func TestOtherChannelsBounded(t *testing.T) {
	team := testTeam(20)
	p := NewPool(team, nil, 1)
	for _, ch := range []string{"voice", "chat", ""} {
		p.View(Want{Group: "G", Channel: ch})
	}
	listed := len(p.views)
	for i := range 1000 {
		v := p.View(Want{Group: "G", Channel: fmt.Sprint("ch", i), Skills: []string{"fr"}})
		if a := p.Pick(v, dsl.LeastActive, nil, nil); a == nil {
			t.Fatalf("channel %d: nobody", i)
		}
	}
	if n := len(p.views) - listed; n != MaxOtherChannels {
		t.Fatalf("%d views of unlisted channels kept, want %d", n, MaxOtherChannels)
	}
	for _, a := range p.Agents {
		if len(a.slots) > 3+MaxOtherChannels {
			t.Fatalf("%s is in %d indexes", a.ID, len(a.slots))
		}
	}
	// The listed channels' views stay whatever comes.
	for _, ch := range []string{"voice", "chat", ""} {
		if _, ok := p.views[viewKey{group: "G", channel: ch}]; !ok {
			t.Fatalf("the view of %q was let go", ch)
		}
	}
}

// TestPinnedViewsKept: the views that waiting work holds are not let go,
// however many channels come (checking that work must not build them
// again at every change); the others are, and every agent's indexes stay
// those of its views.
func TestPinnedViewsKept(t *testing.T) {
	team := testTeam(20)
	p := NewPool(team, nil, 1)
	var line Line
	var held []*View
	for i := range 3 * MaxOtherChannels {
		w := &Waiting{Group: p.Group("G"), Channel: fmt.Sprint("wait", i), Seq: uint64(i)}
		w.View = p.View(w.Want())
		line.Add(w)
		held = append(held, w.View)
	}
	for i := range 1000 {
		p.View(Want{Group: "G", Channel: fmt.Sprint("pass", i)})
	}
	for _, v := range held {
		if v.dropped {
			t.Fatalf("the view of %s, held by waiting work, was let go", v.want.Channel)
		}
	}
	if n := len(p.others); n != 3*MaxOtherChannels+1 {
		t.Fatalf("%d unlisted channels keep views, want the %d with waiting work and the last one", n, 3*MaxOtherChannels)
	}
	// Once the work is placed, its channel's views may go.
	for _, w := range slices.Clone(line.Entries()) {
		line.Remove(w)
	}
	for i := range MaxOtherChannels {
		p.View(Want{Group: "G", Channel: fmt.Sprint("again", i)})
	}
	if n := len(p.others); n != 3*MaxOtherChannels+1 {
		t.Fatalf("%d unlisted channels keep views", n)
	}
	for _, a := range p.Agents {
		for j, s := range a.slots {
			if s.view.dropped || s.view.members[s.leaf] != a || int(s.view.slot[s.leaf]) != j {
				t.Fatalf("%s's index %d is not its own: %+v", a.ID, j, s)
			}
		}
	}
}
