package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-dev/switchboard/internal/pgtest"
)

// benchClients is how many clients post at once in the instance
// benchmarks.
const benchClients = 64

// benchRules writes the benchmarks' rule set: every message opens a
// conversation, assigned by load.
func benchRules(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "rules")
	os.Mkdir(dir, 0o755)
	team := "agents:\n"
	for i := range 50 {
		team += fmt.Sprintf("  - {id: a%d, capacity: 1000000, status: online}\n", i)
	}
	team += "groups:\n  G: [" + func() string {
		s := ""
		for i := range 50 {
			if i > 0 {
				s += ", "
			}
			s += fmt.Sprintf("a%d", i)
		}
		return s
	}() + "]\n"
	os.WriteFile(filepath.Join(dir, "team.yaml"), []byte(team), 0o644)
	os.WriteFile(filepath.Join(dir, "r.rules"), []byte("on new conversation -> assign group G by least_active\n"), 0o644)
	return dir
}

// benchInstances starts n switchboard processes on one fresh PostgreSQL
// database; stop ends them.
func benchInstances(b *testing.B, n int) (addrs []string, procs []*exec.Cmd, stop func()) {
	bin := binary(b)
	data := pgtest.URL(b)
	rules := benchRules(b)
	stop = func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}
	for range n {
		addr := freeAddr(b)
		cmd := exec.Command(bin, "serve", "--rules", rules, "--data", data, "--addr", addr)
		if err := cmd.Start(); err != nil {
			stop()
			b.Fatal(err)
		}
		addrs, procs = append(addrs, addr), append(procs, cmd)
		waitHealthy(b, addr)
	}
	return addrs, procs, stop
}

// poster sends single events, moving to the next instance when one does
// not answer or refuses, as a client behind a load balancer would.
type poster struct {
	client *http.Client
	addrs  []string
	next   atomic.Int64
	run    string
}

func newPoster(addrs []string) *poster {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = benchClients
	return &poster{client: &http.Client{Transport: t, Timeout: 10 * time.Second}, addrs: addrs, run: fmt.Sprint(time.Now().UnixNano())}
}

// post sends event i from client c and returns when it is acknowledged,
// with the instance that took it.
func (p *poster) post(c, i int) (took int) {
	body := []byte(fmt.Sprintf(`{"id":"b%s-%d","type":"message.received","channel":"sms","to":"+1","contact":{"id":"k%d"}}`, p.run, i, i))
	for try := 0; ; try++ {
		at := (c + try) % len(p.addrs)
		resp, err := p.client.Post("http://"+p.addrs[at]+"/v1/events", "application/json", bytes.NewReader(body))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return at
			}
		}
		if try%len(p.addrs) == len(p.addrs)-1 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// BenchmarkInstances: durable events per second, and latency, for one
// and for three instances on one local PostgreSQL, 64 clients posting one
// event per request, spread across the instances.
func BenchmarkInstances(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			addrs, _, stop := benchInstances(b, n)
			defer stop()
			p := newPoster(addrs)
			var next atomic.Int64
			lat := make([][]time.Duration, benchClients)
			var wg sync.WaitGroup
			before := scrape(b, addrs)
			b.ResetTimer()
			start := time.Now()
			for c := range benchClients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						t0 := time.Now()
						p.post(c, i)
						lat[c] = append(lat[c], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50_ms")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99_ms")
			}
			// What it cost: the instances' CPU per event (the database's
			// and the clients' are not in it), how many events one commit
			// stored, and how long it held the log's lock.
			after := scrape(b, addrs)
			b.ReportMetric((after.cpu-before.cpu)*1e6/float64(b.N), "cpu_us/event")
			if groups := after.groups - before.groups; groups > 0 {
				b.ReportMetric((after.records-before.records)/groups, "events/commit")
				b.ReportMetric((after.held-before.held)*1000/groups, "lock_ms/commit")
			}
		})
	}
}

// scraped sums what the instances' metrics say.
type scraped struct{ cpu, groups, records, held float64 }

// scrape reads the instances' /metrics.
func scrape(b *testing.B, addrs []string) (sum scraped) {
	for _, a := range addrs {
		resp, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(text), "\n") {
			name, value, ok := strings.Cut(line, " ")
			v, err := strconv.ParseFloat(value, 64)
			if !ok || err != nil {
				continue
			}
			switch name {
			case "process_cpu_seconds_total":
				sum.cpu += v
			case "switchboard_commit_records_count":
				sum.groups += v
			case "switchboard_commit_records_sum":
				sum.records += v
			case "switchboard_log_lock_seconds_sum":
				sum.held += v
			}
		}
	}
	return sum
}

// BenchmarkFailover: three instances under load from 64 clients; one is
// SIGKILLed. Reported: how long after the kill the clients that were on it
// had their next event accepted by another instance (the worst of them),
// and the longest any client waited for an answer meanwhile. Run it with
// -benchtime 1x: each run starts its own instances.
func BenchmarkFailover(b *testing.B) {
	for range b.N {
		addrs, procs, stopAll := benchInstances(b, 3)
		p := newPoster(addrs)
		var killedAt atomic.Int64
		var mu sync.Mutex
		var recovered []time.Duration // per client of the killed one
		var worst time.Duration
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var next atomic.Int64
		for c := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				first := true
				for {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					at := p.post(c, int(next.Add(1)))
					done := time.Now()
					mu.Lock()
					worst = max(worst, done.Sub(t0))
					// A client of the killed instance, answered by another
					// for the first time since the kill.
					if k := killedAt.Load(); k != 0 && first && c%3 == 0 && at != 0 && done.UnixNano() > k {
						first = false
						recovered = append(recovered, done.Sub(time.Unix(0, k)))
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(2 * time.Second) // under load
		mu.Lock()
		worst = 0
		mu.Unlock()
		killedAt.Store(time.Now().UnixNano())
		procs[0].Process.Kill()
		time.Sleep(3 * time.Second)
		close(stop)
		wg.Wait()
		stopAll()
		slices.Sort(recovered)
		if len(recovered) == 0 {
			b.Fatal("no client of the killed instance went on")
		}
		b.ReportMetric(float64(recovered[len(recovered)-1].Microseconds())/1000, "failover_ms")
		b.ReportMetric(float64(worst.Microseconds())/1000, "longest_answer_ms")
	}
}
