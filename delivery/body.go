package delivery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// CloudEvent types Switchboard sends.
const (
	TypeDecision = "dev.switchboard.decision" // data: a decision, as the service answers it
	TypeNotify   = "dev.switchboard.notify"   // data: a Notice
)

// Kinds of delivery, as stored.
const (
	KindDecision = "decision"
	KindNotify   = "notify"
	KindEmail    = "email"
)

// Destinations.
const (
	Platform      = "platform"
	Email         = "email"
	webhookPrefix = "webhook:"
)

// WebhookDestination is the destination of the named endpoint.
func WebhookDestination(name string) string { return webhookPrefix + name }

// CloudEvent is a CloudEvents 1.0 event in structured JSON mode.
type CloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	ID              string          `json:"id"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject,omitempty"` // the conversation
	DataContentType string          `json:"datacontenttype"`
	Sequence        string          `json:"sequence"` // the log position of the decision (extension)
	Data            json.RawMessage `json:"data"`
}

// Notice is what a `notify … via webhook` sends: who is told about which
// conversation and why, with what is known of the contact and the message.
type Notice struct {
	Rule         string       `json:"rule"`
	Target       string       `json:"target"` // the agent told
	Via          string       `json:"via"`
	Text         string       `json:"text,omitempty"`
	Conversation string       `json:"conversation,omitempty"`
	Event        string       `json:"event"` // the event whose decision it is
	About        About        `json:"about"`
	Agent        *NoticeAgent `json:"agent,omitempty"`
}

// NoticeAgent is the agent told, as team.yaml describes them.
type NoticeAgent struct {
	ID    string `json:"id"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
}

// About is what is known of a conversation when a notice is made.
type About struct {
	Contact  Contact   `json:"contact"`
	Channel  string    `json:"channel,omitempty"`
	To       string    `json:"to,omitempty"` // the number or inbox written to
	Message  string    `json:"message,omitempty"`
	Since    time.Time `json:"waiting_since,omitzero"` // the oldest unanswered message
	Assignee string    `json:"assignee,omitempty"`
	Open     bool      `json:"open"`
}

// Contact is a notice's contact.
type Contact struct {
	ID    string `json:"id,omitempty"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// Mail is an email as the outbox keeps it; the sender and the server come
// from the configuration when it is sent.
type Mail struct {
	To      []string `json:"to"`
	Agent   string   `json:"agent,omitempty"` // the agent it is for, if one
	Subject string   `json:"subject"`
	Text    string   `json:"text"`
}

// cloudEvent renders a CloudEvent's body.
// It is written by hand, field by field as CloudEvent marshals: it is
// made for every decision, in the commit loop, and data (a decision) is
// JSON already.
func cloudEvent(typ, source, id, subject string, at time.Time, seq int64, data []byte) []byte {
	b := make([]byte, 0, 200+len(source)+len(subject)+len(data))
	b = append(b, `{"specversion":"1.0","type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, source)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"time":"`...)
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if subject != "" {
		b = append(b, `,"subject":`...)
		b = appendJSONString(b, subject)
	}
	b = append(b, `,"datacontenttype":"application/json","sequence":"`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, as encoding/json writes it
// without HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q := marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// marshal is json.Marshal without HTML escaping: texts stay as written.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only the package's own types are marshalled
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// Body is what a delivery sends: its own body, or for a decision sent as
// the log holds it, the CloudEvent made from the record. source names the
// sender.
func Body(d store.Delivery, source string) []byte {
	if len(d.Body) > 0 || d.Kind != KindDecision {
		return d.Body
	}
	return cloudEvent(TypeDecision, source, d.ID, d.Line, d.Clock, d.Seq, d.Decision)
}

// ErasedText replaces erased personal data.
const ErasedText = "[erased]"

// Redact returns a delivery's body without the personal data of its
// contact. decision redacts a decision (the data of a decision event).
func Redact(d store.Delivery, decision func([]byte) ([]byte, error)) ([]byte, error) {
	switch d.Kind {
	case KindEmail:
		var m Mail
		if err := json.Unmarshal(d.Body, &m); err != nil {
			return nil, fmt.Errorf("delivery %s: %w", d.ID, err)
		}
		m.Subject, m.Text = "Switchboard notification "+ErasedText, ErasedText
		return marshal(m), nil
	case KindDecision, KindNotify:
		if len(d.Body) == 0 {
			return d.Body, nil // made from the record, which is erased with the log
		}
		var ce CloudEvent
		if err := json.Unmarshal(d.Body, &ce); err != nil {
			return nil, fmt.Errorf("delivery %s: %w", d.ID, err)
		}
		if d.Kind == KindDecision {
			data, err := decision(ce.Data)
			if err != nil {
				return nil, err
			}
			ce.Data = data
		} else {
			var n Notice
			if err := json.Unmarshal(ce.Data, &n); err != nil {
				return nil, fmt.Errorf("delivery %s: %w", d.ID, err)
			}
			if n.Text != "" {
				n.Text = ErasedText
			}
			if n.About.Message != "" {
				n.About.Message = ErasedText
			}
			n.About.Contact = Contact{ID: n.About.Contact.ID}
			ce.Data = marshal(n)
		}
		return marshal(ce), nil
	}
	return d.Body, nil
}
