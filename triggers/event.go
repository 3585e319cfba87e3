package triggers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
	"github.com/switchboard-dev/switchboard/internal/jsonkeys"
	"github.com/switchboard-dev/switchboard/internal/suggest"
)

// Event types as they appear in an event's "type" field.
const (
	TypeMessageReceived    = "message.received"
	TypeMessageSent        = "message.sent"
	TypeConversationClosed = "conversation.closed"
	TypeAgentStatus        = "agent.status"
	TypeTick               = "tick"
	// TypeConversationUpdated changes a conversation's status, tags,
	// priority or custom attributes.
	TypeConversationUpdated = "conversation.updated"
	// TypeOfferAccepted and TypeOfferDeclined answer an offer: the agent
	// who holds the offer of the conversation takes it or turns it down.
	TypeOfferAccepted = "offer.accepted"
	TypeOfferDeclined = "offer.declined"
)

// Conversation statuses. A pending conversation is not routed yet (a bot
// has it, say), a snoozed one is put off: assigns leave both alone until
// they turn open.
const (
	StatusOpen    = "open"
	StatusPending = "pending"
	StatusSnoozed = "snoozed"
	StatusClosed  = "closed"
)

// ConversationStatuses lists the statuses a conversation.updated event may
// set.
var ConversationStatuses = []string{StatusOpen, StatusPending, StatusSnoozed, StatusClosed}

// The years an event's time may fall in, in UTC: every time in them can be
// written as RFC 3339 and read back.
const (
	MinYear = 1970
	MaxYear = 9999
)

// ServiceIDPrefix starts the ids of the events a service makes itself
// (ticks, reloads, prunes); clients' ids may not start with it.
const ServiceIDPrefix = "sb:"

// TickID is the id of the tick that fires the timers due at due: derived
// from what is due, so that a tick fired twice (by two instances, or by a
// replay of what a service did) is one event.
func TickID(due time.Time) string {
	return ServiceIDPrefix + "tick:" + strconv.FormatInt(due.UnixNano(), 10)
}

// EventTypes lists the valid event types.
var EventTypes = []string{TypeMessageReceived, TypeMessageSent, TypeConversationClosed, TypeConversationUpdated, TypeAgentStatus,
	TypeOfferAccepted, TypeOfferDeclined, TypeTick}

// Event is one thing that happened, as the messaging platform reports it.
// Its At is the engine's clock.
type Event struct {
	ID           string        `json:"id"`
	Type         string        `json:"type"`
	At           time.Time     `json:"at"`
	Conversation string        `json:"conversation,omitempty"`
	Channel      string        `json:"channel,omitempty"`
	To           string        `json:"to,omitempty"`
	Contact      *EventContact `json:"contact,omitempty"`
	Message      *EventMessage `json:"message,omitempty"`
	Agent        string        `json:"agent,omitempty"`
	// Status is the agent's new status (agent.status) or the
	// conversation's (conversation.updated).
	Status string `json:"status,omitempty"`
	// ConversationStatus is the status a message.received opens its
	// conversation with: open (the default) or pending.
	ConversationStatus string `json:"conversation_status,omitempty"`
	// What a conversation.updated event changes: tags replace the list,
	// attrs merge key by key (null deletes a key).
	Tags     []string       `json:"tags,omitempty"`
	Priority *int           `json:"priority,omitempty"`
	Attrs    map[string]any `json:"attrs,omitempty"`
}

// EventContact is what an event says about the contact. Empty fields leave
// what the engine knows unchanged.
type EventContact struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	Email   string `json:"email,omitempty"`
	Phone   string `json:"phone,omitempty"`
	Lang    string `json:"lang,omitempty"`
	Country string `json:"country,omitempty"`
	// Owner is the CRM record owner; when given it always wins.
	Owner string         `json:"owner,omitempty"`
	Tags  []string       `json:"tags,omitempty"`
	Attrs map[string]any `json:"attrs,omitempty"`
}

// EventMessage is the message of a message event.
type EventMessage struct {
	ID   string `json:"id,omitempty"`
	Text string `json:"text,omitempty"`
	Lang string `json:"lang,omitempty"`
}

// FieldError is a problem with one field of an event.
type FieldError struct {
	Field   string // e.g. "contact.id"; empty for the event as a whole
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Message)
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// DecodeEvent reads one event from JSON and checks that it is complete for
// its type. Unknown fields are errors, so that a misspelt field is not
// silently ignored; so are a field written in another case ("ID") and a
// key given twice in any object, which decoders would settle silently.
// When requireAt is false a missing "at" is left zero for
// the caller to fill.
func DecodeEvent(data []byte, requireAt bool) (*Event, error) {
	// A JSON decoder turns bytes that are not UTF-8 into U+FFFD: two
	// different ids would become one, and text would change on the way in.
	if bytes.HasPrefix(data, []byte("\xEF\xBB\xBF")) {
		return nil, &FieldError{Message: "the event starts with a byte-order mark; send UTF-8 without one"}
	}
	if at := invalidUTF8(data); at >= 0 {
		return nil, &FieldError{Message: fmt.Sprintf("byte %d is not UTF-8; send the event as UTF-8 text", at+1)}
	}
	if at := jsonkeys.LoneSurrogate(data); at >= 0 {
		return nil, &FieldError{Message: fmt.Sprintf("byte %d: %s is half of a UTF-16 surrogate pair without the other half, which is no character; send whole characters", at+1, data[at:at+6])}
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] != '{' {
		if trimmed[0] == '[' {
			return nil, &FieldError{Message: "not an event: a JSON array; send one event as a JSON object, or several as JSON lines (one object per line)"}
		}
		return nil, &FieldError{Message: "not an event: an event is a JSON object, {\"id\": ..., \"type\": ..., \"at\": ...}"}
	}
	// goccy/go-json decodes like encoding/json, four times faster, which
	// the simulator's throughput needs.
	dec := gojson.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ev Event
	if err := dec.Decode(&ev); err != nil {
		return nil, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &FieldError{Message: "more than one JSON value; send one event per line"}
	}
	if ev.At.IsZero() && explicitZeroAt(data) {
		return nil, fieldErr("at", "%s is out of range: write a time between %d and %d", time.Time{}.Format(time.RFC3339), MinYear, MaxYear)
	}
	if err := ev.Validate(requireAt); err != nil {
		return nil, err
	}
	// The decoder matched keys whatever their case, and kept the last of
	// a key given twice.
	if err := eventKeys.Check(data); err != nil {
		var ke *jsonkeys.Error
		if errors.As(err, &ke) {
			return nil, &FieldError{Field: ke.Path, Message: ke.Message}
		}
		return nil, err
	}
	if err := ev.unused(); err != nil {
		return nil, err
	}
	// (Held to events coming in, not in Validate: stored events replay as
	// they were accepted.)
	if _, off := ev.At.Zone(); off <= -24*3600 || off >= 24*3600 {
		return nil, fieldErr("at", "%s has an offset of 24 hours or more; an offset's hours run from 00 to 23", ev.At.Format(time.RFC3339))
	}
	return &ev, nil
}

var eventKeys = jsonkeys.For(reflect.TypeFor[Event]())

// explicitZeroAt reports whether data gives "at" as Go's zero time (year
// 1), which decodes the same as no "at" at all.
func explicitZeroAt(data []byte) bool {
	if !bytes.Contains(bytes.ToLower(data), []byte(`"at"`)) {
		return false // the common case: no at, nothing more to read
	}
	var at struct {
		At *string `json:"at"`
	}
	return json.Unmarshal(data, &at) == nil && at.At != nil
}

// MaxAttrDepth is how deeply a custom attribute's value may nest lists
// and objects: what a snapshot of the state can hold, with room to spare.
const MaxAttrDepth = 32

// depth is how deeply v nests lists and objects (a plain value is 0).
func depth(v any) int {
	d := 0
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	case map[string]any:
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

// invalidUTF8 is the offset of the first byte of data that is not UTF-8,
// or -1.
func invalidUTF8(data []byte) int {
	if utf8.Valid(data) {
		return -1
	}
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// DecodeStored reads an event that was accepted before (by DecodeEvent)
// and stored: the strict checks for unknown fields and trailing data are
// left out, which makes replaying a long log several times faster.
func DecodeStored(data []byte) (*Event, error) {
	var ev Event
	if err := gojson.Unmarshal(data, &ev); err != nil {
		return nil, decodeError(err)
	}
	if err := ev.Validate(false); err != nil {
		return nil, err
	}
	return &ev, nil
}

// unused refuses a field the event's type does not read: it would be
// ignored without a word (an agent on a message.received does not assign
// it, a channel on an answer changes nothing). Only events coming in are
// held to it: stored events replay as they were accepted.
func (ev *Event) unused() error {
	has := func(field string) bool {
		switch field {
		case "conversation":
			return ev.Conversation != ""
		case "channel":
			return ev.Channel != ""
		case "to":
			return ev.To != ""
		case "contact":
			return ev.Contact != nil
		case "message":
			return ev.Message != nil
		case "agent":
			return ev.Agent != ""
		case "status":
			return ev.Status != ""
		}
		return false
	}
	refuse := func(hint string, fields ...string) error {
		for _, f := range fields {
			if has(f) {
				article := "a"
				if strings.ContainsRune("aeiou", rune(ev.Type[0])) {
					article = "an"
				}
				return fieldErr(f, "%s %s event does not take %s, and would ignore it; %s", article, ev.Type, f, hint)
			}
		}
		return nil
	}
	switch ev.Type {
	case TypeMessageReceived:
		if ev.Agent != "" {
			return fieldErr("agent", "a message.received event is the contact's message and takes no agent; an agent's message is a message.sent, and rules choose who gets the conversation")
		}
		return refuse("a conversation opens with conversation_status, and changes status with a conversation.updated event", "status")
	case TypeMessageSent:
		if err := refuse("a conversation's status changes with a conversation.updated event", "status"); err != nil {
			return err
		}
		if c := ev.Contact; c != nil && (c.Name != "" || c.Email != "" || c.Phone != "" || c.Lang != "" || c.Country != "" || c.Owner != "" || c.Tags != nil || c.Attrs != nil) {
			return fieldErr("contact", "a message.sent event names the contact by contact.id alone, and would ignore the rest; the contact's details come with its message.received events")
		}
	case TypeConversationClosed:
		return refuse("it takes only the conversation that closed", "channel", "to", "contact", "message", "agent", "status")
	case TypeConversationUpdated:
		return refuse("it takes the conversation and what changes: status, tags, priority, attrs", "channel", "to", "contact", "message", "agent")
	case TypeAgentStatus:
		return refuse("it takes only the agent and its status", "conversation", "channel", "to", "contact", "message")
	case TypeOfferAccepted, TypeOfferDeclined:
		return refuse("it takes only the agent who answers and the conversation offered", "channel", "to", "contact", "message", "status")
	case TypeTick:
		return refuse("a tick only moves the clock", "conversation", "channel", "to", "contact", "message", "agent", "status")
	}
	return nil
}

// Validate checks that the event has what its type needs.
func (ev *Event) Validate(requireAt bool) error {
	if strings.TrimSpace(ev.ID) == "" {
		return fieldErr("id", "missing; every event needs a unique id")
	}
	if ev.Type == "" {
		return fieldErr("type", "missing; expected one of %s", strings.Join(EventTypes, ", "))
	}
	if !slices.Contains(EventTypes, ev.Type) {
		msg := fmt.Sprintf("unknown event type %q; expected one of %s", ev.Type, strings.Join(EventTypes, ", "))
		if k, ok := Lookup(ev.Type); ok && k == ConversationCreated {
			msg += " (a conversation opens with its first message.received)"
		}
		return fieldErr("type", "%s", msg)
	}
	if requireAt && ev.At.IsZero() {
		return fieldErr("at", "missing; write the time as RFC 3339, e.g. 2026-01-05T09:00:00Z")
	}
	if !ev.At.IsZero() {
		if y := ev.At.UTC().Year(); y < MinYear || y > MaxYear {
			return fieldErr("at", "%s is out of range: in UTC it falls in the year %d; write a time between %d and %d", ev.At.Format(time.RFC3339), y, MinYear, MaxYear)
		}
	}
	if ev.Type != TypeConversationUpdated {
		switch {
		case ev.Tags != nil:
			return fieldErr("tags", "only a conversation.updated event sets a conversation's tags; the contact's are contact.tags")
		case ev.Priority != nil:
			return fieldErr("priority", "only a conversation.updated event sets a conversation's priority")
		case ev.Attrs != nil:
			return fieldErr("attrs", "only a conversation.updated event sets a conversation's attributes; the contact's are contact.attrs")
		}
	}
	if ev.ConversationStatus != "" {
		if ev.Type != TypeMessageReceived {
			return fieldErr("conversation_status", "only a message.received event opens a conversation with a status; use a conversation.updated event to change it")
		}
		if ev.ConversationStatus != StatusOpen && ev.ConversationStatus != StatusPending {
			return fieldErr("conversation_status", "unknown status %q for a new conversation; expected open or pending", ev.ConversationStatus)
		}
	}
	for k, v := range ev.Attrs {
		if depth(v) > MaxAttrDepth {
			return fieldErr("attrs."+k, "nested more than %d levels deep; send flatter attributes", MaxAttrDepth)
		}
	}
	if ev.Contact != nil {
		for k, v := range ev.Contact.Attrs {
			if depth(v) > MaxAttrDepth {
				return fieldErr("contact.attrs."+k, "nested more than %d levels deep; send flatter attributes", MaxAttrDepth)
			}
		}
	}
	switch ev.Type {
	case TypeMessageReceived:
		if ev.Contact == nil || strings.TrimSpace(ev.Contact.ID) == "" {
			return fieldErr("contact.id", "missing; a message.received event needs the contact's id")
		}
	case TypeMessageSent:
		if ev.Agent == "" {
			return fieldErr("agent", "missing; a message.sent event names the agent who wrote")
		}
		if ev.Conversation == "" && (ev.Contact == nil || ev.Contact.ID == "") {
			return fieldErr("contact.id", "missing; a message.sent event needs contact.id or conversation")
		}
	case TypeConversationClosed:
		if ev.Conversation == "" {
			return fieldErr("conversation", "missing; say which conversation closed")
		}
	case TypeConversationUpdated:
		if ev.Conversation == "" {
			return fieldErr("conversation", "missing; say which conversation changed")
		}
		if ev.Status == "" && ev.Tags == nil && ev.Priority == nil && ev.Attrs == nil {
			return &FieldError{Message: "a conversation.updated event changes at least one of status, tags, priority or attrs"}
		}
		if ev.Status != "" && !slices.Contains(ConversationStatuses, ev.Status) {
			return fieldErr("status", "unknown conversation status %q; expected %s", ev.Status, strings.Join(ConversationStatuses, ", "))
		}
		if ev.Priority != nil && *ev.Priority < 1 {
			return fieldErr("priority", "%d is below 1; 1 is the most urgent, 5 the default", *ev.Priority)
		}
	case TypeOfferAccepted, TypeOfferDeclined:
		if ev.Conversation == "" {
			return fieldErr("conversation", "missing; say which conversation's offer the agent answers")
		}
		if ev.Agent == "" {
			return fieldErr("agent", "missing; say which agent answers the offer")
		}
	case TypeAgentStatus:
		if ev.Agent == "" {
			return fieldErr("agent", "missing; say whose status changed")
		}
		// Any other name is checked against team.yaml's statuses by the
		// engine.
		if strings.TrimSpace(ev.Status) == "" {
			return fieldErr("status", "missing; expected online, away, offline or one of team.yaml's statuses")
		}
	}
	return nil
}

var eventFields = fieldNames(reflect.TypeFor[Event](), reflect.TypeFor[EventContact](), reflect.TypeFor[EventMessage]())

func fieldNames(types ...reflect.Type) []string {
	var out []string
	for _, t := range types {
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
	}
	return out
}

// decodeError rewords encoding/json errors in terms of the event's fields.
func decodeError(err error) error {
	var syn *gojson.SyntaxError
	var typ *gojson.UnmarshalTypeError
	var tim *time.ParseError
	switch {
	case errors.Is(err, io.EOF):
		return &FieldError{Message: "empty event"}
	case errors.Is(err, io.ErrUnexpectedEOF) || err.Error() == "unexpected EOF":
		return &FieldError{Message: "malformed JSON: the event ends too early"}
	case errors.As(err, &syn):
		return &FieldError{Message: fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "invalid character "))}
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return &FieldError{Message: fmt.Sprintf("an event must be a JSON object, not %s", typ.Value)}
		}
		return fieldErr(field, "expected %s, got %s", jsonKind(typ.Type), typ.Value)
	case errors.As(err, &tim):
		hint := ""
		if v := tim.Value; len(v) > 10 && (v[10] == 't' || v[10] == ' ' || strings.HasSuffix(v, "z")) {
			hint = "; write the T between date and time, and the Z, as capitals"
		}
		return fieldErr("at", "%q is not an RFC 3339 time such as 2026-01-05T09:00:00Z%s", tim.Value, hint)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		hint := ""
		if best := suggest.Closest(name, eventFields); best != "" {
			hint = fmt.Sprintf("; did you mean %q?", best)
		}
		return fieldErr(name, "unknown field%s", hint)
	}
	return &FieldError{Message: strings.TrimPrefix(msg, "json: ")}
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		if t == reflect.TypeFor[time.Time]() {
			return "an RFC 3339 time"
		}
		return "text"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	case reflect.Slice:
		return "a list"
	case reflect.Bool:
		return "true or false"
	}
	return t.String()
}
