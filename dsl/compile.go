package dsl

import (
	"errors"
	"fmt"
	"net/mail"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
	"github.com/switchboard-dev/switchboard/triggers"
)

type compiler struct {
	d            diags
	team         *Team
	rs           *RuleSet
	segments     map[string]*Segment
	segmentNames []string
	hours        map[string]*Hours
	ruleNames    map[string]Pos
	endpoints    []string // nil: not known
	// channels are the channel names the conditions compare with.
	channels []string
}

// compile checks parsed files against the team (nil when the rule set has
// no team.yaml), adds the mapping table's rows, and compiles them into a
// rule set. Files are taken in the order given. It returns every problem
// found; the rule set is nil when any of them is an error, so a rule set is
// never half-loaded.
func compile(files []*File, team *Team, set Sources) (*RuleSet, Diagnostics) {
	c := &compiler{
		team:      team,
		segments:  map[string]*Segment{},
		hours:     map[string]*Hours{},
		ruleNames: map[string]Pos{},
		endpoints: set.Endpoints,
	}
	c.rs = &RuleSet{Files: files, Team: team, Hours: c.hours, segments: c.segments}

	// Segments first: a rule may use a segment declared later or elsewhere.
	type pending struct {
		f   *File
		seg *Segment
		ast *segmentAST
	}
	var segs []pending
	for _, f := range files {
		for _, it := range f.Items {
			if it.Segment == nil {
				continue
			}
			name, ok := c.name(it.Segment.Name)
			if !ok {
				continue
			}
			pos := posOf(it.Segment.Pos)
			if prev := c.segments[name]; prev != nil {
				c.d.errorf(pos, CodeDuplicate, "rename one of them", "duplicate segment %q, first declared at %s", name, prev.Pos)
				continue
			}
			s := &Segment{Name: name, Pos: pos, Index: len(c.rs.Segments)}
			c.segments[name] = s
			c.segmentNames = append(c.segmentNames, name)
			c.rs.Segments = append(c.rs.Segments, s)
			segs = append(segs, pending{f, s, it.Segment})
		}
	}
	for _, p := range segs {
		p.seg.When = c.condition(p.f, p.ast.Cond, p.seg.Pos, 0)
	}
	c.checkSegmentCycles()

	for _, f := range files {
		for _, it := range f.Items {
			if it.Rule != nil {
				if r := c.rule(f, it.Rule); r != nil {
					c.rs.Rules = append(c.rs.Rules, r)
				}
			}
		}
	}
	// The mapping table's rows run after the rules' own: ops keep precedence.
	if set.Mappings != nil {
		var declared []string
		strict := set.Strict
		if team != nil && team.Attributes != nil {
			declared, strict = team.Attributes, true
		}
		c.rs.Rules = append(c.rs.Rules, c.table(*set.Mappings, strict, declared)...)
	}
	c.checkChannelBudgets()
	c.d.list.Sort()
	if c.d.list.HasErrors() || syntaxErrors(files) {
		return nil, c.d.list
	}
	return c.rs, c.d.list
}

// wellKnownChannels are channel names a message may come on without a
// rule naming them.
var wellKnownChannels = []string{"whatsapp", "sms", "mms", "web", "webchat", "chat", "livechat", "messenger", "facebook",
	"instagram", "telegram", "line", "viber", "wechat", "email", "voice", "phone", "call", "video", "twitter", "x",
	"slack", "teams", "api", "rcs", "apple", "google"}

// checkChannelBudgets warns about a per-channel capacity key that is no
// channel a rule names nor a well-known one: most likely a misspelling,
// whose budget would never be used.
func (c *compiler) checkChannelBudgets() {
	if c.team == nil {
		return
	}
	known := append(slices.Clone(wellKnownChannels), c.channels...)
	for _, a := range c.team.Agents {
		for _, b := range a.Channels {
			if b.Channel == DefaultChannel || slices.Contains(known, b.Channel) {
				continue
			}
			hint := didYouMean(b.Channel, known)
			if hint == "" {
				hint = "channels are what events give as channel; default covers every channel not listed"
			}
			c.d.warnf(b.Pos, CodeTeam, hint, "agent %s has a budget for channel %q, which no rule names and is not a known channel", a.ID, b.Channel)
		}
	}
}

// syntaxErrors reports whether any item failed to parse; ParseFile has
// already reported it.
func syntaxErrors(files []*File) bool {
	for _, f := range files {
		for _, it := range f.Items {
			if it.Err != nil {
				return true
			}
		}
	}
	return false
}

// name reads a bare or quoted name.
func (c *compiler) name(n *nameAST) (string, bool) {
	if n == nil {
		return "", false
	}
	if n.Quoted == "" {
		return n.Ident, true
	}
	s, err := unquote(n.Quoted)
	if err != nil {
		c.d.errorf(posOf(n.Pos), CodeSyntax, "", "%v", err)
		return "", false
	}
	if strings.TrimSpace(s) == "" {
		c.d.errorf(posOf(n.Pos), CodeSyntax, "", "name is empty")
		return "", false
	}
	return s, true
}

func (c *compiler) checkSegmentCycles() {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var visit func(s *Segment, path []string) bool
	visit = func(s *Segment, path []string) bool {
		switch state[s.Name] {
		case visiting:
			cycle := append(path[slices.Index(path, s.Name):], s.Name)
			c.d.errorf(s.Pos, CodeSegmentCycle, "", "segment %q refers to itself: %s", s.Name, strings.Join(cycle, " → "))
			return false
		case done:
			return true
		}
		state[s.Name] = visiting
		ok := true
		if s.When != nil {
			for _, ref := range s.When.Segments {
				if next := c.segments[ref]; next != nil && !visit(next, append(path, s.Name)) {
					ok = false
					break
				}
			}
		}
		state[s.Name] = done
		return ok
	}
	for _, s := range c.rs.Segments {
		visit(s, nil)
	}
}

func (c *compiler) rule(f *File, r *ruleAST) *Rule {
	rule := &Rule{Pos: posOf(r.Pos)}
	if r.Name != nil {
		name, ok := c.name(r.Name)
		if !ok {
			return nil
		}
		rule.Name = name
	} else {
		rule.Name = fmt.Sprintf("%s:%d", filepath.Base(f.Name), rule.Pos.Line)
	}
	if prev, dup := c.ruleNames[rule.Name]; dup {
		c.d.errorf(rule.Pos, CodeDuplicate, "give each rule its own name", "duplicate rule name %q, first used at %s", rule.Name, prev)
	} else {
		c.ruleNames[rule.Name] = rule.Pos
	}
	ok := c.trigger(&r.On, &rule.Trigger)
	if r.Cond != nil {
		// The condition starts after "where"; point at it when empty.
		rule.When = c.condition(f, r.Cond, posOf(r.Arrow.Pos), rule.Trigger.Kind)
	}
	rule.Actions = c.actions(f, r.Actions, rule.Trigger.Kind)
	if !ok {
		return nil
	}
	return rule
}

func (c *compiler) trigger(on *onAST, t *Trigger) bool {
	words := strings.Join(on.Trigger, " ")
	pos := posOf(on.Pos)
	pos.Col += 3 // past "on "
	pos.Offset += 3
	kind, ok := triggers.Lookup(words)
	if !ok {
		hint := didYouMean(words, triggers.Names())
		if hint == "" {
			hint = "triggers are " + quoteList(aliases(), "or")
		}
		c.d.errorf(pos, CodeTrigger, hint, "unknown trigger %q", words)
		return false
	}
	t.Kind = kind
	for _, extra := range on.Extra {
		c.d.errorf(posOf(extra.Pos), CodeSyntax, "", "unexpected %q after the trigger", extra.Value)
		return false
	}
	if !kind.TakesDuration() {
		if on.After != nil {
			c.d.errorf(posOf(on.After.Pos), CodeSyntax, "", "%s takes no duration, but %q follows it", kind.Alias(), on.After.Value)
			return false
		}
		return true
	}
	if on.After == nil {
		c.d.errorf(pos, CodeDuration, "write e.g. "+kind.Alias()+" 5m", "%s needs a duration", kind.Alias())
		return false
	}
	d, err := parseDuration(on.After.Value)
	if err != nil {
		c.d.errorf(posOf(on.After.Pos), CodeDuration, "write e.g. 90s, 5m, 1h30m or 2d", "%s", durationMsg(on.After.Value, err))
		return false
	}
	if d <= 0 {
		c.d.errorf(posOf(on.After.Pos), CodeDuration, "", "%s needs a duration above zero", kind.Alias())
		return false
	}
	t.After = d
	return true
}

func aliases() []string {
	var out []string
	for _, k := range triggers.Kinds() {
		out = append(out, k.Alias())
	}
	return out
}

// maxDuration is the longest duration a rule or team.yaml may give:
// ten years, far past any wait, and far inside what the clock counts.
const maxDuration = 3650 * 24 * time.Hour

// errDurationTooLong is parseDuration's error for a duration past
// maxDuration.
var errDurationTooLong = errors.New("longer than 3650d")

// durationMsg says what is wrong with a duration parseDuration refused.
func durationMsg(s string, err error) string {
	if errors.Is(err, errDurationTooLong) {
		return fmt.Sprintf("%q is too long: durations go up to 3650d (ten years)", s)
	}
	return fmt.Sprintf("%q is not a duration", s)
}

// parseDuration is time.ParseDuration plus a "d" (day) unit, up to
// maxDuration.
func parseDuration(s string) (time.Duration, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("not a duration")
	}
	var total time.Duration
	for s != "" {
		i := strings.IndexAny(s, "dhms")
		if i < 0 {
			return 0, fmt.Errorf("missing unit")
		}
		j := i + 1
		if s[i] == 'm' && j < len(s) && s[j] == 's' {
			j++
		}
		num, unit := s[:i], s[i:j]
		if unit == "d" {
			n, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, err
			}
			if n*float64(24*time.Hour) > float64(maxDuration) {
				return 0, errDurationTooLong
			}
			total += time.Duration(n * float64(24*time.Hour))
		} else {
			d, err := time.ParseDuration(num + unit)
			if err != nil {
				if strings.Contains(err.Error(), "invalid duration") && strings.Trim(num, "0123456789.") == "" {
					return 0, errDurationTooLong // overflows the clock
				}
				return 0, err
			}
			if d > maxDuration {
				return 0, errDurationTooLong
			}
			total += d
		}
		if total > maxDuration {
			return 0, errDurationTooLong
		}
		s = s[j:]
	}
	return total, nil
}

// actions compiles a rule's actions, reporting those that can never run.
func (c *compiler) actions(f *File, list []*actionAST, kind triggers.Kind) []Action {
	var out []Action
	var stopped *Stop
	for _, a := range list {
		act := c.action(f, a, kind)
		if act == nil {
			continue
		}
		if stopped != nil {
			c.d.errorf(act.ActionPos(), CodeUnreachable, "move it before stop, or remove it", "this action never runs: it comes after stop (at line %d)", stopped.Pos.Line)
			continue
		}
		if s, ok := act.(*Stop); ok {
			stopped = s
		}
		out = append(out, act)
	}
	return out
}

var usage = map[string]string{
	"assign":   "assign user NAME, assign owner, assign last_sender, assign previous_agent, assign group NAME [by ALGORITHM] or assign queue NAME",
	"reassign": "reassign user NAME, reassign owner, reassign last_sender, reassign previous_agent, reassign group NAME [by ALGORITHM] or reassign queue NAME",
	"unassign": "unassign",
	"untag":    "untag NAME",
	"cancel":   "cancel",
	"release":  "release",
	"close":    "close",
	"reply":    `reply "TEXT"`,
	"notify":   `notify agent|owner|user NAME|group NAME via email|webhook [with "TEXT"]`,
	"tag":      "tag NAME",
	"set":      "set PATH = EXPRESSION",
	"stop":     "stop",
}

func (c *compiler) action(f *File, a *actionAST, kind triggers.Kind) Action {
	var act Action
	switch {
	case a.Assign != nil:
		act = c.assign(a.Assign, kind)
	case a.Reply != nil:
		act = c.reply(a.Reply)
	case a.Notify != nil:
		act = c.notify(a.Notify)
	case a.Tag != nil:
		if name, ok := c.name(a.Tag.Name); ok {
			act = &Tag{Pos: posOf(a.Tag.Pos), Name: name}
		}
	case a.Set != nil:
		act = c.set(f, a.Set)
	case a.Word != nil:
		switch p := posOf(a.Word.Pos); a.Word.Kw {
		case "unassign":
			act = &Unassign{Pos: p}
		case "cancel":
			act = &Cancel{Pos: p}
		case "release":
			act = &Release{Pos: p}
		case "close":
			act = &Close{Pos: p}
		default:
			act = &Stop{Pos: p}
		}
	case a.Untag != nil:
		if name, ok := c.name(a.Untag.Name); ok {
			act = &Untag{Pos: posOf(a.Untag.Pos), Name: name}
		}
	case a.Bad != nil:
		c.badAction(a.Bad)
	}
	if act == nil || !c.allowedIn(act, kind) {
		if a.Else != nil {
			// The fallback is still checked, so its problems are reported
			// with this one's.
			c.action(f, a.Else.Action, kind)
		}
		return nil
	}
	if a.Else != nil {
		as, ok := act.(*Assign)
		if !ok {
			c.d.errorf(posOf(a.Else.Pos), CodeAction, "put the fallback after an assign, e.g. assign owner else assign group Sales",
				"else only follows an assign: it runs when the assign cannot place the conversation")
			return act
		}
		if as.Target == TargetQueue {
			c.d.warnf(posOf(a.Else.Pos), CodeUnreachable, "", "assign queue always places the conversation, so its else never runs")
		}
		as.Else = c.action(f, a.Else.Action, kind)
	}
	return act
}

// allowedIn rejects actions that have nothing to act on for the trigger.
func (c *compiler) allowedIn(act Action, kind triggers.Kind) bool {
	switch kind {
	case triggers.AgentStatus:
		switch a := act.(type) {
		case *Notify, *Stop:
			return true
		case *Set:
			if a.Path == "agent.status" {
				return true
			}
		}
		c.d.errorf(act.ActionPos(), CodeAction, "agent status rules can notify, set agent.status and stop", "agent status rules have no conversation to act on")
		return false
	case triggers.ConversationClosed:
		switch a := act.(type) {
		case *Assign:
			c.d.errorf(act.ActionPos(), CodeAction, "", "a closed conversation cannot be assigned")
			return false
		case *Unassign:
			c.d.errorf(act.ActionPos(), CodeAction, "", "a closed conversation has no agent to unassign: closing freed it")
			return false
		case *Cancel:
			c.d.errorf(act.ActionPos(), CodeAction, "", "a closed conversation waits in no line: closing took it out")
			return false
		case *Release:
			c.d.errorf(act.ActionPos(), CodeAction, "", "a closed conversation holds no capacity to release: closing freed it")
			return false
		case *Close:
			c.d.errorf(act.ActionPos(), CodeAction, "", "the conversation is closed already")
			return false
		case *Set:
			if a.Path == "conversation.status" {
				c.d.errorf(act.ActionPos(), CodeAction, "", "a closed conversation's status cannot be set")
				return false
			}
		}
	}
	return true
}

func (c *compiler) badAction(b *badAST) {
	pos := posOf(b.Pos)
	if u, known := usage[b.Word]; known {
		c.d.errorf(pos, CodeAction, "write "+u, "incomplete or malformed %s", b.Word)
		return
	}
	if lw := strings.ToLower(b.Word); lw == "on" || lw == "rule" || lw == "segment" {
		c.d.errorf(pos, CodeAction, "write "+lw, "%q is not a keyword: keywords are lowercase, so this line was read as an action of the rule above", b.Word)
		return
	}
	hint := didYouMean(b.Word, actionWords)
	if hint == "" {
		hint = "actions are " + quoteList(actionWords, "or")
	}
	c.d.errorf(pos, CodeAction, hint, "unknown action %q", b.Word)
}

var targets = map[string]Target{
	"user": TargetUser, "agent": TargetUser, "owner": TargetOwner, "last_sender": TargetLastSender,
	"previous_agent": TargetPreviousAgent, "group": TargetGroup, "queue": TargetQueue,
}

var targetWords = []string{"user", "agent", "owner", "last_sender", "previous_agent", "group", "queue"}

func (c *compiler) assign(a *assignAST, kind triggers.Kind) Action {
	as := &Assign{Pos: posOf(a.Pos), Reassign: a.Verb == "reassign"}
	if a.Kind == nil {
		c.d.errorf(as.Pos, CodeAction, "write "+usage[a.Verb], "%s needs a target", a.Verb)
		return nil
	}
	kpos := posOf(a.Kind.Pos)
	target, ok := targets[a.Kind.Value]
	if !ok {
		hint := didYouMean(a.Kind.Value, targetWords)
		switch {
		case hint != "":
		case c.team.Group(a.Kind.Value) != nil:
			hint = fmt.Sprintf("did you mean %s group %s?", a.Verb, a.Kind.Value)
		case c.team.Agent(a.Kind.Value) != nil:
			hint = fmt.Sprintf("did you mean %s user %s?", a.Verb, a.Kind.Value)
		default:
			hint = "write " + usage[a.Verb]
		}
		c.d.errorf(kpos, CodeAction, hint, "cannot %s to %q", a.Verb, a.Kind.Value)
		return nil
	}
	as.Target = target
	needsName := target == TargetUser || target == TargetGroup || target == TargetQueue
	switch {
	case needsName && a.Name == nil:
		c.d.errorf(kpos, CodeAction, fmt.Sprintf("write %s %s NAME", a.Verb, a.Kind.Value), "%s %s needs a name", a.Verb, a.Kind.Value)
		return nil
	case !needsName && a.Name != nil:
		c.d.errorf(posOf(a.Name.Pos), CodeAction, fmt.Sprintf("write %s %s, or %s user NAME", a.Verb, a.Kind.Value, a.Verb), "%s %s takes no name", a.Verb, a.Kind.Value)
		return nil
	case needsName:
		name, ok := c.name(a.Name)
		if !ok {
			return nil
		}
		as.Name = name
		npos := posOf(a.Name.Pos)
		switch target {
		case TargetUser:
			c.checkUser(name, npos)
		case TargetGroup:
			c.checkGroup(name, npos)
			c.checkMembers(name, npos)
		case TargetQueue:
			c.checkQueue(name, npos)
		}
	}
	if target == TargetGroup {
		as.Algorithm = RoundRobin
	}
	if !c.modifiers(a, as) {
		return nil
	}
	return as
}

func (c *compiler) modifiers(a *assignAST, as *Assign) bool {
	ok := true
	seen := map[string]Pos{}
	once := func(what string, p Pos) bool {
		if prev, dup := seen[what]; dup {
			c.d.errorf(p, CodeModifier, "keep one", "%s is given twice (first at column %d)", what, prev.Col)
			ok = false
			return false
		}
		seen[what] = p
		return true
	}
	target := fmt.Sprintf("%s %s", a.Verb, a.Kind.Value)
	for _, m := range a.Mods {
		p := posOf(m.Pos)
		switch {
		case m.By != nil:
			if !once("by", p) {
				continue
			}
			if as.Target != TargetGroup {
				c.d.errorf(p, CodeModifier, "only assign group takes an algorithm", "%s does not take by %s", target, m.By.Value)
				ok = false
				continue
			}
			alg, known := algorithms[m.By.Value]
			if !known {
				hint := didYouMean(m.By.Value, algorithmWords())
				if syn, ok := algorithmSynonyms[m.By.Value]; ok {
					hint = fmt.Sprintf("did you mean %q?", syn)
				}
				if hint == "" {
					hint = "algorithms are " + quoteList(algorithmWords(), "or")
				}
				c.d.errorf(posOf(m.By.Pos), CodeAlgorithm, hint, "unknown algorithm %q", m.By.Value)
				ok = false
				continue
			}
			as.Algorithm = alg
		case m.Skills != nil:
			if !once("skills", p) {
				continue
			}
			if as.Target == TargetQueue {
				c.d.errorf(p, CodeModifier, "", "a queue has no agents, so skills do not apply to %s", target)
				ok = false
				continue
			}
			for _, n := range m.Skills.Names {
				s, good := c.name(n)
				if !good {
					ok = false
					continue
				}
				c.checkSkill(s, posOf(n.Pos))
				as.Skills = append(as.Skills, s)
			}
			if len(m.Skills.Names) == 0 {
				c.d.errorf(p, CodeModifier, "write e.g. skills [fr, billing], or remove it", "empty skill list")
				ok = false
			}
		case m.Cost != nil:
			if !once("cost", p) {
				continue
			}
			if as.Target == TargetQueue {
				c.d.errorf(p, CodeModifier, "", "a queue has no capacity, so cost does not apply to %s", target)
				ok = false
				continue
			}
			v, _ := strconv.ParseFloat(m.Cost.Value, 64)
			switch {
			case m.Cost.Percent && (v <= 0 || v > 100):
				c.d.errorf(posOf(m.Cost.Pos), CodeModifier, "", "cost %s%% must be above 0%% and at most 100%%", m.Cost.Value)
				ok = false
			case !m.Cost.Percent && v <= 0:
				c.d.errorf(posOf(m.Cost.Pos), CodeModifier, "", "cost must be above 0")
				ok = false
			case !m.Cost.Percent && v > MaxCapacity:
				c.d.errorf(posOf(m.Cost.Pos), CodeModifier, "", "cost %s is more than %d, more than any agent's capacity", m.Cost.Value, MaxCapacity)
				ok = false
			case m.Cost.Percent:
				as.Cost.Percent = v
			default:
				as.Cost.Units = v
			}
		case m.Priority != nil:
			if !once("priority", p) {
				continue
			}
			n, err := strconv.Atoi(m.Priority.Value)
			if err != nil || n < 1 {
				c.d.errorf(posOf(m.Priority.Pos), CodeModifier, "1 is the most urgent; the default is 5", "priority must be a whole number from 1, got %s", m.Priority.Value)
				ok = false
				continue
			}
			as.Priority = n
		case m.Offline:
			if !once("even if offline", p) {
				continue
			}
			if as.Target == TargetQueue {
				c.d.errorf(p, CodeModifier, "a queue holds work for no agent in particular; leave it out", "%s does not take even if offline", target)
				ok = false
				continue
			}
			as.EvenIfOffline = true
		case m.Away:
			if !once("including away", p) {
				continue
			}
			if as.Target != TargetGroup {
				c.d.errorf(p, CodeModifier, "it applies to group assigns; for one agent, write even if offline", "%s does not take including away", target)
				ok = false
				continue
			}
			as.IncludingAway = true
		case m.Limit != nil:
			if !once("limit", p) {
				continue
			}
			if as.Target != TargetGroup {
				c.d.errorf(p, CodeModifier, "a fairness limit shares out one group's work; for one agent, leave it out", "%s does not take a limit", target)
				ok = false
				continue
			}
			n, per, good := c.limit(m.Limit)
			if !good {
				ok = false
				continue
			}
			as.Limit, as.LimitPer = n, per
		case m.Offer != nil:
			if !once("offer", p) {
				continue
			}
			if as.Target == TargetQueue {
				c.d.errorf(p, CodeModifier, "a queue has no agent to offer it to; offer on an assign that chooses an agent (group, user, owner, last_sender, previous_agent)", "%s does not take offer", target)
				ok = false
				continue
			}
			if m.Offer.After == nil {
				c.d.errorf(p, CodeDuration, "write e.g. offer 30s", "offer needs the time the agent has to answer")
				ok = false
				continue
			}
			d, err := parseDuration(m.Offer.After.Value)
			switch {
			case err != nil:
				c.d.errorf(posOf(m.Offer.After.Pos), CodeDuration, "write e.g. offer 30s or offer 2m", "%s", durationMsg(m.Offer.After.Value, err))
				ok = false
				continue
			case d < time.Second:
				c.d.errorf(posOf(m.Offer.After.Pos), CodeDuration, "give the agent at least 1s to answer", "offer %s is too short", m.Offer.After.Value)
				ok = false
				continue
			}
			as.Offer = d
		}
	}
	return ok
}

// limit checks a fairness limit: limit N per D.
func (c *compiler) limit(l *limitAST) (int, time.Duration, bool) {
	p := posOf(l.Pos)
	if l.Count == nil || l.Per == nil {
		c.d.errorf(p, CodeModifier, "write e.g. limit 10 per 1h", "a limit needs a number of assignments and a window")
		return 0, 0, false
	}
	n, err := strconv.Atoi(l.Count.Value)
	if err != nil || n < 1 || n > maxLimit {
		c.d.errorf(posOf(l.Count.Pos), CodeModifier, "write e.g. limit 10 per 1h", "the limit must be a whole number from 1 to %d, got %s", maxLimit, l.Count.Value)
		return 0, 0, false
	}
	per, err := parseDuration(l.Per.Value)
	if err != nil || per <= 0 {
		c.d.errorf(posOf(l.Per.Pos), CodeDuration, "write e.g. 30m, 1h or 1d", "%s", durationMsg(l.Per.Value, err))
		return 0, 0, false
	}
	return n, per, true
}

// maxLimit bounds a fairness limit: each agent keeps the times of that many
// latest assignments.
const maxLimit = 1000

// algorithmSynonyms are words people use for an algorithm that are not
// its name, for suggestions only.
var algorithmSynonyms = map[string]string{
	"least_busy": "least_active", "fewest_chats": "least_active", "least_loaded": "least_active",
	"idle": "longest_idle", "longest_waiting": "longest_idle",
	"in_turn": "round_robin", "rotate": "round_robin", "rotation": "round_robin",
	"shuffle": "random", "most_free": "most_available", "capacity": "most_available",
}

func algorithmWords() []string {
	words := make([]string, 0, len(algorithms))
	for w := range algorithms {
		words = append(words, w)
	}
	slices.Sort(words)
	return words
}

func (c *compiler) checkUser(id string, p Pos) {
	if c.team == nil || c.team.Agent(id) != nil {
		return
	}
	hint := didYouMean(id, c.team.agentIDs())
	if hint == "" {
		hint = "add it to team.yaml"
	}
	c.d.errorf(p, CodeUnknownUser, hint, "unknown user %q", id)
}

func (c *compiler) checkGroup(name string, p Pos) {
	if c.team == nil || c.team.Group(name) != nil {
		return
	}
	hint := didYouMean(name, c.team.groupNames())
	if slices.Contains(c.team.Queues, name) {
		hint = fmt.Sprintf("%s is a queue in team.yaml: write assign queue %s", name, name)
	}
	if hint == "" {
		hint = "add it under groups: in team.yaml"
	}
	c.d.errorf(p, CodeUnknownGroup, hint, "unknown group %q", name)
}

// checkEmail reports agents told by email who have no address in
// team.yaml. The agent and the owner are known only when the rule runs; an
// email to one without an address is then dead, with the reason.
func (c *compiler) checkEmail(n *Notify) {
	if c.team == nil {
		return
	}
	var ids []string
	switch n.To {
	case NotifyUser:
		ids = []string{n.Name}
	case NotifyGroup:
		if g := c.team.Group(n.Name); g != nil {
			ids = g.Members
		}
	}
	var missing []string
	for _, id := range ids {
		if a := c.team.Agent(id); a != nil && a.Email == "" {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		c.d.errorf(n.Pos, CodeNotifyRecipient, "add email: to "+quoteList(missing, "and")+" in team.yaml",
			"%s %s no email address in team.yaml, so cannot be told by email", quoteList(missing, "and"), map[bool]string{true: "has", false: "have"}[len(missing) == 1])
	}
}

// checkMembers warns about assigning to a group that has nobody in it: the
// conversation would wait there, or fall to the else, every time.
func (c *compiler) checkMembers(name string, p Pos) {
	if g := c.team.Group(name); g != nil && len(g.Members) == 0 {
		c.d.warnf(p, CodeUnreachable, "list its agents under groups: in team.yaml",
			"group %q has no members, so nobody in it can be assigned", name)
	}
}

func (c *compiler) checkQueue(name string, p Pos) {
	if c.team == nil || len(c.team.Queues) == 0 || slices.Contains(c.team.Queues, name) {
		return
	}
	hint := didYouMean(name, c.team.Queues)
	if hint == "" {
		hint = "add it under queues: in team.yaml"
	}
	c.d.errorf(p, CodeUnknownQueue, hint, "unknown queue %q", name)
}

func (c *compiler) checkSkill(skill string, p Pos) {
	if c.team == nil || c.team.HasSkill(skill) {
		return
	}
	hint := didYouMean(skill, c.team.skills())
	if hint == "" {
		hint = "no agent in team.yaml has it"
	}
	c.d.errorf(p, CodeUnknownSkill, hint, "unknown skill %q", skill)
}

func (c *compiler) text(s stringAST) (*Template, bool) {
	text, err := unquote(s.Value)
	if err != nil {
		c.d.errorf(posOf(s.Pos), CodeSyntax, "", "%v", err)
		return nil, false
	}
	n := len(c.d.list)
	t := parseTemplate(text, s.Value, posOf(s.Pos), &c.d)
	return t, len(c.d.list) == n
}

func (c *compiler) reply(r *replyAST) Action {
	t, ok := c.text(r.Text)
	if !ok {
		return nil
	}
	if strings.TrimSpace(t.Source) == "" {
		c.d.errorf(posOf(r.Text.Pos), CodeAction, "", "reply text is empty")
		return nil
	}
	return &Reply{Pos: posOf(r.Pos), Text: t}
}

var notifyChannels = []string{"email", "webhook"}

func (c *compiler) notify(n *notifyAST) Action {
	out := &Notify{Pos: posOf(n.Pos)}
	switch {
	case n.User != nil:
		out.To = NotifyUser
		name, ok := c.name(n.User)
		if !ok {
			return nil
		}
		out.Name = name
		c.checkUser(name, posOf(n.User.Pos))
	case n.Group != nil:
		out.To = NotifyGroup
		name, ok := c.name(n.Group)
		if !ok {
			return nil
		}
		out.Name = name
		c.checkGroup(name, posOf(n.Group.Pos))
	case n.Endpoint != nil:
		out.To, out.Via = NotifyEndpoint, "webhook"
		name, ok := c.name(n.Endpoint)
		if !ok {
			return nil
		}
		out.Name = name
		if eps := c.endpoints; eps != nil && !slices.Contains(eps, name) {
			hint := didYouMean(name, eps)
			if hint == "" && len(eps) == 0 {
				hint = "the configuration names no endpoints; add it under endpoints:"
			} else if hint == "" {
				hint = "endpoints are " + quoteList(eps, "and")
			}
			c.d.errorf(posOf(n.Endpoint.Pos), CodeNotifyRecipient, hint, "unknown webhook endpoint %q", name)
		}
	case n.Address != nil:
		out.To, out.Via = NotifyAddress, "email"
		addr, err := unquote(n.Address.Value)
		if err == nil {
			var a *mail.Address
			if a, err = mail.ParseAddress(addr); err == nil {
				addr = a.Address
			}
		}
		if err != nil {
			c.d.errorf(posOf(n.Address.Pos), CodeNotifyRecipient, `write e.g. notify email "ops@example.com"`, "%s is not an email address", n.Address.Value)
			return nil
		}
		out.Name = addr
	case n.Who != nil && (n.Who.Value == "agent" || n.Who.Value == "owner"):
		out.To = Recipient(n.Who.Value)
	case n.Who != nil:
		if slices.Contains(notifyChannels, n.Who.Value) {
			c.d.errorf(posOf(n.Who.Pos), CodeNotifyRecipient, "write e.g. notify agent via "+n.Who.Value, "notify needs a recipient before %s", n.Who.Value)
			return nil
		}
		hint := didYouMean(n.Who.Value, []string{"agent", "owner", "user", "group"})
		if hint == "" {
			hint = "notify agent, owner, user NAME or group NAME"
		}
		c.d.errorf(posOf(n.Who.Pos), CodeNotifyRecipient, hint, "unknown recipient %q", n.Who.Value)
		return nil
	}
	if out.To == NotifyEndpoint || out.To == NotifyAddress {
		if n.Channel != nil || n.Via {
			c.d.errorf(out.Pos, CodeAction, "leave via out: notify webhook NAME posts, notify email \"ADDRESS\" emails", "notify %s says how already", out.To)
			return nil
		}
	} else {
		if n.Channel == nil {
			c.d.errorf(out.Pos, CodeAction, "write e.g. notify agent via email", "notify needs a channel: email or webhook")
			return nil
		}
		if !slices.Contains(notifyChannels, n.Channel.Value) {
			hint := didYouMean(n.Channel.Value, notifyChannels)
			if hint == "" {
				hint = "notify via email or via webhook"
			}
			c.d.errorf(posOf(n.Channel.Pos), CodeAction, hint, "cannot notify via %q", n.Channel.Value)
			return nil
		}
		out.Via = n.Channel.Value
		if out.Via == "email" {
			c.checkEmail(out)
		}
	}
	if n.With != nil {
		t, ok := c.text(*n.With)
		if !ok {
			return nil
		}
		out.Text = t
	}
	return out
}

// settable lists the paths set may change and the kind of value each takes;
// contact.attrs.KEY takes any value.
var settable = map[string]reflect.Kind{
	"contact.name": reflect.String, "contact.email": reflect.String, "contact.phone": reflect.String,
	"contact.lang": reflect.String, "contact.country": reflect.String, "contact.owner": reflect.String,
	"conversation.priority": reflect.Int, "conversation.status": reflect.String, "agent.status": reflect.String,
}

// convAttrsPrefix starts the paths of a conversation's custom attributes.
const convAttrsPrefix = "conversation.attrs."

// settableStatuses are the statuses set conversation.status may give;
// closing is the platform's (a conversation.closed event).
var settableStatuses = []string{triggers.StatusOpen, triggers.StatusPending, triggers.StatusSnoozed}

// attrPath reports whether path names one custom attribute of a contact
// or a conversation.
func attrPath(path string) bool {
	for _, prefix := range []string{attrsPrefix, convAttrsPrefix} {
		if rest, ok := strings.CutPrefix(path, prefix); ok {
			return rest != "" && !strings.Contains(rest, ".")
		}
	}
	return false
}

func settablePaths() []string {
	paths := make([]string, 0, len(settable)+1)
	for p := range settable {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return append(paths, attrsPrefix+"NAME", convAttrsPrefix+"NAME")
}

func (c *compiler) set(f *File, s *setAST) Action {
	path := s.Path.Value
	ppos := posOf(s.Path.Pos)
	kind, known := settable[path]
	isAttr := attrPath(path)
	if !known && !isAttr {
		hint := didYouMean(path, settablePaths())
		if hint == "" {
			hint = "set can change " + strings.Join(settablePaths(), ", ")
		}
		c.d.errorf(ppos, CodeSettablePath, hint, "cannot set %q", path)
		return nil
	}
	fr, ok := fragmentOf(f, s.Value.Tokens)
	if !ok {
		c.d.errorf(ppos, CodeSyntax, "write set PATH = EXPRESSION", "set needs a value")
		return nil
	}
	_, prog := c.compileExpr(fr)
	if prog == nil {
		return nil
	}
	if t := prog.Node().Type(); kind != reflect.Invalid && t != nil && t.Kind() != reflect.Interface && t.Kind() != kind {
		want := "text"
		if kind == reflect.Int {
			want = "a whole number"
		}
		c.d.errorf(fr.start, CodeSettablePath, "", "%s takes %s, but this is %s", path, want, typeWord(t))
		return nil
	}
	if path == "agent.status" {
		if lit, ok := prog.Node().(*ast.StringNode); ok {
			if _, known := c.team.Presence(lit.Value); !known {
				names := c.team.StatusNames()
				hint := didYouMean(lit.Value, names)
				if hint == "" {
					hint = "agent.status is " + orList(names) + "; declare your own in team.yaml, e.g. statuses: {" + lit.Value + ": away}"
				}
				c.d.errorf(fr.start, CodeSettablePath, hint, "an agent's status cannot be set to %q", lit.Value)
				return nil
			}
		}
	}
	if path == "conversation.status" {
		if lit, ok := prog.Node().(*ast.StringNode); ok && !slices.Contains(settableStatuses, lit.Value) {
			hint := didYouMean(lit.Value, settableStatuses)
			if lit.Value == triggers.StatusClosed {
				hint = "to close it, write close (the decision tells the platform)"
			} else if hint == "" {
				hint = "write 'open', 'pending' or 'snoozed'"
			}
			c.d.errorf(fr.start, CodeSettablePath, hint, "a conversation's status cannot be set to %q", lit.Value)
			return nil
		}
	}
	if t := prog.Node().Type(); isAttr && t != nil && !storable(t) {
		what := typeWord(t)
		if t.Kind() == reflect.Struct {
			what = "a whole record; set one of its fields, e.g. contact.name"
		}
		c.d.errorf(fr.start, CodeSettablePath, "a custom attribute holds text, a number, true or false, a time, or a list or map of those",
			"%s cannot hold %s", path, what)
		return nil
	}
	return &Set{Pos: posOf(s.Pos), Path: path, Value: &Expr{Source: fr.src, Program: prog}}
}

// storable reports whether a custom attribute can hold values of type t:
// what events carry (text, numbers, true or false, lists, maps) and times
// and durations; not objects such as a whole contact.
func storable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64, reflect.Interface:
		return true
	case reflect.Slice: // as events and expressions make them
		return t.Elem().Kind() == reflect.Interface || t.Elem().Kind() == reflect.String
	case reflect.Map:
		return t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.Interface
	case reflect.Struct:
		return t == reflect.TypeFor[time.Time]()
	}
	return t == reflect.TypeFor[time.Duration]()
}
