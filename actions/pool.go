package actions

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-dev/switchboard/dsl"
)

// Unit is one unit of capacity in the pool's fixed-point arithmetic, so
// that percentages of a capacity add up exactly and deterministically.
const Unit = 1000

// unlimited stands for the spare capacity of an agent with no capacity set.
const unlimited = math.MaxInt64 / 4

// Units converts a number of capacity units to fixed point.
func Units(v float64) int64 { return int64(math.Round(v * Unit)) }

// Agent is one agent's live state.
type Agent struct {
	ID, Name, Email string
	// Capacity in fixed-point units; 0 means unlimited.
	Capacity int64
	Skills   []string
	// Status is the agent's status as named (online, or team.yaml's own,
	// such as lunch); Presence is what it routes as: online, away or
	// offline.
	Status   string
	Presence string
	// Load is the capacity in use, in fixed-point units.
	Load int64
	// Open counts the open conversations assigned to the agent.
	Open int
	// LastActive is the last assignment or outgoing message; zero if never.
	LastActive time.Time
	// Served counts the assignments since the agent last came online from
	// offline (fewest_served).
	Served int
	// Finished is when the agent last finished a conversation: closed,
	// moved away or unassigned; zero if never (longest_free).
	Finished time.Time
	// OnlineSince is when the agent last came online; zero for agents
	// online from the start (longest_free).
	OnlineSince time.Time
	// assigned is the pool's number of the agent's last assignment; 0 for
	// never (fair).
	assigned uint64

	Index    int // position in the pool
	excluded bool
	slots    []viewSlot
	groups   []*Group
}

type viewSlot struct {
	view *View
	leaf int
}

// Online reports whether the agent's status is online.
func (a *Agent) Online() bool { return a.Presence == dsl.StatusOnline }

// Away reports whether the agent's presence is away.
func (a *Agent) Away() bool { return a.Presence == dsl.StatusAway }

// Spare is the free capacity in fixed-point units.
func (a *Agent) Spare() int64 {
	if a.Capacity == 0 {
		return unlimited
	}
	return a.Capacity - a.Load
}

// CostOf returns what one conversation of the given cost takes from the
// agent: Units, or Percent of the agent's capacity (nothing when unlimited).
func (a *Agent) CostOf(c dsl.Cost) int64 {
	switch {
	case c.Percent > 0:
		return int64(math.Round(float64(a.Capacity) * c.Percent / 100))
	case c.Units > 0:
		return Units(c.Units)
	}
	return Unit
}

// HasSkills reports whether the agent has every skill.
func (a *Agent) HasSkills(skills []string) bool {
	for _, s := range skills {
		if !slices.Contains(a.Skills, s) {
			return false
		}
	}
	return true
}

// Fits reports whether the agent could take a conversation of that cost
// now, status aside.
func (a *Agent) Fits(c dsl.Cost) bool { return a.Spare() >= a.CostOf(c) }

// Eligible is the rule for every assign: online, room for the cost, every
// required skill.
func (a *Agent) Eligible(c dsl.Cost, skills []string) bool {
	return a.Online() && !a.excluded && a.Fits(c) && a.HasSkills(skills)
}

// Group is a team.yaml group with its round-robin turn.
type Group struct {
	Name    string
	Members []*Agent
	// last is the member position this group assigned last; -1 for none.
	last   int
	online int
	away   int
	pos    map[*Agent]int
	views  []*View
}

// Has reports whether a is a member of the group.
func (g *Group) Has(a *Agent) bool {
	_, ok := g.pos[a]
	return ok
}

// Pool is the live state of every agent and group, with an index per
// (group, skills, cost) that the rules can ask for.
type Pool struct {
	Agents []*Agent
	Groups []*Group
	agents map[string]*Agent
	groups map[string]*Group
	views  map[viewKey]*View
	rng    *rand.Rand
	src    *rand.PCG // rng's source: its state is part of a snapshot
	online int       // agents online
	team   *dsl.Team
	// assignments numbers every assignment, in order (fair).
	assignments uint64
}

type viewKey struct {
	group  string
	skills string
	cost   dsl.Cost
	away   bool
}

// NewPool builds the pool from a team, with indexes for every group assign
// in the rules. seed drives the random algorithm.
func NewPool(team *dsl.Team, rules []*dsl.Rule, seed uint64) *Pool {
	p := &Pool{
		agents: map[string]*Agent{},
		groups: map[string]*Group{},
		views:  map[viewKey]*View{},
		team:   team,
	}
	p.src = rand.NewPCG(seed, 0x5157)
	p.rng = rand.New(p.src)
	if team != nil {
		for i, ta := range team.Agents {
			a := &Agent{ID: ta.ID, Name: ta.Name, Email: ta.Email, Capacity: int64(ta.Capacity) * Unit,
				Skills: ta.Skills, Status: ta.Status, Index: i}
			a.Presence, _ = team.Presence(ta.Status)
			p.Agents = append(p.Agents, a)
			p.agents[a.ID] = a
			if a.Online() {
				p.online++
			}
		}
		for _, tg := range team.Groups {
			g := &Group{Name: tg.Name, last: -1, pos: map[*Agent]int{}}
			for i, id := range tg.Members {
				a := p.agents[id]
				g.Members = append(g.Members, a)
				g.pos[a] = i
				a.groups = append(a.groups, g)
				if a.Online() {
					g.online++
				}
				if a.Away() {
					g.away++
				}
			}
			p.Groups = append(p.Groups, g)
			p.groups[g.Name] = g
		}
	}
	for _, r := range rules {
		for _, act := range r.Actions {
			p.viewsFor(act)
		}
	}
	return p
}

func (p *Pool) viewsFor(act dsl.Action) {
	as, ok := act.(*dsl.Assign)
	if !ok {
		return
	}
	if as.Target == dsl.TargetGroup {
		if v := p.View(as.Name, as.Skills, as.Cost, as.IncludingAway); v != nil {
			v.use(slotOf(as.Algorithm))
		}
	}
	if as.Else != nil {
		p.viewsFor(as.Else)
	}
}

// Agent returns the agent with that id, or nil.
func (p *Pool) Agent(id string) *Agent { return p.agents[id] }

// GroupsOf returns the groups the agent is a member of.
func (p *Pool) GroupsOf(a *Agent) []*Group { return a.groups }

// Group returns the group with that name, or nil.
func (p *Pool) Group(name string) *Group { return p.groups[name] }

// OnlineCount counts online agents: in the group, or all with "".
func (p *Pool) OnlineCount(group string) int {
	if group == "" {
		return p.online
	}
	if g := p.groups[group]; g != nil {
		return g.online
	}
	return 0
}

// AvailableCount counts the group's online members with room for one more
// conversation of the default cost.
func (p *Pool) AvailableCount(group string) int {
	v := p.View(group, nil, dsl.Cost{}, false)
	if v == nil {
		return 0
	}
	return v.Eligible()
}

// AwayCount counts the group's away members.
func (p *Pool) AwayCount(group string) int {
	if g := p.groups[group]; g != nil {
		return g.away
	}
	return 0
}

// View returns the index of a group's members with those skills, for
// conversations of that cost, building it on first use; with away, away
// members are eligible too. Nil when the group does not exist.
func (p *Pool) View(group string, skills []string, cost dsl.Cost, away bool) *View {
	key := viewKey{group: group, skills: strings.Join(skills, "\x00"), cost: cost, away: away}
	if v, ok := p.views[key]; ok {
		return v
	}
	g := p.groups[group]
	if g == nil {
		return nil
	}
	v := newView(g, skills, cost, away)
	p.views[key] = v
	g.views = append(g.views, v)
	return v
}

// Presence returns what a status routes as (online, away or offline);
// ok is false for a status the team does not know.
func (p *Pool) Presence(status string) (string, bool) { return p.team.Presence(status) }

// StatusNames lists the statuses an agent may have.
func (p *Pool) StatusNames() []string { return p.team.StatusNames() }

// SetStatus changes an agent's status at t; status is one the team knows
// (see Presence).
func (p *Pool) SetStatus(a *Agent, status string, t time.Time) {
	was := a.Presence
	now, _ := p.Presence(status)
	if was == dsl.StatusOffline && now != dsl.StatusOffline {
		a.Served = 0
	}
	if was != dsl.StatusOnline && now == dsl.StatusOnline {
		a.OnlineSince = t
	}
	p.setStatus(a, status, now)
}

func (p *Pool) setStatus(a *Agent, status, presence string) {
	online, away := 0, 0
	if a.Online() {
		online--
	}
	if a.Away() {
		away--
	}
	a.Status, a.Presence = status, presence
	if a.Online() {
		online++
	}
	if a.Away() {
		away++
	}
	p.online += online
	for _, g := range a.groups {
		g.online += online
		g.away += away
	}
	a.refresh()
}

// Take records a conversation of the given load assigned to the agent at t.
func (p *Pool) Take(a *Agent, load int64, t time.Time) {
	a.Load += load
	a.Open++
	a.LastActive = t
	p.assignments++
	a.assigned = p.assignments
	a.Served++
	a.refresh()
}

// Release records a conversation of the given load leaving the agent at t.
func (p *Pool) Release(a *Agent, load int64, t time.Time) {
	a.Load -= load
	a.Open--
	a.Finished = t
	a.refresh()
}

// Busy says whether the agent ever had a conversation.
func (a *Agent) Busy() bool { return a.assigned > 0 }

// AssignedAgo is how many assignments the pool made since the agent's
// last, counting it (1: the agent had the last one); 0 for never.
func (p *Pool) AssignedAgo(a *Agent) uint64 {
	if a.assigned == 0 {
		return 0
	}
	return p.assignments - a.assigned + 1
}

// FreeSince is when the agent last finished a conversation or came
// online, whichever is later (longest_free); zero when online from the
// start and never finished one.
func (a *Agent) FreeSince() time.Time {
	if a.OnlineSince.After(a.Finished) {
		return a.OnlineSince
	}
	return a.Finished
}

// Touch records activity (an outgoing message) at t.
func (p *Pool) Touch(a *Agent, t time.Time) {
	a.LastActive = t
	a.refresh()
}

// Turn records that the group assigned a member, for round robin.
func (p *Pool) Turn(g *Group, a *Agent) {
	if i, ok := g.pos[a]; ok {
		g.last = i
	}
}

// Pick chooses an eligible member of the view by the algorithm; nil when
// none is eligible. except, when set, is never chosen (reassign).
func (p *Pool) Pick(v *View, alg dsl.Algorithm, except *Agent) *Agent {
	if except != nil {
		except.excluded = true
		except.refresh()
		defer func() {
			except.excluded = false
			except.refresh()
		}()
	}
	return v.pick(alg, p.rng)
}

// refresh updates every index the agent is in.
func (a *Agent) refresh() {
	for _, s := range a.slots {
		s.view.update(s.leaf)
	}
}

// TakeOver carries the live state of an older pool (the same team, or an
// edited one) into p: each agent's status, load, open conversations and
// last activity, matched by id; each group's round-robin turn, matched by
// the member it last assigned; and the random sequence. Agents that are
// gone are left out.
func (p *Pool) TakeOver(old *Pool) {
	p.rng, p.src = old.rng, old.src
	p.assignments = old.assignments
	for _, a := range p.Agents {
		o := old.agents[a.ID]
		if o == nil {
			continue
		}
		// A status the edited team no longer has routes as it did.
		if presence, ok := p.Presence(o.Status); ok {
			p.setStatus(a, o.Status, presence)
		} else {
			p.setStatus(a, o.Presence, o.Presence)
		}
		a.Load, a.Open, a.LastActive = o.Load, o.Open, o.LastActive
		a.Served, a.Finished, a.OnlineSince, a.assigned = o.Served, o.Finished, o.OnlineSince, o.assigned
		a.refresh()
	}
	for _, g := range p.Groups {
		og := old.groups[g.Name]
		if og == nil || og.last < 0 || og.last >= len(og.Members) {
			continue
		}
		if a := p.agents[og.Members[og.last].ID]; a != nil {
			p.Turn(g, a)
		}
	}
}
