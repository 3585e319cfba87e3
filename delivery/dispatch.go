package delivery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-dev/switchboard/store"
)

// Retry policy.
const (
	firstRetry = time.Second // after the first failure; doubled after each
	lastRetry  = time.Hour   // the longest wait between two attempts
	pollEvery  = time.Second // the outbox is looked at at least this often
	// workers is how many deliveries are in flight at once.
	workers = 64
	// busyWorkers (the feed) and busyOutbox are how many while the
	// service is busy accepting events and short of CPU; each then also
	// pauses busyPause after its delivery, so that deliveries take little
	// of a processor the events need.
	busyWorkers = 1
	busyOutbox  = 4
	busyPause   = 2 * time.Millisecond
	// finishBatch is the most outcomes one transaction records.
	finishBatch = 256
)

// Dispatcher works the outbox: it claims due deliveries, sends them, and
// records how each went. Several dispatchers may share a store: claims are
// leased.
type Dispatcher struct {
	out       store.Outbox
	cfg       *Config
	log       *slog.Logger
	owner     string
	client    *http.Client
	userAgent string
	now       func() time.Time
	wake      chan struct{}
	m         *metrics
	retryBase time.Duration
	busy      func() bool

	mu  sync.Mutex
	rnd *mrand.Rand

	feed    atomic.Pointer[feed] // the platform's, while this process works it
	records Records              // the log the feed reads
	// contend is set when the feed is shared with other processes: it is
	// taken when free, and worked until lost (see runFeed).
	contend bool
	head    atomic.Int64 // the last record committed, for a feed taken later
}

// Options tune a Dispatcher; the zero value is what serve uses.
type Options struct {
	// Client sends webhooks; nil is a client that verifies TLS and follows
	// no redirects.
	Client *http.Client
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// UserAgent names the sender; "" is "Switchboard".
	UserAgent string
	// Registerer takes the delivery metrics; nil registers none.
	Registerer prometheus.Registerer
	// RetryBase is the wait after a first failure, doubled after each;
	// 0 is a second.
	RetryBase time.Duration
	// Busy, when set, says the service is busy accepting events and
	// short of CPU: deliveries then yield, fewer at once and each with a
	// pause after it, and catch up when the burst is over (the platform's
	// feed yields only while it is less than maxLag behind).
	Busy func() bool
}

// NewDispatcher makes a dispatcher for a store's outbox.
func NewDispatcher(out store.Outbox, cfg *Config, log *slog.Logger, o Options) *Dispatcher {
	if cfg == nil {
		cfg = NewConfig()
	}
	if o.Client == nil {
		// Connections to a receiver are kept for every worker, not the
		// two the default transport keeps: a busy receiver is not dialled
		// again for each delivery.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = workers
		o.Client = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.UserAgent == "" {
		o.UserAgent = "Switchboard"
	}
	if o.RetryBase <= 0 {
		o.RetryBase = firstRetry
	}
	var id [6]byte
	rand.Read(id[:])
	host, _ := os.Hostname()
	d := &Dispatcher{out: out, cfg: cfg, log: log, client: o.Client, userAgent: o.UserAgent, now: o.Now,
		owner: host + "/" + hex.EncodeToString(id[:]), wake: make(chan struct{}, 1), retryBase: o.RetryBase, busy: o.Busy,
		rnd: mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	d.m = newMetrics(o.Registerer)
	return d
}

// Wake tells the dispatcher that deliveries may be due, so that it does
// not wait for its next look.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// lease is how long a claim holds: longer than any attempt can take.
func (d *Dispatcher) lease() time.Duration {
	longest := DefaultTimeout
	for _, e := range d.cfg.Endpoints {
		longest = max(longest, e.Timeout)
	}
	if d.cfg.Platform != nil {
		longest = max(longest, d.cfg.Platform.Timeout)
	}
	if d.cfg.SMTP != nil {
		longest = max(longest, d.cfg.SMTP.Timeout)
	}
	return 3*longest + 10*time.Second
}

// Run works the outbox until ctx ends. Attempts in flight then are cut
// off and not recorded: their claims lapse, and they are made again, with
// the same id, by the next dispatcher.
func (d *Dispatcher) Run(ctx context.Context) {
	if f := d.feed.Load(); f != nil || d.contend {
		fed := make(chan struct{})
		go func() { d.runFeed(ctx, f); close(fed) }()
		defer func() { <-fed }()
	}
	outcomes := make(chan finished, workers)
	var inflight sync.WaitGroup
	free := make(chan struct{}, workers) // a token per free worker
	for range workers {
		free <- struct{}{}
	}
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.finish(outcomes, free)
	}()
	defer func() {
		inflight.Wait()
		close(outcomes)
		<-recorded
	}()
	for {
		// Claim as many as there are free workers (fewer while accepting
		// events comes first).
		limit := workers
		busy := d.busy != nil && d.busy()
		if busy {
			limit = busyOutbox
		}
		n := len(free) - (workers - limit)
		var claimed []store.Delivery
		claimedAt, lease := d.now(), d.lease()
		if n > 0 {
			var err error
			claimed, err = d.out.ClaimDeliveries(ctx, d.owner, claimedAt, lease, n)
			if err != nil && ctx.Err() == nil {
				d.log.Error("cannot claim deliveries", "err", err)
			}
		}
		for _, del := range claimed {
			<-free
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				var o store.Outcome
				if late := d.now().Sub(claimedAt); late > lease/2 {
					// This process stood still between claim and attempt
					// (stopped, paused, starved) for so long that its claim
					// may have lapsed and another process sent the delivery,
					// and maybe the next of its line: sending it now could
					// repeat it after that one. Left to whoever claims it
					// (this process again once the claim lapses).
					d.log.Warn("claim too old to send on: left to the next claim", "delivery", del.ID, "claimed", late.Round(time.Millisecond).String()+" ago")
					o = store.Outcome{ID: del.ID} // not recorded
				} else {
					o = d.attempt(ctx, del)
				}
				if busy {
					d.pause(ctx)
				}
				if ctx.Err() != nil {
					o.Status = "" // cut off: not recorded
				}
				outcomes <- finished{o, del.Destination, del.Line, del.Kind}
			}()
		}
		if len(claimed) == n && n > 0 {
			continue // there may be more
		}
		timer := time.NewTimer(pollEvery)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-d.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// finished is an attempt's outcome, with where the delivery went.
type finished struct {
	o    store.Outcome
	dest string
	line string
	kind string
}

// finish records outcomes in batches, and frees their workers once
// recorded, so that the next delivery of a line is claimed only after.
func (d *Dispatcher) finish(outcomes <-chan finished, free chan<- struct{}) {
	var batch []finished
	flush := func() {
		if len(batch) == 0 {
			return
		}
		var record []store.Outcome
		for _, f := range batch {
			if f.o.Status != "" {
				record = append(record, f.o)
			}
		}
		// The outcomes must be kept even when the service stops.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.out.FinishDeliveries(ctx, d.owner, record)
		cancel()
		if err != nil {
			// The claims run out and the deliveries are made again:
			// at least once.
			d.log.Error("cannot record delivery outcomes; they will be retried", "deliveries", len(batch), "err", err)
		} else if feed := d.feed.Load(); feed != nil {
			for _, f := range batch {
				if f.dest == Platform && f.kind == KindDecision && (f.o.Status == store.Delivered || f.o.Status == store.Dead) {
					feed.closed(f.line, f.o.Status == store.Delivered) // its line may be clear for the feed
				}
			}
		}
		for range batch {
			free <- struct{}{}
		}
		batch = batch[:0]
		d.Wake()
	}
	// Outcomes are recorded as they come: each flush takes every outcome
	// that arrived meanwhile, so batches grow with the load, and nothing
	// waits for a batch to fill.
	for o := range outcomes {
		batch = append(batch, o)
	more:
		for len(batch) < finishBatch {
			select {
			case o, ok := <-outcomes:
				if !ok {
					break more
				}
				batch = append(batch, o)
			default:
				break more
			}
		}
		flush()
	}
	flush()
}

// attempt makes one attempt at a delivery and says what comes next.
func (d *Dispatcher) attempt(ctx context.Context, del store.Delivery) store.Outcome {
	start := d.now()
	var r result
	switch {
	case del.Destination == Email:
		if d.cfg.SMTP == nil {
			r = result{err: "no SMTP server configured", retry: false}
		} else {
			r = sendMail(ctx, d.cfg.SMTP, del)
		}
	default:
		ep := d.endpoint(del.Destination)
		if ep == nil {
			r = result{err: "no endpoint " + del.Destination + " configured"}
		} else {
			body := Body(del, d.cfg.Source)
			if len(body) == 0 {
				r = result{err: "the decision's record is gone from the log"}
			} else {
				r = post(ctx, d.client, ep, del.ID, body, start, d.userAgent)
			}
		}
	}
	end := d.now()
	o := store.Outcome{ID: del.ID, Attempt: store.Attempt{At: end, Took: end.Sub(start), Code: r.code, Error: r.err}, Answer: r.answer}
	d.m.attempts.WithLabelValues(del.Destination).Inc()
	d.m.took.WithLabelValues(del.Destination).Observe(end.Sub(start).Seconds())
	switch {
	case r.ok():
		o.Status = store.Delivered
	case !r.retry:
		o.Status = store.Dead
	case !end.Before(del.Expires):
		o.Status = store.Dead
		o.Attempt.Error = r.err + "; not delivered within its maximum age, given up"
	default:
		wait := d.backoff(del.Attempts + 1)
		if r.after > wait {
			wait = r.after
		}
		// A last attempt at the expiry rather than none: a Retry-After
		// past it, or a long backoff, still leaves one more try.
		o.Status, o.Due = store.Failed, minTime(end.Add(wait), del.Expires)
	}
	d.m.outcomes.WithLabelValues(del.Destination, o.Status).Inc()
	if o.Status == store.Dead {
		d.log.Warn("delivery dead", "delivery", del.ID, "destination", del.Destination, "attempts", del.Attempts+1, "code", r.code, "err", o.Attempt.Error)
	}
	return o
}

func (d *Dispatcher) endpoint(dest string) *Endpoint {
	if dest == Platform {
		return d.cfg.Platform
	}
	if name, ok := strings.CutPrefix(dest, webhookPrefix); ok {
		return d.cfg.Endpoints[name]
	}
	return nil
}

// pause holds a worker a moment while the service is busy accepting
// events.
func (d *Dispatcher) pause(ctx context.Context) {
	t := time.NewTimer(busyPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// backoff is the wait after the n-th failed attempt: exponential, capped,
// with jitter (between half and all of it), so that receivers coming back
// are not hit by every sender at once.
func (d *Dispatcher) backoff(n int) time.Duration {
	full := float64(d.retryBase) * math.Pow(2, float64(n-1))
	if full > float64(lastRetry) {
		full = float64(lastRetry)
	}
	d.mu.Lock()
	j := d.rnd.Float64()
	d.mu.Unlock()
	return time.Duration(full * (0.5 + j/2))
}

// Stats refreshes the gauges of open deliveries; serve calls it before a
// scrape.
func (d *Dispatcher) Stats(ctx context.Context) {
	st, err := d.out.DeliveryStats(ctx)
	if err != nil {
		return
	}
	d.m.open.Set(float64(st.Open))
	if st.Oldest.IsZero() {
		d.m.oldest.Set(0)
	} else {
		d.m.oldest.Set(d.now().Sub(st.Oldest).Seconds())
	}
}

type metrics struct {
	attempts *prometheus.CounterVec
	outcomes *prometheus.CounterVec
	took     *prometheus.HistogramVec
	open     prometheus.Gauge
	oldest   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_delivery_attempts_total", Help: "Delivery attempts, by destination."}, []string{"destination"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_deliveries_total", Help: "Delivery attempts by destination and outcome: delivered, failed (to be retried) or dead."}, []string{"destination", "outcome"}),
		took:     prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "switchboard_delivery_seconds", Help: "How long a delivery attempt took.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"destination"}),
		open:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_deliveries_open", Help: "Deliveries not yet delivered or dead."}),
		oldest:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_delivery_oldest_open_seconds", Help: "Age of the oldest delivery not yet delivered or dead."}),
	}
	if reg != nil {
		reg.MustRegister(m.attempts, m.outcomes, m.took, m.open, m.oldest)
	}
	return m
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
