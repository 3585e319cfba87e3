package triggers

import "testing"

func TestDecodeEventErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, `empty event`},
		{`{"id":"e1",`, `malformed JSON: the event ends too early`},
		{`{"id":"e1" "type":"tick"}`, `malformed JSON at byte 12: '"' after object key:value pair`},
		{`[1]`, `not an event: a JSON array; send one event as a JSON object, or several as JSON lines (one object per line)`},
		{`not json`, `not an event: an event is a JSON object, {"id": ..., "type": ..., "at": ...}`},
		{`{"type":"tick","at":"2026-01-05T09:00:00Z"}`, `field "id": missing; every event needs a unique id`},
		{`{"id":5}`, `field "id": expected text, got number`},
		{`{"id":"e1","type":"tick","at":"yesterday"}`, `field "at": "yesterday" is not an RFC 3339 time such as 2026-01-05T09:00:00Z`},
		{"{\"id\":\"u9\xc3\",\"type\":\"tick\"}", `byte 10 is not UTF-8; send the event as UTF-8 text`},
		{"\xEF\xBB\xBF{\"id\":\"e1\",\"type\":\"tick\"}", `the event starts with a byte-order mark; send UTF-8 without one`},
		{`{"id":"s\ud800","type":"tick"}`, `byte 9: \ud800 is half of a UTF-16 surrogate pair without the other half, which is no character; send whole characters`},
		{`{"id":"e1","type":"tick"}`, `field "at": missing; write the time as RFC 3339, e.g. 2026-01-05T09:00:00Z`},
		{`{"id":"e1","type":"message.recieved","at":"2026-01-05T09:00:00Z"}`, `field "type": unknown event type "message.recieved"; expected one of message.received, message.sent, conversation.closed, conversation.updated, agent.status, offer.accepted, offer.declined, tick`},
		{`{"id":"e1","type":"conversation.created","at":"2026-01-05T09:00:00Z"}`, `field "type": unknown event type "conversation.created"; expected one of message.received, message.sent, conversation.closed, conversation.updated, agent.status, offer.accepted, offer.declined, tick (a conversation opens with its first message.received)`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","conversaton":"c1"}`, `field "conversaton": unknown field; did you mean "conversation"?`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z"}`, `field "contact.id": missing; a message.received event needs the contact's id`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k","tags":"vip"}}`, `field "contact.tags": expected a list, got string`},
		{`{"id":"e1","type":"message.sent","at":"2026-01-05T09:00:00Z","contact":{"id":"k"}}`, `field "agent": missing; a message.sent event names the agent who wrote`},
		{`{"id":"e1","type":"conversation.closed","at":"2026-01-05T09:00:00Z"}`, `field "conversation": missing; say which conversation closed`},
		{`{"id":"e1","type":"agent.status","at":"2026-01-05T09:00:00Z","agent":"a","status":" "}`, `field "status": missing; expected online, away, offline or one of team.yaml's statuses`},
		{`{"id":"e1","type":"tick","at":"2026-01-05T09:00:00Z"} {}`, `more than one JSON value; send one event per line`},
		{`{"id":"e1","type":"tick","at":"9999-12-31T23:59:59-00:01"}`, `field "at": 9999-12-31T23:59:59-00:01 is out of range: in UTC it falls in the year 10000; write a time between 1970 and 9999`},
		{`{"id":"e1","type":"tick","AT":"0001-01-01T00:00:00Z"}`, `field "at": 0001-01-01T00:00:00Z is out of range: write a time between 1970 and 9999`},
		{`{"id":"a","type":"tick","at":"2026-01-05T09:00:00Z","id":"b"}`, `field "id": given twice: give each field once`},
		{`{"ID":"e1","type":"tick","at":"2026-01-05T09:00:00Z"}`, `field "ID": names are case-sensitive: write "id"`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","Contact":{"id":"k"}}`, `field "Contact": names are case-sensitive: write "contact"`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k","Lang":"fr"}}`, `field "contact.Lang": names are case-sensitive: write "lang"`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k","attrs":{"tier":"gold","tier":"free"}}}`, `field "contact.attrs.tier": given twice: give each field once`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k","attrs":{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}`, `field "contact.attrs.x": nested more than 32 levels deep; send flatter attributes`},
		{`{"id":"e1","type":"tick","at":"2026-01-05T09:00:00+24:00"}`, `field "at": 2026-01-05T09:00:00+24:00 has an offset of 24 hours or more; an offset's hours run from 00 to 23`},
		{`{"id":"e1","type":"tick","at":"2026-01-05t09:00:00z"}`, `field "at": "2026-01-05t09:00:00z" is not an RFC 3339 time such as 2026-01-05T09:00:00Z; write the T between date and time, and the Z, as capitals`},
		{`{"id":"e1","type":"tick","at":"2026-01-05 09:00:00Z"}`, `field "at": "2026-01-05 09:00:00Z" is not an RFC 3339 time such as 2026-01-05T09:00:00Z; write the T between date and time, and the Z, as capitals`},
		// Fields the type does not read are refused, not ignored.
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k"},"agent":"ana"}`, `field "agent": a message.received event is the contact's message and takes no agent; an agent's message is a message.sent, and rules choose who gets the conversation`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k"},"status":"pending"}`, `field "status": a message.received event does not take status, and would ignore it; a conversation opens with conversation_status, and changes status with a conversation.updated event`},
		{`{"id":"e1","type":"message.sent","at":"2026-01-05T09:00:00Z","agent":"a","contact":{"id":"k","owner":"b"}}`, `field "contact": a message.sent event names the contact by contact.id alone, and would ignore the rest; the contact's details come with its message.received events`},
		{`{"id":"e1","type":"conversation.closed","at":"2026-01-05T09:00:00Z","conversation":"c1","agent":"a"}`, `field "agent": a conversation.closed event does not take agent, and would ignore it; it takes only the conversation that closed`},
		{`{"id":"e1","type":"conversation.updated","at":"2026-01-05T09:00:00Z","conversation":"c1","status":"open","channel":"sms"}`, `field "channel": a conversation.updated event does not take channel, and would ignore it; it takes the conversation and what changes: status, tags, priority, attrs`},
		{`{"id":"e1","type":"agent.status","at":"2026-01-05T09:00:00Z","agent":"a","status":"online","channel":"voice"}`, `field "channel": an agent.status event does not take channel, and would ignore it; it takes only the agent and its status`},
		{`{"id":"e1","type":"offer.accepted","at":"2026-01-05T09:00:00Z","agent":"a","conversation":"c1","message":{"text":"ok"}}`, `field "message": an offer.accepted event does not take message, and would ignore it; it takes only the agent who answers and the conversation offered`},
		{`{"id":"e1","type":"tick","at":"2026-01-05T09:00:00Z","conversation":"c1"}`, `field "conversation": a tick event does not take conversation, and would ignore it; a tick only moves the clock`},
		{`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k"},"Agent":"ana"}`, `field "Agent": names are case-sensitive: write "agent"`},
	}
	for _, tt := range tests {
		_, err := DecodeEvent([]byte(tt.in), true)
		if err == nil || err.Error() != tt.want {
			t.Errorf("DecodeEvent(%s)\n got: %v\nwant: %s", tt.in, err, tt.want)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	ev, err := DecodeEvent([]byte(`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00+01:00","channel":"whatsapp","to":"+15550100",
		"contact":{"id":"k1","name":"Kim","tags":["vip"],"attrs":{"plan":"pro","seats":12}},"message":{"id":"m1","text":"Bonjour","lang":"fr"}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Contact.Attrs["seats"] != 12.0 || ev.Message.Lang != "fr" || ev.At.UTC().Hour() != 8 {
		t.Fatalf("decoded %+v", ev)
	}
	if _, err := DecodeEvent([]byte(`{"id":"e1","type":"tick"}`), false); err != nil {
		t.Fatalf("at is optional when not required: %v", err)
	}
}

// TestDecodeEventAttrKeysKeepCase: custom attributes are the client's
// own: keys that differ in case are different attributes.
func TestDecodeEventAttrKeysKeepCase(t *testing.T) {
	ev, err := DecodeEvent([]byte(`{"id":"e1","type":"message.received","at":"2026-01-05T09:00:00Z","contact":{"id":"k","attrs":{"Tier":"gold","tier":"free"}}}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Contact.Attrs["Tier"] != "gold" || ev.Contact.Attrs["tier"] != "free" {
		t.Fatalf("attrs = %v", ev.Contact.Attrs)
	}
}

// TestDecodeStoredKeepsOldEvents: an event stored before a check was added
// (a field its type does not take) still replays.
func TestDecodeStoredKeepsOldEvents(t *testing.T) {
	old := []byte(`{"id":"e1","type":"conversation.closed","at":"2026-01-05T09:00:00Z","conversation":"c1","agent":"a"}`)
	if _, err := DecodeEvent(old, true); err == nil {
		t.Fatal("DecodeEvent took an agent on conversation.closed")
	}
	if ev, err := DecodeStored(old); err != nil || ev.Conversation != "c1" {
		t.Fatalf("DecodeStored: %v", err)
	}
}
