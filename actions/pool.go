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
	// Capacity in fixed-point units; 0 means unlimited. Unused when the
	// agent has a budget per channel (PerChannel).
	Capacity int64
	// PerChannel: team.yaml gives the agent a budget per channel.
	PerChannel bool
	Skills     []string
	// Status is the agent's status as named (online, or team.yaml's own,
	// such as lunch); Presence is what it routes as: online, away or
	// offline.
	Status   string
	Presence string
	// Load is the capacity in use, in fixed-point units, on every channel.
	Load int64
	// Open counts the open conversations assigned or offered to the
	// agent, on every channel.
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
	// Declined counts the offers the agent declined, Missed those it let
	// expire, MissedInARow those it let expire since it last answered one.
	Declined, Missed, MissedInARow int
	// offers counts the offers the agent holds: toward fairness limits,
	// each is an assignment to come.
	offers int
	// assigned is the pool's number of the agent's last assignment; 0 for
	// never (fair).
	assigned uint64
	// budgets are the per-channel budgets: the channels team.yaml lists,
	// then the channels met since that the default covers.
	budgets    []Budget
	listed     int // budgets[:listed] are team.yaml's; the rest, channels in use
	defaultCap int64
	hasDefault bool
	// recent holds the times of the agent's latest assignments, for
	// fairness limits.
	recent ring

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

// Budget is an agent's capacity and use on one channel, in fixed-point
// units.
type Budget struct {
	Channel  string
	Capacity int64
	Load     int64
	Open     int
}

// budget returns the agent's budget for a channel: the one listed, or the
// default's (empty use), or none (0 capacity).
func (a *Agent) budget(ch string) Budget {
	for _, b := range a.budgets {
		if b.Channel == ch {
			return b
		}
	}
	if a.hasDefault {
		return Budget{Channel: ch, Capacity: a.defaultCap}
	}
	return Budget{Channel: ch}
}

// use adds load and open conversations to the agent, on ch's budget too.
func (a *Agent) use(ch string, load int64, open int) {
	a.Load += load
	a.Open += open
	if !a.PerChannel {
		return
	}
	for i := range a.budgets {
		if b := &a.budgets[i]; b.Channel == ch {
			b.Load += load
			b.Open += open
			if i >= a.listed && b.Load == 0 && b.Open == 0 {
				a.budgets = slices.Delete(a.budgets, i, i+1) // no work left on it
			}
			return
		}
	}
	b := a.budget(ch)
	b.Load, b.Open = load, open
	// Channels in use after the listed ones, by name.
	i := a.listed
	for i < len(a.budgets) && a.budgets[i].Channel < ch {
		i++
	}
	a.budgets = slices.Insert(a.budgets, i, b)
}

// Budgets lists the agent's per-channel budgets: each channel team.yaml
// lists, then each other channel it has work on, by name; nil without
// budgets per channel.
func (a *Agent) Budgets() []Budget { return a.budgets }

// DefaultBudget is the capacity of each channel team.yaml does not list;
// ok is false when there is no default (those channels take nothing).
func (a *Agent) DefaultBudget() (capacity int64, ok bool) { return a.defaultCap, a.hasDefault }

// CapacityOn is the capacity that a conversation on channel ch draws on; 0
// means unlimited for an agent with one budget, none for a per-channel one.
func (a *Agent) CapacityOn(ch string) int64 {
	if !a.PerChannel {
		return a.Capacity
	}
	return a.budget(ch).Capacity
}

// LoadOn is the load on the budget a conversation on channel ch draws on.
func (a *Agent) LoadOn(ch string) int64 {
	if !a.PerChannel {
		return a.Load
	}
	return a.budget(ch).Load
}

// OpenOn counts the conversations on the budget a conversation on channel
// ch draws on (least_active).
func (a *Agent) OpenOn(ch string) int {
	if !a.PerChannel {
		return a.Open
	}
	return a.budget(ch).Open
}

// Spare is the free capacity, in fixed-point units, of the budget a
// conversation on channel ch draws on.
func (a *Agent) Spare(ch string) int64 {
	if !a.PerChannel {
		if a.Capacity == 0 {
			return unlimited
		}
		return a.Capacity - a.Load
	}
	b := a.budget(ch)
	return b.Capacity - b.Load
}

// CostOf returns what one conversation of the given cost on channel ch
// takes from the agent: Units, or Percent of the channel's capacity
// (nothing when unlimited).
func (a *Agent) CostOf(c dsl.Cost, ch string) int64 {
	switch {
	case c.Percent > 0:
		return int64(math.Round(float64(a.CapacityOn(ch)) * c.Percent / 100))
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

// TakesNone reports whether the agent has no capacity at all for channel
// ch: a budget of 0 there, or none (not listed, and no default).
func (a *Agent) TakesNone(ch string) bool { return a.PerChannel && a.CapacityOn(ch) == 0 }

// Fits reports whether the agent could take a conversation of that cost
// on channel ch now, status aside. A per-channel budget of 0 takes
// nothing.
func (a *Agent) Fits(c dsl.Cost, ch string) bool {
	if a.PerChannel && a.CapacityOn(ch) == 0 {
		return false
	}
	return a.Spare(ch) >= a.CostOf(c, ch)
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
	// now is the engine's clock, for fairness limits.
	now time.Time
	// limits are the fairness limits in the rules, each with the agents
	// whose window frees budget next, in time order; keep is the largest
	// limit: how many assignment times each agent keeps.
	limits []*limitQueue
	keep   int
	// perChannel: some agent has a budget per channel, so views are kept
	// per channel.
	perChannel bool
	// listed are the channels some agent's budget names. Views for the
	// others (each channel its own budget of the agents' default) are
	// kept for the MaxOtherChannels used last: channel names come from
	// the events, and every view costs something at each change of its
	// members.
	listed map[string]bool
	others map[string][]*View
	uses   uint64 // counts the uses of those views, to find the oldest
}

// MaxOtherChannels is how many channels that no budget lists keep their
// views between events; a view let go is built again when asked for.
var MaxOtherChannels = 64

// Want is what an assign asks of a group's members: the skills, the cost
// and the channel of the conversation, whether away members may take it,
// and a fairness limit (Limit assignments per Per; 0 for none).
type Want struct {
	Group  string
	Skills []string
	Cost   dsl.Cost
	Away   bool
	// Offline: members take it whatever their presence (even if offline).
	Offline bool
	Limit   int
	Per     time.Duration
	Channel string
}

// WantOf is what a group assign asks for a conversation on channel ch.
func WantOf(a *dsl.Assign, ch string) Want {
	return Want{Group: a.Name, Skills: a.Skills, Cost: a.Cost, Away: a.IncludingAway, Offline: a.EvenIfOffline, Limit: a.Limit, Per: a.LimitPer, Channel: ch}
}

type viewKey struct {
	group   string
	skills  string
	cost    dsl.Cost
	away    bool
	offline bool
	limit   int
	per     time.Duration
	channel string
}

// limitQueue holds, for one fairness limit, when each limited agent gets
// budget back: a min-heap on the time.
type limitQueue struct {
	n   int
	per time.Duration
	q   []expiry
}

func (l *limitQueue) push(e expiry) {
	l.q = append(l.q, e)
	i := len(l.q) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !l.q[i].until.Before(l.q[parent].until) {
			break
		}
		l.q[i], l.q[parent] = l.q[parent], l.q[i]
		i = parent
	}
}

func (l *limitQueue) pop() expiry {
	top := l.q[0]
	last := len(l.q) - 1
	l.q[0] = l.q[last]
	l.q[last] = expiry{}
	l.q = l.q[:last]
	i := 0
	for {
		small, left, right := i, 2*i+1, 2*i+2
		if left < len(l.q) && l.q[left].until.Before(l.q[small].until) {
			small = left
		}
		if right < len(l.q) && l.q[right].until.Before(l.q[small].until) {
			small = right
		}
		if small == i {
			return top
		}
		l.q[i], l.q[small] = l.q[small], l.q[i]
		i = small
	}
}

type expiry struct {
	until time.Time
	a     *Agent
}

// ring keeps the times of an agent's latest assignments.
type ring struct {
	t    []time.Time
	next int
	n    int
}

func (r *ring) add(t time.Time) {
	if len(r.t) == 0 {
		return
	}
	r.t[r.next] = t
	if r.next++; r.next == len(r.t) {
		r.next = 0
	}
	if r.n < len(r.t) {
		r.n++
	}
}

// nth returns the k-th latest time (1: the latest).
func (r *ring) nth(k int) (time.Time, bool) {
	if k < 1 || k > r.n {
		return time.Time{}, false
	}
	i := r.next - k
	if i < 0 {
		i += len(r.t)
	}
	return r.t[i], true
}

// times returns the kept times, oldest first.
func (r *ring) times() []time.Time {
	out := make([]time.Time, 0, r.n)
	for k := r.n; k >= 1; k-- {
		t, _ := r.nth(k)
		out = append(out, t)
	}
	return out
}

// resize keeps up to size latest times.
func (r *ring) resize(size int) {
	ts := r.times()
	*r = ring{t: make([]time.Time, size)}
	for _, t := range ts {
		r.add(t)
	}
}

// NewPool builds the pool from a team, with indexes for every group assign
// in the rules. seed drives the random algorithm.
func NewPool(team *dsl.Team, rules []*dsl.Rule, seed uint64) *Pool {
	p := &Pool{
		agents: map[string]*Agent{},
		groups: map[string]*Group{},
		views:  map[viewKey]*View{},
		team:   team,
		listed: map[string]bool{},
		others: map[string][]*View{},
	}
	p.src = rand.NewPCG(seed, 0x5157)
	p.rng = rand.New(p.src)
	defer p.setKeep(p.keep) // after the agents, and the rules' limits
	if team != nil {
		for i, ta := range team.Agents {
			a := &Agent{ID: ta.ID, Name: ta.Name, Email: ta.Email, Capacity: int64(ta.Capacity) * Unit,
				Skills: ta.Skills, Status: ta.Status, Index: i}
			a.Presence, _ = team.Presence(ta.Status)
			if ta.Channels != nil {
				a.PerChannel = true
				p.perChannel = true
				for _, b := range ta.Channels {
					if b.Channel == dsl.DefaultChannel {
						a.defaultCap, a.hasDefault = int64(b.Capacity)*Unit, true
						continue
					}
					a.budgets = append(a.budgets, Budget{Channel: b.Channel, Capacity: int64(b.Capacity) * Unit})
					p.listed[b.Channel] = true
				}
				a.listed = len(a.budgets)
			}
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
		if as.Limit > 0 {
			p.addLimit(as.Limit, as.LimitPer)
		}
		// With budgets per channel, views are per channel: each is built
		// when a conversation on that channel asks.
		if !p.perChannel {
			if v := p.View(WantOf(as, "")); v != nil {
				v.use(slotOf(as.Algorithm))
			}
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
// conversation of the default cost on channel ch.
func (p *Pool) AvailableCount(group, ch string) int {
	v := p.View(Want{Group: group, Channel: ch})
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

// View returns the index of a group's members that want asks for,
// building it on first use. Nil when the group does not exist.
func (p *Pool) View(want Want) *View {
	if !p.perChannel {
		want.Channel = "" // one budget per agent: every channel is alike
	}
	if want.Limit <= 0 {
		want.Limit, want.Per = 0, 0
	}
	key := viewKey{group: want.Group, skills: strings.Join(want.Skills, "\x00"), cost: want.Cost, away: want.Away, offline: want.Offline,
		limit: want.Limit, per: want.Per, channel: want.Channel}
	if v, ok := p.views[key]; ok {
		if v.other {
			p.uses++
			v.touched = p.uses
		}
		return v
	}
	g := p.groups[want.Group]
	if g == nil {
		return nil
	}
	if want.Limit > 0 {
		p.addLimit(want.Limit, want.Per)
	}
	v := newView(p, g, want)
	v.key = key
	p.views[key] = v
	if ch := want.Channel; ch != "" && !p.listed[ch] {
		if _, ok := p.others[ch]; !ok && len(p.others) >= MaxOtherChannels {
			p.dropOldestChannel()
		}
		p.uses++
		v.other, v.touched = true, p.uses
		p.others[ch] = append(p.others[ch], v)
	}
	return v
}

// dropOldestChannel lets go of the views of the unlisted channel used
// longest ago that no waiting work holds: they leave their members'
// indexes. Channels with waiting work keep theirs, past the limit if need
// be: that work is state, and is checked at every change.
func (p *Pool) dropOldestChannel() {
	oldest, at := "", uint64(0)
channels:
	for ch, vs := range p.others {
		last := uint64(0)
		for _, v := range vs {
			if v.pins > 0 {
				continue channels
			}
			last = max(last, v.touched)
		}
		if oldest == "" || last < at || last == at && ch < oldest {
			oldest, at = ch, last
		}
	}
	if oldest == "" {
		return
	}
	for _, v := range p.others[oldest] {
		v.dropped = true
		delete(p.views, v.key)
		v.leave()
	}
	delete(p.others, oldest)
}

// addLimit makes the pool track a fairness limit.
func (p *Pool) addLimit(n int, per time.Duration) {
	for _, l := range p.limits {
		if l.n == n && l.per == per {
			return
		}
	}
	p.limits = append(p.limits, &limitQueue{n: n, per: per})
	if n > p.keep {
		p.setKeep(n)
	}
	p.rebuildLimits()
}

// minKeep is how many assignment times every agent keeps, limits or not,
// so that a limit up to that size added by a reload counts the
// assignments made before it.
const minKeep = 16

// setKeep makes every agent keep its latest n assignment times (at least
// minKeep), keeping the times it has.
func (p *Pool) setKeep(n int) {
	p.keep = max(n, minKeep)
	for _, a := range p.Agents {
		if len(a.recent.t) < p.keep {
			a.recent.resize(p.keep)
		}
	}
}

// limitedUntil is when an agent limited to n assignments per window gets
// budget back by the window alone; zero (or a past time) when the window
// does not limit it. The offers it holds count as assignments to come.
func (p *Pool) limitedUntil(a *Agent, n int, per time.Duration) time.Time {
	t, ok := a.recent.nth(n - a.offers)
	if !ok {
		return time.Time{}
	}
	return t.Add(per)
}

// Limited reports whether an agent received n assignments within the
// window (now − per, now], counting the offers it holds.
func (p *Pool) Limited(a *Agent, n int, per time.Duration) bool {
	if n <= 0 {
		return false
	}
	return a.offers >= n || p.limitedUntil(a, n, per).After(p.now)
}

// LimitedUntil is when an agent limited now gets budget back: its n-th
// latest assignment leaves the window.
func (p *Pool) LimitedUntil(a *Agent, n int, per time.Duration) time.Time {
	return p.limitedUntil(a, n, per)
}

// Limits reports whether the pool tracks any fairness limit.
func (p *Pool) Limits() bool { return len(p.limits) > 0 }

// SetNow moves the pool's clock to t, for a pool with no limits (see
// Advance).
func (p *Pool) SetNow(t time.Time) {
	if t.After(p.now) {
		p.now = t
	}
}

// Now is the pool's clock.
func (p *Pool) Now() time.Time { return p.now }

// Advance moves the pool's clock to t and appends to woken the agents whose
// fairness window freed budget by then: their waiting work may be placed.
func (p *Pool) Advance(t time.Time, woken []*Agent) []*Agent {
	if !t.After(p.now) {
		return woken
	}
	p.now = t
	for _, l := range p.limits {
		for len(l.q) > 0 && !l.q[0].until.After(t) {
			a := l.pop().a
			a.refresh()
			woken = append(woken, a)
		}
	}
	return woken
}

// NextWindow is when a fairness window next gives a limited agent budget
// back; ok is false when no agent is limited.
func (p *Pool) NextWindow() (t time.Time, ok bool) {
	for _, l := range p.limits {
		if len(l.q) > 0 && (!ok || l.q[0].until.Before(t)) {
			t, ok = l.q[0].until, true
		}
	}
	return t, ok
}

// SetClock sets the pool's clock, as a snapshot restores it, and works out
// again which agents are limited and when they get budget back.
func (p *Pool) SetClock(t time.Time) {
	p.now = t
	p.rebuildLimits()
	for _, a := range p.Agents {
		a.refresh()
	}
}

// rebuildLimits works out each limit's queue from the agents' times.
func (p *Pool) rebuildLimits() {
	for _, l := range p.limits {
		l.q = l.q[:0]
		for _, a := range p.Agents {
			if until := p.limitedUntil(a, l.n, l.per); until.After(p.now) {
				l.push(expiry{until: until, a: a})
			}
		}
	}
}

// noteLimits queues when an agent just assigned gets budget back under
// each limit it has now reached.
func (p *Pool) noteLimits(a *Agent) {
	for _, l := range p.limits {
		if until := p.limitedUntil(a, l.n, l.per); until.After(p.now) {
			l.push(expiry{until: until, a: a})
		}
	}
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

// Take records a conversation on channel ch, of the given load, assigned
// to the agent at t.
func (p *Pool) Take(a *Agent, load int64, ch string, t time.Time) {
	a.use(ch, load, 1)
	a.LastActive = t
	p.assignments++
	a.assigned = p.assignments
	a.Served++
	a.recent.add(t)
	if len(p.limits) > 0 {
		p.noteLimits(a)
	}
	a.refresh()
}

// Release records a conversation on channel ch, of the given load, leaving
// the agent at t.
func (p *Pool) Release(a *Agent, load int64, ch string, t time.Time) {
	a.use(ch, -load, -1)
	a.Finished = t
	a.refresh()
}

// Reserve holds capacity for a conversation offered to the agent: it
// counts as load, not as activity or an assignment.
func (p *Pool) Reserve(a *Agent, load int64, ch string) {
	a.use(ch, load, 1)
	a.refresh()
}

// Unreserve gives back what Reserve held.
func (p *Pool) Unreserve(a *Agent, load int64, ch string) {
	a.use(ch, -load, -1)
	a.refresh()
}

// Offer holds capacity for a conversation offered to the agent, as
// Reserve does; until the offer ends it also counts toward fairness
// limits, as the assignment it may become.
func (p *Pool) Offer(a *Agent, load int64, ch string) {
	a.offers++
	a.use(ch, load, 1)
	p.noteLimits(a)
	a.refresh()
}

// Unoffer ends what Offer held.
func (p *Pool) Unoffer(a *Agent, load int64, ch string) {
	a.offers--
	a.use(ch, -load, -1)
	p.noteLimits(a)
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
// none is eligible. except (reassign) and the excluded agents (who
// declined or let an offer of the conversation expire) are never chosen.
func (p *Pool) Pick(v *View, alg dsl.Algorithm, except *Agent, excluded []*Agent) *Agent {
	if v != nil && v.dropped {
		v = p.View(v.want) // let go meanwhile: built again
	}
	if except != nil || len(excluded) > 0 {
		setExcluded(except, excluded, true)
		defer setExcluded(except, excluded, false)
	}
	return v.pick(alg, p.rng)
}

func setExcluded(except *Agent, excluded []*Agent, on bool) {
	if except != nil {
		except.excluded = on
		except.refresh()
	}
	for _, a := range excluded {
		a.excluded = on
		a.refresh()
	}
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
	p.now = old.now
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
		a.Declined, a.Missed, a.MissedInARow = o.Declined, o.Missed, o.MissedInARow
		if len(o.recent.t) > len(a.recent.t) {
			a.recent.resize(len(o.recent.t)) // an edit that lowered a limit keeps the history
		}
		for _, t := range o.recent.times() {
			a.recent.add(t)
		}
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
	p.rebuildLimits()
}

// ResetUse empties every agent's load and open conversations, on every
// channel, for the caller to put back with Reserve: how per-channel use is
// rebuilt from the conversations after a reload or a restore.
func (p *Pool) ResetUse() {
	for _, a := range p.Agents {
		a.Load, a.Open, a.offers = 0, 0, 0
		a.budgets = a.budgets[:a.listed]
		for i := range a.budgets {
			a.budgets[i].Load, a.budgets[i].Open = 0, 0
		}
		a.refresh()
	}
}

// PerChannel reports whether some agent has a budget per channel.
func (p *Pool) PerChannel() bool { return p.perChannel }
