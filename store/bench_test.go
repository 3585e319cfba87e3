package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAppend measures durable records per second in batches of 1,000,
// the way the service commits a batch of events.
func BenchmarkAppend(b *testing.B) {
	s := open(&testing.T{}, filepath.Join(b.TempDir(), "sb.db"))
	defer s.Close()
	ctx := context.Background()
	const size = 1000
	event := []byte(`{"id":"e123456","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k123456","name":"Kim","lang":"fr"},"message":{"text":"Bonjour"}}`)
	decision := []byte(`{"event":"e123456","conversation":"e123456","actions":[{"type":"assign","rule":"r.rules:1","conversation":"e123456","agent":"a","group":"G","algorithm":"least_active"}],"rules":"0123456789abcdef"}`)
	now := time.Now()
	seq := int64(0)
	b.ResetTimer()
	for i := 0; i < b.N; i += size {
		recs := make([]Record, 0, size)
		for range min(size, b.N-i) {
			seq++
			recs = append(recs, Record{Seq: seq, ID: fmt.Sprint("e", seq), Type: "message.received", Clock: now, Event: event,
				Hash: []byte("0123456789abcdef"), Decision: decision, RuleSet: "0123456789abcdef", Contacts: []string{fmt.Sprint("k", seq)}})
		}
		if err := s.Append(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
