package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/switchboard-dev/switchboard/delivery"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/store"
)

// load is a closed-loop load: clients post bodies as fast as they are
// answered, each its own pairs of requests in order (body(i, 0), then
// body(i, 1)). It returns requests per second and the latencies, sorted.
func load(b *testing.B, url string, clients, n int, body func(pair, step int) string) (float64, []time.Duration) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pair := int(next.Add(1))
				if 2*pair > n+1 {
					return
				}
				for step := range 2 {
					t0 := time.Now()
					resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(body(pair, step))))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					lat[c] = append(lat[c], time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	all := slices.Concat(lat...)
	slices.Sort(all)
	return float64(len(all)) / elapsed.Seconds(), all
}

// openClose makes load's events: each opens a conversation and the next
// closes it, so the team never fills up; prefix keeps ids apart.
func openClose(prefix string) func(pair, step int) string {
	return func(pair, step int) string {
		if step == 1 {
			return fmt.Sprintf(`{"id":"%sc%d","type":"conversation.closed","conversation":"%se%d"}`, prefix, pair, prefix, pair)
		}
		return msg(fmt.Sprintf("%se%d", prefix, pair), fmt.Sprintf("%sk%d", prefix, pair))
	}
}

// baseline is the least an HTTP JSON service does per request: read the
// body, decode it, answer JSON. Switchboard is measured against it.
func baseline() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"event": ev["id"], "actions": []any{}})
	})
}

// BenchmarkHTTP measures durable events per second through the HTTP API,
// one event per request, beside a minimal net/http JSON handler measured
// in the same run under the same load (ratio = switchboard / minimal).
// Every answered event is committed to SQLite (WAL, synchronous FULL);
// concurrent clients share commits (group commit).
func BenchmarkHTTP(b *testing.B) {
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			url := startBench(b, filepath.Join(b.TempDir(), "sb.db"))
			base := httptest.NewServer(baseline())
			defer base.Close()
			event := openClose("")
			b.ResetTimer()
			rate, lat := load(b, url+"/v1/events", clients, b.N, event)
			b.StopTimer()
			baseRate, _ := load(b, base.URL, clients, b.N, event)
			if len(lat) > 0 {
				b.ReportMetric(rate, "events/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(baseRate, "minimal-req/s")
				b.ReportMetric(rate/baseRate, "ratio")
			}
		})
	}
}

// BenchmarkIngestBatch measures durable events per second when four
// clients post batches of 1,000 events (JSON lines) at once, as a bulk
// import would: every answered event is committed.
func BenchmarkIngestBatch(b *testing.B) {
	url := startBench(b, filepath.Join(b.TempDir(), "sb.db"))
	b.ResetTimer()
	b.ReportMetric(ingestBatches(b, url, b.N, ""), "events/s")
}

// ingestBatches posts n events in batches of 1,000 from four clients and
// returns the durable events per second.
func ingestBatches(b *testing.B, url string, total int, prefix string) float64 {
	const size, clients = 1000, 4
	var bodies [][]byte
	n := 0
	for range (total + size - 1) / size {
		var buf bytes.Buffer
		for range size / 2 {
			// Opens, then closes, so the team never fills up.
			fmt.Fprintf(&buf, `{"id":"%se%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d","name":"Kim","lang":"fr"},"message":{"text":"Bonjour"}}`+"\n", prefix, n, n)
			fmt.Fprintf(&buf, `{"id":"%sc%d","type":"conversation.closed","conversation":"%se%d"}`+"\n", prefix, n, prefix, n)
			n++
		}
		bodies = append(bodies, buf.Bytes())
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(bodies) {
					return
				}
				resp, err := http.Post(url+"/v1/events", "application/x-ndjson", bytes.NewReader(bodies[i]))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(2*n) / time.Since(begin).Seconds()
}

// BenchmarkDelivery measures what delivering costs: batches ingested with
// no delivery configured, then the same with every decision sent to a
// platform endpoint on loopback (signed), each on a service of its own,
// stopped before the next starts; then one event per request from 8
// clients, for the latency of acceptance, off and on. It reports how many
// deliveries per second reach the receiver, from the first event posted to
// the last decision delivered.
func BenchmarkDelivery(b *testing.B) {
	var delivered atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("bench-secret-bench-secret-bench!"))
	cfg, ds := delivery.ParseConfig("bench.yaml", []byte("platform: {url: "+receiver.URL+", secret_env: S}\n"), func(string) string { return secret })
	if cfg == nil {
		b.Fatal(ds)
	}
	const single = 2000 // events posted one per request, per service
	event := openClose("s")
	// run ingests on a fresh service and returns its batch throughput and
	// single-event latency (p50), after everything owed was delivered.
	run := func(name string, cfg *delivery.Config) (rate float64, p50 time.Duration, took time.Duration) {
		url, st, stop := startBenchWith(b, filepath.Join(b.TempDir(), name+".db"), cfg)
		defer stop()
		begin := time.Now()
		rate = ingestBatches(b, url, b.N, "")
		_, lat := load(b, url+"/v1/events", 8, single, event)
		for cfg != nil {
			st, err := st.DeliveryStats(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if st.Open == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(lat) > 0 {
			p50 = lat[len(lat)/2]
		}
		return rate, p50, time.Since(begin)
	}
	b.ResetTimer()
	off, offP50, _ := run("off", nil)
	on, onP50, took := run("on", cfg)
	b.StopTimer()
	if n := delivered.Load(); n < int64(b.N+single) {
		b.Fatalf("%d decisions delivered of %d", n, b.N+single)
	}
	b.ReportMetric(off, "off-events/s")
	b.ReportMetric(on, "on-events/s")
	b.ReportMetric(on/off, "ratio")
	b.ReportMetric(float64(offP50.Microseconds())/1000, "off-p50-ms")
	b.ReportMetric(float64(onP50.Microseconds())/1000, "on-p50-ms")
	b.ReportMetric(float64(b.N+single)/took.Seconds(), "deliveries/s")
}

// startBench runs a service as serve does (default limits and snapshots,
// the wall clock) for a benchmark.
func startBench(b *testing.B, path string) string {
	url, _, stop := startBenchWith(b, path, nil)
	b.Cleanup(stop)
	return url
}

// startBenchWith is startBench with a delivery configuration; stop ends
// the service and closes its store.
func startBenchWith(b *testing.B, path string, cfg *delivery.Config) (url string, st store.Store, stop func()) {
	b.Helper()
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(context.Background(), Config{Rules: buildRules(b, defaultTestRules), Store: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Delivery: cfg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	srv := httptest.NewServer(svc.Handler())
	var once sync.Once
	return srv.URL, st, func() { once.Do(func() { srv.Close(); cancel(); <-done; st.Close() }) }
}

// historyRules route a desk of 20,000 customers who come back again and
// again: the state stays the same size however long the history.
const historyRules = `on new conversation -> assign group G by least_active
on incoming message where text contains 'refund' -> tag refund`

const historyContacts = 20_000

// history is a database holding a log of n events (and the snapshots the
// service took along it), made once per size for every benchmark of a run.
var history = map[int]string{}

func historyLog(b *testing.B, n int) string {
	b.Helper()
	if path, ok := history[n]; ok {
		return path
	}
	dir, err := os.MkdirTemp("", "switchboard-history")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "sb.db")
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(context.Background(), Config{Rules: buildRules(b, historyRules), Store: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Each visit: the customer writes (a new conversation), writes again,
	// an agent answers, the conversation closes.
	var batch []*incoming
	flush := func() {
		results, err := svc.Submit(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			if r.err != nil {
				b.Fatal(r.err)
			}
		}
		batch = batch[:0]
	}
	go svc.Run(ctx)
	// The newest snapshot falls half an interval before the end, as it
	// would at any moment in a running service: a restart replays the
	// records after it.
	snapAt := n - int(svc.cfg.SnapshotEvery)/2
	for i := 0; i < n; i++ {
		if i == snapAt {
			flush()
			if err := svc.snap.do(ctx, func(ctx context.Context) error { return svc.snap.take(ctx) }); err != nil {
				b.Fatal(err)
			}
		}
		visit, step := i/4, i%4
		k := fmt.Sprintf("k%d", visit%historyContacts)
		conv := fmt.Sprintf("v%d", visit)
		var line string
		switch step {
		case 0:
			line = fmt.Sprintf(`{"id":"v%d","type":"message.received","channel":"whatsapp","to":"+1","contact":{"id":%q,"name":"Customer %d","lang":"en"},"message":{"text":"hello"}}`, visit, k, visit%historyContacts)
		case 1:
			line = fmt.Sprintf(`{"id":"v%d-2","type":"message.received","conversation":%q,"channel":"whatsapp","to":"+1","contact":{"id":%q},"message":{"text":"about my refund"}}`, visit, conv, k)
		case 2:
			line = fmt.Sprintf(`{"id":"v%d-3","type":"message.sent","conversation":%q,"agent":"a","message":{"text":"on it"}}`, visit, conv)
		case 3:
			line = fmt.Sprintf(`{"id":"v%d-4","type":"conversation.closed","conversation":%q}`, visit, conv)
		}
		in, err := accept([]byte(line))
		if err != nil {
			b.Fatal(err)
		}
		batch = append(batch, in)
		if len(batch) == 5000 {
			flush()
		}
	}
	flush()
	st.Close()
	history[n] = path
	return path
}

var historySizes = []int{100_000, 1_000_000}

// BenchmarkRestart measures a restart on a log of 100k and of 1M events:
// the newest snapshot and the records after it, whatever the history.
func BenchmarkRestart(b *testing.B) {
	for _, n := range historySizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			path := historyLog(b, n)
			rs := buildRules(b, historyRules)
			b.ResetTimer()
			for range b.N {
				st, err := store.OpenSQLite(context.Background(), path)
				if err != nil {
					b.Fatal(err)
				}
				svc, err := New(context.Background(), Config{Rules: rs, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				if svc.seq != int64(n) {
					b.Fatalf("restarted at record %d of %d", svc.seq, n)
				}
				st.Close()
			}
		})
	}
}

// BenchmarkExplain measures explaining an event on a log of 100k and of
// 1M events: from the nearest snapshot before it. The events explained are
// spread over the last snapshot intervals.
func BenchmarkExplain(b *testing.B) {
	for _, n := range historySizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			path := historyLog(b, n)
			st, err := store.OpenSQLite(context.Background(), path)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			svc, err := New(context.Background(), Config{Rules: buildRules(b, historyRules), Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				visit := (n/4 - 1) - (i*997)%5000 // within the last 20,000 events
				rec, ok, err := st.Get(ctx, fmt.Sprintf("v%d-2", visit))
				if err != nil || !ok {
					b.Fatal(ok, err)
				}
				trace, err := svc.j.Explain(ctx, rec)
				if err != nil || trace == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
