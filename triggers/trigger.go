package triggers

// Kind identifies what happened: the trigger a rule listens to.
type Kind uint8

// The triggers a rule can listen to. The zero Kind is invalid.
const (
	MessageReceived Kind = iota + 1
	ConversationCreated
	MessageSent
	ConversationClosed
	AgentStatus
	ConversationUnanswered
	ConversationUpdated
	OfferDeclined
	OfferExpired
	ConversationInactive
)

// NumKinds is one more than the largest Kind, for sizing per-trigger tables.
const NumKinds = int(ConversationInactive) + 1

var kindNames = [...]string{
	MessageReceived:        "message.received",
	ConversationCreated:    "conversation.created",
	MessageSent:            "message.sent",
	ConversationClosed:     "conversation.closed",
	AgentStatus:            "agent.status",
	ConversationUnanswered: "conversation.unanswered",
	ConversationUpdated:    "conversation.updated",
	OfferDeclined:          "offer.declined",
	OfferExpired:           "offer.expired",
	ConversationInactive:   "conversation.inactive",
}

var kindAliases = [...]string{
	MessageReceived:        "incoming message",
	ConversationCreated:    "new conversation",
	MessageSent:            "outgoing message",
	ConversationClosed:     "conversation closed",
	AgentStatus:            "agent status",
	ConversationUnanswered: "unanswered",
	ConversationUpdated:    "conversation updated",
	OfferDeclined:          "offer declined",
	OfferExpired:           "offer expired",
	ConversationInactive:   "inactive",
}

// String returns the canonical name, e.g. "message.received".
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "invalid"
}

// Alias returns the plain-words name, e.g. "incoming message".
func (k Kind) Alias() string {
	if int(k) < len(kindAliases) && kindAliases[k] != "" {
		return kindAliases[k]
	}
	return "invalid"
}

// HasAgent reports whether the trigger's rules are about an agent, whom
// conditions read as agent: agent status, offer declined, offer expired.
func (k Kind) HasAgent() bool { return k == AgentStatus || k == OfferDeclined || k == OfferExpired }

// TakesDuration reports whether the trigger needs a duration (unanswered
// 5m, inactive 30m): its rules run on a timer.
func (k Kind) TakesDuration() bool { return k == ConversationUnanswered || k == ConversationInactive }

// Kinds lists every valid trigger in declaration order.
func Kinds() []Kind {
	out := make([]Kind, 0, NumKinds-1)
	for k := MessageReceived; int(k) < NumKinds; k++ {
		out = append(out, k)
	}
	return out
}

// Lookup finds a trigger by its canonical name or its alias.
func Lookup(name string) (Kind, bool) {
	for k := MessageReceived; int(k) < NumKinds; k++ {
		if name == kindNames[k] || name == kindAliases[k] {
			return k, true
		}
	}
	return 0, false
}

// Names returns every accepted spelling, aliases first, for suggestions.
func Names() []string {
	var out []string
	for _, k := range Kinds() {
		out = append(out, k.Alias(), k.String())
	}
	return out
}
