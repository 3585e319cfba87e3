package service

import (
	"bytes"
	"context"
	"fmt"
	"github.com/switchboard-dev/switchboard/store"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkHTTP measures durable events per second through the HTTP API:
// every answered event is committed to SQLite (WAL, synchronous FULL).
// Concurrent clients share commits (group commit).
func BenchmarkHTTP(b *testing.B) {
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			url, stop := start(&testing.T{}, filepath.Join(b.TempDir(), "sb.db"), "")
			defer stop()
			tr := &http.Transport{MaxIdleConnsPerHost: clients}
			client := &http.Client{Transport: tr}
			var next atomic.Int64
			lat := make([][]time.Duration, clients)
			var wg sync.WaitGroup
			b.ResetTimer()
			begin := time.Now()
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						// Each event opens a conversation and the next closes it,
						// so the team never fills up.
						body := msg(fmt.Sprintf("e%d", i), fmt.Sprintf("k%d", i))
						if i%2 == 0 {
							body = fmt.Sprintf(`{"id":"c%d","type":"conversation.closed","at":"2026-01-05T09:00:00Z","conversation":"e%d"}`, i, i-1)
						}
						t0 := time.Now()
						resp, err := client.Post(url+"/v1/events", "application/json", bytes.NewReader([]byte(body)))
						if err != nil {
							b.Error(err)
							return
						}
						resp.Body.Close()
						lat[c] = append(lat[c], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(begin)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// BenchmarkIngestBatch measures durable events per second when clients post
// batches of 1,000 events (JSON lines): every answered event is committed.
func BenchmarkIngestBatch(b *testing.B) {
	url := startBench(b, filepath.Join(b.TempDir(), "sb.db"))
	const size = 1000
	var bodies [][]byte
	n := 0
	for range (b.N + size - 1) / size {
		var buf bytes.Buffer
		for range size {
			// Opens, then closes, so the team never fills up.
			if n%2 == 0 {
				fmt.Fprintf(&buf, `{"id":"e%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","name":"Kim","lang":"fr"},"message":{"text":"Bonjour"}}`+"\n", n, n)
			} else {
				fmt.Fprintf(&buf, `{"id":"c%d","type":"conversation.closed","conversation":"e%d"}`+"\n", n, n-1)
			}
			n++
		}
		bodies = append(bodies, buf.Bytes())
	}
	b.ResetTimer()
	begin := time.Now()
	for _, body := range bodies {
		resp, err := http.Post(url+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(n)/time.Since(begin).Seconds(), "events/s")
}

var snapEvery int64 = 1e9

// startBench runs a service as serve does (default limits, the wall
// clock) for a benchmark.
func startBench(b *testing.B, path string) string {
	b.Helper()
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(context.Background(), Config{Rules: buildRules(b, defaultTestRules), Store: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), SnapshotEvery: snapEvery})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	b.Cleanup(func() { srv.Close(); cancel(); <-done; st.Close() })
	return srv.URL
}
