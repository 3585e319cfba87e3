package triggers

import (
	"errors"
	"testing"
)

// FuzzDecodeEvent: any bytes decode into a complete event or fail with a
// FieldError; nothing panics.
func FuzzDecodeEvent(f *testing.F) {
	f.Add(benchLine)
	for _, s := range []string{
		`{"id":"e1","type":"tick","at":"2026-01-05T09:00:00Z"}`,
		`{"id":"e2","type":"message.sent","at":"2026-01-05T09:00:00Z","agent":"a","conversation":"c1","message":{"text":"x"}}`,
		`{"id":"e3","type":"agent.status","agent":"a","status":"online"}`,
		`{"id":"e4","type":"conversation.closed","conversation":"c1"}`,
		`{"id":"e5","type":"message.received","contact":{"id":"k","tags":["a"],"attrs":{"n":1,"o":{"p":[true,null]}}}}`,
		`[]`, `null`, `{"id":"\u0000"}`, `{"at":"2026-13-45T99:00:00Z"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, requireAt := range []bool{true, false} {
			ev, err := DecodeEvent(data, requireAt)
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Message == "" {
					t.Fatalf("error is not a FieldError with a message: %T %v", err, err)
				}
				continue
			}
			if err := ev.Validate(requireAt); err != nil {
				t.Fatalf("decoded an event that does not validate: %v", err)
			}
		}
	})
}
