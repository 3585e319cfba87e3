package triggers

import "testing"

var benchLine = []byte(`{"id":"e123","type":"message.received","at":"2026-01-05T09:00:01Z","channel":"whatsapp","to":"+15550123","contact":{"id":"k12","lang":"fr","country":"C12"},"message":{"id":"e123","text":"urgent: hello","lang":"de"}}`)

func BenchmarkDecodeEvent(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEvent(benchLine, true); err != nil {
			b.Fatal(err)
		}
	}
}
