package dsl

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Team is the content of team.yaml: the agents and the groups they form.
type Team struct {
	File   string   `json:"-"`
	Agents []*Agent `json:"agents"`
	Groups []*Group `json:"groups"`
	// Queues, when listed, are the only queue names rules may use.
	Queues []string `json:"queues,omitempty"`
	// Attributes, when listed, are the custom contact attributes mapping
	// tables may use; listing them turns on strict checking.
	Attributes []string `json:"attributes,omitempty"`
	// ReopenWithin is how long after a close a message from the contact on
	// the same channel and number reopens the conversation instead of
	// opening a new one; 0 never does.
	ReopenWithin time.Duration `json:"reopen_within,omitempty"`
	// OwnersFromCRM: a contact's owner comes only from the platform (an
	// event's contact.owner, a rule's set), never from the first agent
	// it is assigned to (team.yaml "owners: crm"; the default is
	// "owners: first_agent").
	OwnersFromCRM bool `json:"owners_from_crm,omitempty"`
	// Statuses are the team's own presence names (lunch, training), each
	// mapped onto online, away or offline for routing; in file order.
	Statuses []*Status `json:"statuses,omitempty"`

	agents   map[string]*Agent
	statuses map[string]*Status
	groups   map[string]*Group
}

// Agent is one member of the team.
type Agent struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	// Capacity is how many units of work the agent takes at once; 0 means
	// unlimited.
	Capacity int      `json:"capacity,omitempty"`
	Skills   []string `json:"skills,omitempty"`
	// Channels, when set, gives a separate budget per channel instead of
	// one Capacity: the channel named, or "default" for every channel not
	// listed (each its own budget). Without a default, the agent takes no
	// conversations on channels not listed.
	Channels []ChannelBudget `json:"channels,omitempty"`
	// Status is the initial presence: online, away or offline.
	Status string `json:"status"`
	Pos    Pos    `json:"-"`
}

// ChannelBudget is an agent's capacity on one channel.
type ChannelBudget struct {
	Channel  string `json:"channel"` // DefaultChannel for channels not listed
	Capacity int    `json:"capacity"`
	Pos      Pos    `json:"-"`
}

// DefaultChannel is the channel budget key for every channel not listed.
const DefaultChannel = "default"

// maxSuggested is how many of a file's unknown names get a "did you
// mean": beyond, measuring each against every known name costs more than
// it tells.
const maxSuggested = 50

// MaxCapacity is the most conversations (capacity units) an agent's
// capacity, and an assign's cost, may count: far more than anyone
// handles, and still exact in the engine's fixed-point arithmetic.
const MaxCapacity = 1_000_000_000

// channelCapacity reads capacity: {voice: 1, whatsapp: 3, default: 5}.
func channelCapacity(v *yaml.Node, at func(*yaml.Node) Pos, d *diags) []ChannelBudget {
	var out []ChannelBudget
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		s := scalar(val, at, d, "a channel's capacity")
		c, err := strconv.Atoi(s)
		switch {
		case k.Value == "":
			d.errorf(at(k), CodeTeam, "write e.g. {voice: 1, whatsapp: 3, default: 5}", "a channel budget needs a channel name")
			continue
		case slices.ContainsFunc(out, func(b ChannelBudget) bool { return b.Channel == k.Value }):
			d.errorf(at(k), CodeDuplicate, "", "channel %q is given twice", k.Value)
			continue
		case err != nil:
			d.errorf(at(val), CodeTeam, "write a whole number such as 3", "capacity %q for channel %s is not a whole number", s, k.Value)
			continue
		case c < 0:
			d.errorf(at(val), CodeTeam, "write 0 for no conversations on that channel", "capacity for channel %s must be 0 or more, got %d", k.Value, c)
			continue
		case c > MaxCapacity:
			d.errorf(at(val), CodeTeam, "", "capacity for channel %s is %d, more than %d", k.Value, c, MaxCapacity)
			continue
		}
		out = append(out, ChannelBudget{Channel: k.Value, Capacity: c, Pos: at(k)})
	}
	if len(out) == 0 && len(v.Content) == 0 {
		d.errorf(at(v), CodeTeam, "write e.g. {voice: 1, whatsapp: 3, default: 5}, or leave capacity out for unlimited", "capacity per channel is empty")
	}
	return out
}

// PerChannel reports whether any agent has a budget per channel.
func (t *Team) PerChannel() bool {
	if t == nil {
		return false
	}
	for _, a := range t.Agents {
		if a.Channels != nil {
			return true
		}
	}
	return false
}

// Group is a named, ordered list of agents. Order matters for round robin
// and for ties.
type Group struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
	Pos     Pos      `json:"-"`
}

// Status is a custom agent status and the presence it routes as.
type Status struct {
	Name     string `json:"name"`
	Presence string `json:"presence"` // online, away or offline
	Pos      Pos    `json:"-"`
}

// Presence returns the presence a status routes as: online, away and
// offline are their own; a custom status, the one team.yaml maps it to.
// ok is false for a status the team does not know.
func (t *Team) Presence(status string) (presence string, ok bool) {
	if slices.Contains(Statuses, status) {
		return status, true
	}
	if t == nil {
		return "", false
	}
	if s := t.statuses[status]; s != nil {
		return s.Presence, true
	}
	return "", false
}

// StatusNames lists every status an agent may have: online, away, offline
// and the team's own.
func (t *Team) StatusNames() []string {
	names := slices.Clone(Statuses)
	if t != nil {
		for _, s := range t.Statuses {
			names = append(names, s.Name)
		}
	}
	return names
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// Agent status values.
const (
	StatusOnline  = "online"
	StatusAway    = "away"
	StatusOffline = "offline"
)

// Statuses lists the valid agent statuses.
var Statuses = []string{StatusOnline, StatusAway, StatusOffline}

// Agent returns the agent with the given id, or nil.
func (t *Team) Agent(id string) *Agent {
	if t == nil {
		return nil
	}
	return t.agents[id]
}

// Group returns the group with the given name, or nil.
func (t *Team) Group(name string) *Group {
	if t == nil {
		return nil
	}
	return t.groups[name]
}

// HasSkill reports whether any agent has the skill.
func (t *Team) HasSkill(skill string) bool {
	for _, a := range t.Agents {
		if slices.Contains(a.Skills, skill) {
			return true
		}
	}
	return false
}

func (t *Team) agentIDs() []string {
	ids := make([]string, len(t.Agents))
	for i, a := range t.Agents {
		ids[i] = a.ID
	}
	return ids
}

func (t *Team) groupNames() []string {
	names := make([]string, len(t.Groups))
	for i, g := range t.Groups {
		names[i] = g.Name
	}
	return names
}

func (t *Team) skills() []string {
	var out []string
	for _, a := range t.Agents {
		for _, s := range a.Skills {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

var teamKeys = []string{"agents", "groups", "queues", "attributes", "statuses", "reopen_within", "owners"}

func (t *Team) parseStatuses(v *yaml.Node, at func(*yaml.Node) Pos, d *diags) {
	if v.Kind != yaml.MappingNode {
		d.errorf(at(v), CodeTeam, "write e.g. statuses: {available: online, lunch: away, training: offline}", "statuses must be a mapping of status name to online, away or offline")
		return
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		st := &Status{Name: k.Value, Presence: scalar(val, at, d, "a status's presence"), Pos: at(k)}
		switch {
		case slices.Contains(Statuses, st.Name):
			d.errorf(at(k), CodeTeam, "online, away and offline are always there; give your status another name", "status %q cannot be redefined", st.Name)
			continue
		case t.statuses[st.Name] != nil:
			d.errorf(at(k), CodeDuplicate, "", "duplicate status %q, first defined at line %d", st.Name, t.statuses[st.Name].Pos.Line)
			continue
		case !slices.Contains(Statuses, st.Presence):
			d.errorf(at(val), CodeTeam, didYouMean(st.Presence, Statuses), "status %q routes as %q; expected online, away or offline", st.Name, st.Presence)
			continue
		}
		t.statuses[st.Name] = st
		t.Statuses = append(t.Statuses, st)
	}
}

// ParseTeam reads team.yaml. Every problem is reported with its line and
// column; a team with errors is returned as nil.
func ParseTeam(file string, data []byte) (*Team, Diagnostics) {
	t := &Team{File: file, agents: map[string]*Agent{}, groups: map[string]*Group{}, statuses: map[string]*Status{}}
	var d diags
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		pos, msg := yamlError(file, err)
		d.errorf(pos, CodeTeam, "", "team.yaml is not valid YAML: %s", msg)
		return nil, d.list
	}
	if len(doc.Content) == 0 {
		return t, nil // an empty file is an empty team
	}
	root := doc.Content[0]
	at := func(n *yaml.Node) Pos { return Pos{File: file, Line: n.Line, Col: n.Column} }
	if root.Kind != yaml.MappingNode {
		d.errorf(at(root), CodeTeam, "", "team.yaml must be a mapping with agents: and groups:")
		return nil, d.list
	}
	var groupsNode, agentsNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "agents":
			agentsNode = v
		case "statuses":
			t.parseStatuses(v, at, &d)
		case "groups":
			groupsNode = v
		case "queues":
			t.Queues = stringList(v, at, &d, "queues")
		case "attributes":
			t.Attributes = stringList(v, at, &d, "attributes")
			if t.Attributes == nil {
				t.Attributes = []string{}
			}
			for i, a := range t.Attributes {
				t.Attributes[i] = strings.ToLower(a)
			}
		case "reopen_within":
			v := scalar(v, at, &d, "reopen_within")
			dur, err := parseDuration(v)
			switch {
			case v == "0":
			case err != nil:
				d.errorf(at(root.Content[i+1]), CodeTeam, "write e.g. 30m, 24h or 7d; 0 never reopens", "reopen_within %s", durationMsg(v, err))
			case dur < 0:
				d.errorf(at(root.Content[i+1]), CodeTeam, "", "reopen_within cannot be negative")
			default:
				t.ReopenWithin = dur
			}
		case "owners":
			if v.Kind != yaml.ScalarNode {
				scalar(v, at, &d, "owners")
				break
			}
			switch v.Value {
			case "first_agent":
			case "crm":
				t.OwnersFromCRM = true
			default:
				hint := "first_agent: the first agent a contact is assigned to becomes its owner (the default); crm: owners come only from events' contact.owner"
				if dym := didYouMean(v.Value, []string{"first_agent", "crm"}); dym != "" {
					hint = dym + " " + hint
				}
				d.errorf(at(v), CodeTeam, hint, "owners %q: expected first_agent or crm", v.Value)
			}
		default:
			d.errorf(at(k), CodeTeam, didYouMean(k.Value, teamKeys),
				"unknown key %q in team.yaml; expected %s or %s", k.Value, strings.Join(teamKeys[:len(teamKeys)-1], ", "), teamKeys[len(teamKeys)-1])
		}
	}
	// Agents' statuses may be the team's own, and groups refer to agents:
	// read them in that order, whatever the file's.
	if agentsNode != nil {
		t.parseAgents(agentsNode, at, &d)
	}
	if groupsNode != nil {
		t.parseGroups(groupsNode, at, &d)
	}
	if d.list.HasErrors() {
		return nil, d.list
	}
	return t, d.list
}

func (t *Team) parseAgents(v *yaml.Node, at func(*yaml.Node) Pos, d *diags) {
	if v.Kind != yaml.SequenceNode {
		d.errorf(at(v), CodeTeam, "", "agents must be a list, one \"- id: ...\" per agent")
		return
	}
	for _, n := range v.Content {
		if n.Kind != yaml.MappingNode {
			d.errorf(at(n), CodeTeam, "", "each agent must be a mapping with at least an id")
			continue
		}
		a := &Agent{Status: StatusOffline, Pos: at(n)}
		var idNode *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "id":
				a.ID, idNode = scalar(val, at, d, "id"), val
			case "name":
				a.Name = scalar(val, at, d, "name")
			case "email":
				a.Email = scalar(val, at, d, "email")
			case "capacity":
				if val.Kind == yaml.MappingNode {
					a.Channels = channelCapacity(val, at, d)
					continue
				}
				s := scalar(val, at, d, "capacity")
				c, err := strconv.Atoi(s)
				switch {
				case err != nil:
					d.errorf(at(val), CodeTeam, "write a whole number such as 4, a budget per channel such as {voice: 1, whatsapp: 3, default: 5}, or leave capacity out for unlimited", "capacity %q is not a whole number", s)
				case c < 1:
					d.errorf(at(val), CodeTeam, "leave capacity out for unlimited", "capacity must be at least 1, got %d", c)
				case c > MaxCapacity:
					d.errorf(at(val), CodeTeam, "leave capacity out for unlimited", "capacity %d is more than %d", c, MaxCapacity)
				default:
					a.Capacity = c
				}
			case "skills":
				a.Skills = stringList(val, at, d, "skills")
			case "status":
				a.Status = scalar(val, at, d, "status")
				if _, ok := t.Presence(a.Status); !ok {
					d.errorf(at(val), CodeTeam, didYouMean(a.Status, t.StatusNames()), "unknown status %q; expected %s", a.Status, orList(t.StatusNames()))
				}
			default:
				d.errorf(at(k), CodeTeam, didYouMean(k.Value, []string{"id", "name", "email", "capacity", "skills", "status"}),
					"unknown agent field %q; expected id, name, email, capacity, skills or status", k.Value)
			}
		}
		switch {
		case idNode == nil:
			d.errorf(at(n), CodeTeam, "", "agent has no id")
			continue
		case a.ID == "":
			d.errorf(at(idNode), CodeTeam, "", "agent id is empty")
			continue
		}
		if prev := t.agents[a.ID]; prev != nil {
			d.errorf(at(idNode), CodeDuplicate, "", "duplicate agent id %q, first defined at line %d", a.ID, prev.Pos.Line)
			continue
		}
		t.agents[a.ID] = a
		t.Agents = append(t.Agents, a)
	}
}

func (t *Team) parseGroups(v *yaml.Node, at func(*yaml.Node) Pos, d *diags) {
	if v.Kind != yaml.MappingNode {
		d.errorf(at(v), CodeTeam, "", "groups must be a mapping of group name to a list of agent ids")
		return
	}
	ids, unknown := t.agentIDs(), 0
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		g := &Group{Name: k.Value, Pos: at(k)}
		if prev := t.groups[g.Name]; prev != nil {
			d.errorf(at(k), CodeDuplicate, "", "duplicate group %q, first defined at line %d", g.Name, prev.Pos.Line)
			continue
		}
		if val.Kind != yaml.SequenceNode {
			d.errorf(at(val), CodeTeam, "", "group %q must be a list of agent ids, e.g. [amelie, bastien]", g.Name)
			continue
		}
		listed := map[string]bool{}
		for _, m := range val.Content {
			id := scalar(m, at, d, "member")
			switch {
			case t.agents[id] == nil:
				// Suggestions for the first few: a list of thousands of
				// unknown names is one mistake, made many times.
				hint := ""
				if unknown++; unknown <= maxSuggested {
					hint = didYouMean(id, ids)
				}
				d.errorf(at(m), CodeUnknownUser, hint, "group %q lists unknown agent %q", g.Name, id)
			case listed[id]:
				d.errorf(at(m), CodeDuplicate, "", "group %q lists agent %q twice", g.Name, id)
			default:
				listed[id] = true
				g.Members = append(g.Members, id)
			}
		}
		t.groups[g.Name] = g
		t.Groups = append(t.Groups, g)
	}
}

func scalar(n *yaml.Node, at func(*yaml.Node) Pos, d *diags, what string) string {
	if n.Kind != yaml.ScalarNode {
		d.errorf(at(n), CodeTeam, "", "%s must be a single value", what)
		return ""
	}
	return n.Value
}

func stringList(n *yaml.Node, at func(*yaml.Node) Pos, d *diags, what string) []string {
	if n.Kind != yaml.SequenceNode {
		d.errorf(at(n), CodeTeam, "", "%s must be a list, e.g. [a, b]", what)
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		if s := scalar(e, at, d, what); s != "" {
			out = append(out, s)
		}
	}
	return out
}

var yamlErrRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlError splits a yaml.v3 error into its line and its message.
func yamlError(file string, err error) (Pos, string) {
	pos := Pos{File: file, Line: 1, Col: 1}
	m := yamlErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return pos, err.Error()
	}
	if line, convErr := strconv.Atoi(m[1]); convErr == nil {
		pos.Line = line
	}
	return pos, m[2]
}
