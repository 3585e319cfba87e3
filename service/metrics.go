package service

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/switchboard-dev/switchboard/engine"
)

// metrics are the service's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	refused   *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	snapshots *prometheus.CounterVec
	// Storing: how long a group takes to be stored, how many records it
	// holds, and how many records other instances appended (a shared log).
	commitTime    prometheus.Histogram
	commitRecords prometheus.Histogram
	applied       prometheus.Counter
	// lockHeld is how long a group held the shared log's lock: the log
	// takes at most one group per such time, across all instances.
	lockHeld prometheus.Histogram
	// wrongToken counts calls refused for a missing or wrong token.
	wrongToken *prometheus.CounterVec
	// condFailures counts rule conditions that failed at run time, by
	// rule: each did not match.
	condFailures *prometheus.CounterVec
}

func newMetrics(s *Service) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_actions_total",
			Help: "Actions decided, by the rule that caused them and their type.",
		}, []string{"rule", "action"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_decision_seconds",
			Help:    "Time from receiving an event to answering it, once durable.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_refused_total",
			Help: "Events refused, by reason: bad input, or the store failing.",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_reloads_total",
			Help: "Rule reloads, by outcome.",
		}, []string{"outcome"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_snapshots_total",
			Help: "Snapshots of the state, by outcome.",
		}, []string{"outcome"}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_commit_seconds",
			Help:    "Time to store one group of records durably; on a shared log, with the wait for the log's lock and the read of what the other instances appended.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		commitRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_commit_records",
			Help:    "Records per group stored (events, ticks and reloads decided together, in one transaction).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_log_applied_total",
			Help: "Records the other instances appended to the shared log, applied to this instance's state.",
		}),
		lockHeld: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_log_lock_seconds",
			Help:    "Time a group held the shared log's lock, from reading what the other instances appended to the commit's answer: the instances together append at most one group per such time.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.wrongToken = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_wrong_token_total",
		Help: "Calls refused for a missing or wrong token, by where they came: the API (api) or the console's login (console). A steady rise is someone guessing.",
	}, []string{"surface"})
	m.condFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_condition_failures_total",
		Help: "Rule conditions that failed at run time (a custom attribute of an unexpected type, say) and so did not match, by rule.",
	}, []string{"rule"})
	m.wrongToken.WithLabelValues("api")
	m.wrongToken.WithLabelValues("console")
	m.reg.MustRegister(m.wrongToken, m.condFailures, m.decisions, m.latency, m.refused, m.reloads, m.snapshots, m.commitTime, m.commitRecords, m.applied, m.lockHeld, readyGauge(s), &stateCollector{s: s},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// stored measures a group stored.
func (m *metrics) stored(records int, took time.Duration) {
	m.commitTime.Observe(took.Seconds())
	m.commitRecords.Observe(float64(records))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// stateCollector reads the live state at scrape time.
type stateCollector struct{ s *Service }

var (
	descQueue   = prometheus.NewDesc("switchboard_queue_length", "Conversations waiting, per group or agent line.", []string{"group", "agent"}, nil)
	descOldest  = prometheus.NewDesc("switchboard_queue_oldest_wait_seconds", "How long the oldest waiting conversation has waited, per line.", []string{"group", "agent"}, nil)
	descOnline  = prometheus.NewDesc("switchboard_agents_online", "Agents online.", nil, nil)
	descLoad    = prometheus.NewDesc("switchboard_agent_load", "Capacity units in use, per agent.", []string{"agent"}, nil)
	descEvents  = prometheus.NewDesc("switchboard_events_stored", "Events in the store.", nil, nil)
	descVersion = prometheus.NewDesc("switchboard_rules_info", "The rule set running, by version.", []string{"version"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descOldest, descOnline, descLoad, descEvents, descVersion} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := s.catchUp(ctx)
	cancel()
	if err != nil {
		return // the state's gauges would be behind the log: none rather than stale
	}
	s.lockState()
	if s.eng == nil {
		s.mu.Unlock()
		return
	}
	queues := s.eng.Queues(s.cfg.Now())
	agents := s.eng.Agents()
	seq := s.seq
	version := s.rs.Version
	s.mu.Unlock()
	for _, q := range queues {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(q.Waiting)), q.Group, q.Agent)
		oldest := 0.0
		for _, w := range q.Waiting {
			oldest = max(oldest, w.WaitSeconds)
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, oldest, q.Group, q.Agent)
	}
	online := 0
	for _, a := range agents {
		if a.Presence == "online" {
			online++
		}
		ch <- prometheus.MustNewConstMetric(descLoad, prometheus.GaugeValue, a.Load, a.ID)
	}
	ch <- prometheus.MustNewConstMetric(descOnline, prometheus.GaugeValue, float64(online))
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.GaugeValue, float64(seq))
	ch <- prometheus.MustNewConstMetric(descVersion, prometheus.GaugeValue, 1, version)
}

// readyGauge is 1 while the service accepts events.
func readyGauge(s *Service) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_ready",
		Help: "1 while the service accepts events; 0 while it refuses them (store failed, database file gone, stopping).",
	}, func() float64 {
		if ok, _ := s.Ready(); ok {
			return 1
		}
		return 0
	})
}

// count records the actions of committed decisions.
func (m *metrics) count(actions []engine.Action) {
	for _, a := range actions {
		m.decisions.WithLabelValues(a.Rule, a.Type).Inc()
	}
}
