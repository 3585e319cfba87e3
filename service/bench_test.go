package service

import (
	"bytes"
	"fmt"
	"net/http"
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
