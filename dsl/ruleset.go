package dsl

import (
	"encoding/json"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/switchboard-dev/switchboard/triggers"
)

// RuleSet is a compiled, checked rule set: immutable once built and safe
// for concurrent use.
type RuleSet struct {
	Dir string `json:"-"`
	// Version is a content hash of the rule set's files: decisions record
	// the version that made them.
	Version  string     `json:"-"`
	Files    []*File    `json:"-"`
	Rules    []*Rule    `json:"rules"`
	Segments []*Segment `json:"segments,omitempty"`
	Team     *Team      `json:"team,omitempty"`
	// Sources are the files it was built from, when loaded from disk.
	Sources Sources `json:"-"`
	// Hours holds every literal business_hours spec, parsed.
	Hours map[string]*Hours `json:"-"`

	segments map[string]*Segment
}

// Segment returns the named segment, or nil.
func (rs *RuleSet) Segment(name string) *Segment { return rs.segments[name] }

// Rule is one compiled rule.
type Rule struct {
	Name    string     `json:"name"`
	Pos     Pos        `json:"pos"`
	Trigger Trigger    `json:"trigger"`
	When    *Condition `json:"when,omitempty"`
	Actions []Action   `json:"actions"`
	// Table marks a row of a mapping table: it acts only while the
	// conversation is unplaced, and only the first matching row acts.
	Table bool `json:"table,omitempty"`
}

// Trigger is what a rule listens to.
type Trigger struct {
	Kind triggers.Kind `json:"-"`
	// After is the wait of an unanswered trigger.
	After time.Duration `json:"-"`
}

// MarshalJSON renders the trigger by its canonical name.
func (t Trigger) MarshalJSON() ([]byte, error) {
	if t.Kind.TakesDuration() {
		return json.Marshal(t.Kind.String() + " " + t.After.String())
	}
	return json.Marshal(t.Kind.String())
}

// Segment is a named condition usable as in_segment("NAME").
type Segment struct {
	Name string     `json:"name"`
	Pos  Pos        `json:"pos"`
	When *Condition `json:"when"`
	// Index is the segment's position in RuleSet.Segments.
	Index int `json:"-"`
}

// Condition is a compiled expr-lang condition.
type Condition struct {
	Source  string      `json:"source"`
	Pos     Pos         `json:"-"`
	Program *vm.Program `json:"-"`
	// Clauses are the top-level "and" parts, each compiled on its own, so
	// that explain can name the first false one.
	Clauses []*Clause `json:"clauses,omitempty"`
	// Keys are the clauses that test a text field against literals
	// (lang == 'fr', channel in ['sms', 'whatsapp']): the engine indexes the
	// rule by the most selective of them.
	Keys []IndexKey `json:"keys,omitempty"`
	// Segments lists the segments the condition refers to.
	Segments []string `json:"segments,omitempty"`
}

// Clause is one top-level conjunct of a condition.
type Clause struct {
	Source  string      `json:"source"`
	Pos     Pos         `json:"-"`
	Program *vm.Program `json:"-"`
	// Operands are the values the clause reads (lang, contact.attrs.plan,
	// online("Sales")), for explaining why it was false.
	Operands []*Expr `json:"operands,omitempty"`
}

// IndexKey is a clause of the form FIELD == 'value' or FIELD in [...], with
// FIELD one of triggers.StringFields.
type IndexKey struct {
	Field  string   `json:"field"`
	Values []string `json:"values"`
}

// Action is one compiled action: *Assign, *Reply, *Notify, *Tag, *Untag,
// *Set, *Unassign, *Cancel, *Release, *Close or *Stop.
type Action interface {
	ActionPos() Pos
	isAction()
}

// Target is who or what an assign gives the conversation to.
type Target string

const (
	TargetUser       Target = "user"
	TargetOwner      Target = "owner"
	TargetLastSender Target = "last_sender"
	// TargetPreviousAgent is the agent who had the conversation last: before
	// it was closed and reopened, unassigned, or moved away.
	TargetPreviousAgent Target = "previous_agent"
	TargetGroup         Target = "group"
	TargetQueue         Target = "queue"
)

// Algorithm chooses an agent among a group's eligible members.
type Algorithm string

const (
	RoundRobin    Algorithm = "round_robin"
	Random        Algorithm = "random"
	LongestIdle   Algorithm = "longest_idle"
	LeastActive   Algorithm = "least_active"
	MostAvailable Algorithm = "most_available"
	// Fair: the member assigned least recently; one skipped while away
	// keeps their turn.
	Fair Algorithm = "fair"
	// FewestServed: the fewest assignments since coming online.
	FewestServed Algorithm = "fewest_served"
	// LongestFree: the longest since finishing a conversation (or coming
	// online).
	LongestFree Algorithm = "longest_free"
)

// algorithms maps every accepted spelling to its algorithm.
var algorithms = map[string]Algorithm{
	"round_robin": RoundRobin, "in_order": RoundRobin,
	"random":       Random,
	"longest_idle": LongestIdle, "most_waiting": LongestIdle,
	"least_active": LeastActive, "least_chats": LeastActive,
	"most_available": MostAvailable,
	"fair":           Fair,
	"fewest_served":  FewestServed,
	"longest_free":   LongestFree,
}

// DefaultPriority is a conversation's priority until a rule sets one.
const DefaultPriority = 5

// Assign places the conversation with an agent, a group or a queue.
type Assign struct {
	Pos      Pos    `json:"-"`
	Reassign bool   `json:"reassign,omitempty"`
	Target   Target `json:"target"`
	// Name is the agent id, group or queue name; empty for owner and
	// last_sender.
	Name      string    `json:"name,omitempty"`
	Algorithm Algorithm `json:"algorithm,omitempty"`
	Skills    []string  `json:"skills,omitempty"`
	Cost      Cost      `json:"cost,omitzero"`
	// Priority, when not 0, is the conversation's priority from this assign
	// on; without it the conversation keeps its own (DefaultPriority unless
	// a rule set it). Waiting work is ordered by it.
	Priority      int  `json:"priority,omitempty"`
	EvenIfOffline bool `json:"even_if_offline,omitempty"`
	// IncludingAway makes a group's away members eligible too, and count
	// as present (Rocket.Chat's routing to idle agents).
	IncludingAway bool `json:"including_away,omitempty"`
	// Limit, when not 0, is a fairness limit: a member who received Limit
	// assignments within the last LimitPer (counting every assignment the
	// agent received) is not eligible.
	Limit    int           `json:"limit,omitempty"`
	LimitPer time.Duration `json:"limit_per,omitempty"`
	// Offer, when not 0, offers the conversation to the chosen agent for
	// that long instead of assigning it: the agent accepts or declines,
	// and on a decline or time-out the next agent is offered it.
	Offer time.Duration `json:"offer,omitempty"`
	// Else runs when the assign cannot place the conversation.
	Else Action `json:"else,omitempty"`
	// ElseAndWait: when nobody is online, the else runs and the
	// conversation waits too, for the first to come online (a mapping
	// table's offline: email USER).
	ElseAndWait bool `json:"else_and_wait,omitempty"`
}

// Cost is the capacity one conversation takes: Units, or Percent of the
// agent's capacity.
type Cost struct {
	Units   float64 `json:"units,omitempty"`
	Percent float64 `json:"percent,omitempty"`
}

// Reply sends a message to the contact.
type Reply struct {
	Pos  Pos       `json:"-"`
	Text *Template `json:"text"`
	// AfterAssign sends it only once the conversation has an agent: at
	// once when the event assigned it, when it leaves its waiting line if
	// the event queued it, never if neither (a mapping table's greeting).
	AfterAssign bool `json:"after_assign,omitempty"`
}

// Recipient is who a notify goes to.
type Recipient string

const (
	NotifyAgent Recipient = "agent" // the conversation's agent
	NotifyOwner Recipient = "owner" // the contact's owner
	NotifyUser  Recipient = "user"  // a named agent
	NotifyGroup Recipient = "group" // every member of a group
	// NotifyEndpoint is a named webhook endpoint of the service's
	// configuration (notify webhook NAME), and NotifyAddress an email
	// address outside the team (notify email "ADDRESS"): Name holds it.
	NotifyEndpoint Recipient = "webhook"
	NotifyAddress  Recipient = "email"
)

// Notify tells an agent, an endpoint or an address about the conversation,
// by email or webhook.
type Notify struct {
	Pos  Pos       `json:"-"`
	To   Recipient `json:"to"`
	Name string    `json:"name,omitempty"`
	Via  string    `json:"via"`
	Text *Template `json:"text,omitempty"`
}

// Tag adds a tag to the conversation.
type Tag struct {
	Pos  Pos    `json:"-"`
	Name string `json:"name"`
}

// Set changes a contact or conversation attribute.
type Set struct {
	Pos   Pos    `json:"-"`
	Path  string `json:"path"`
	Value *Expr  `json:"value"`
}

// Expr is a compiled expression that yields a value.
type Expr struct {
	Source  string      `json:"source"`
	Program *vm.Program `json:"-"`
}

// Unassign takes the conversation from its agent, freeing the capacity;
// it then waits nowhere.
type Unassign struct {
	Pos Pos `json:"-"`
}

// Untag removes a tag from the conversation.
type Untag struct {
	Pos  Pos    `json:"-"`
	Name string `json:"name"`
}

// Cancel takes the conversation out of the waiting line it is in.
type Cancel struct {
	Pos Pos `json:"-"`
}

// Release keeps the conversation with its agent but frees the capacity it
// takes until the contact writes again (Zendesk's capacity release,
// Rocket.Chat's on hold).
type Release struct {
	Pos Pos `json:"-"`
}

// Close closes the conversation, as conversation.closed does, but runs no
// conversation closed rules.
type Close struct {
	Pos Pos `json:"-"`
}

// Stop ends the event: no later action or rule runs.
type Stop struct {
	Pos Pos `json:"-"`
}

func (a *Assign) ActionPos() Pos   { return a.Pos }
func (a *Reply) ActionPos() Pos    { return a.Pos }
func (a *Notify) ActionPos() Pos   { return a.Pos }
func (a *Tag) ActionPos() Pos      { return a.Pos }
func (a *Set) ActionPos() Pos      { return a.Pos }
func (a *Stop) ActionPos() Pos     { return a.Pos }
func (a *Unassign) ActionPos() Pos { return a.Pos }
func (a *Untag) ActionPos() Pos    { return a.Pos }
func (a *Cancel) ActionPos() Pos   { return a.Pos }
func (a *Release) ActionPos() Pos  { return a.Pos }
func (a *Close) ActionPos() Pos    { return a.Pos }

func (*Assign) isAction()   {}
func (*Reply) isAction()    {}
func (*Notify) isAction()   {}
func (*Tag) isAction()      {}
func (*Set) isAction()      {}
func (*Stop) isAction()     {}
func (*Unassign) isAction() {}
func (*Untag) isAction()    {}
func (*Cancel) isAction()   {}
func (*Release) isAction()  {}
func (*Close) isAction()    {}

// typed adds the action's type to its JSON form.
func typed(kind string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(b) < 2 {
		return b, err
	}
	head := `{"type":"` + kind + `"`
	if string(b) == "{}" {
		return []byte(head + "}"), nil
	}
	return append([]byte(head+","), b[1:]...), nil
}

func (a *Assign) MarshalJSON() ([]byte, error) {
	type plain Assign
	kind := "assign"
	if a.Reassign {
		kind = "reassign"
	}
	return typed(kind, (*plain)(a))
}

func (a *Reply) MarshalJSON() ([]byte, error) {
	type plain Reply
	return typed("reply", (*plain)(a))
}

func (a *Notify) MarshalJSON() ([]byte, error) {
	type plain Notify
	return typed("notify", (*plain)(a))
}

func (a *Tag) MarshalJSON() ([]byte, error) {
	type plain Tag
	return typed("tag", (*plain)(a))
}

func (a *Set) MarshalJSON() ([]byte, error) {
	type plain Set
	return typed("set", (*plain)(a))
}

func (a *Stop) MarshalJSON() ([]byte, error) { return []byte(`{"type":"stop"}`), nil }

func (a *Unassign) MarshalJSON() ([]byte, error) { return []byte(`{"type":"unassign"}`), nil }

func (a *Cancel) MarshalJSON() ([]byte, error) { return []byte(`{"type":"cancel"}`), nil }

func (a *Release) MarshalJSON() ([]byte, error) { return []byte(`{"type":"release"}`), nil }

func (a *Close) MarshalJSON() ([]byte, error) { return []byte(`{"type":"close"}`), nil }

func (a *Untag) MarshalJSON() ([]byte, error) {
	type plain Untag
	return typed("untag", (*plain)(a))
}
