package service

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
)

// Deliveries yield to accepting events, but only when they compete for
// the processor: while events come in and the process uses most of the
// CPU it may, the dispatcher and the platform's feed send fewer
// deliveries at once, and catch up when the burst is over (the feed
// yields only while it is not far behind). A service that keeps up with
// its events delivers at full speed.

const (
	// busyFor is how long after a request the service counts as
	// accepting events.
	busyFor = 10 * time.Millisecond
	// cpuEvery is how often the CPU used is sampled.
	cpuEvery = 100 * time.Millisecond
	// cpuShort is the share of the CPU the process may use above which it
	// is short of it.
	cpuShort = 0.75
	// cpuHold is how long the service stays short of CPU after it last
	// was: deliveries slowed down use less, and would otherwise speed up
	// again at once.
	cpuHold = time.Second
)

// cpuGauge tells whether the process is short of CPU.
type cpuGauge struct {
	shortUntil atomic.Int64 // Unix ns
}

// run samples the CPU used until ctx ends. Where the system does not say
// (cpuTime is not ok), the process never counts as short of CPU.
func (g *cpuGauge) run(ctx context.Context) {
	used, ok := cpuTime()
	if !ok {
		return
	}
	at := time.Now()
	t := time.NewTicker(cpuEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			u, _ := cpuTime()
			share := float64(u-used) / (float64(now.Sub(at)) * float64(runtime.GOMAXPROCS(0)))
			if share > cpuShort {
				g.shortUntil.Store(now.Add(cpuHold).UnixNano())
			}
			used, at = u, now
		}
	}
}

func (g *cpuGauge) short(now time.Time) bool { return now.UnixNano() < g.shortUntil.Load() }

// busy says deliveries should yield: events are coming in and the
// process is short of CPU.
func (s *Service) busy() bool {
	now := time.Now()
	return now.UnixNano()-s.lastRequest.Load() < int64(busyFor) && s.cpu.short(now)
}
