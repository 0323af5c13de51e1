package server

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockwarden/sockwarden/sandbox"
)

// Outcomes of a request, the outcome label of sockwarden_requests_total.
const (
	OutcomeAllowed = "allowed" // its program started
	OutcomeDenied  = "denied"  // the policy denied it
	OutcomeRefused = "refused" // turned away: over a quota, or the audit trail unwritable
	OutcomeError   = "error"   // malformed, or its program could not start
)

// Metrics are a server's Prometheus series. Make them with [NewMetrics]
// and pass them as [Config].Metrics; a nil *Metrics records nothing.
type Metrics struct {
	requests        *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	spawnSeconds    prometheus.Histogram
	cacheHits       prometheus.Counter
	kills           *prometheus.CounterVec
	quotaRefused    *prometheus.CounterVec
	denials         *prometheus.CounterVec
}

// NewMetrics makes the server's series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_requests_total",
			Help: "Requests by outcome: allowed (the program started), denied (by the policy), refused (over a quota, or the audit trail unwritable), error (malformed, or the program could not start).",
		}, []string{"outcome"}),
		decisionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sockwarden_decision_duration_seconds",
			Help:    "Time the policy took to decide a request (a cached decision included).",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3, 1},
		}),
		spawnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sockwarden_spawn_duration_seconds",
			Help:    "Time from the plan to the program's exec, sandbox set-up included.",
			Buckets: []float64{250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1},
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockwarden_decision_cache_hits_total",
			Help: "Requests decided from the decision cache.",
		}),
		kills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_kills_total",
			Help: "Programs killed, by reason (timeout, disconnect, output_limit, stdin_limit, output_buffer, shutdown, protocol_error).",
		}, []string{"reason"}),
		quotaRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_quota_refused_total",
			Help: "Connections turned away over a quota, by kind (connections, rate, decision).",
		}, []string{"kind"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_sandbox_denials_total",
			Help: "Sandbox (Landlock) denials of the programs, by access right, where denials are reported.",
		}, []string{"access"}),
	}
	reg.MustRegister(m.requests, m.decisionSeconds, m.spawnSeconds, m.cacheHits, m.kills, m.quotaRefused, m.denials)
	// The outcomes exist from the start, at 0: a rate() needs a first
	// sample.
	for _, o := range []string{OutcomeAllowed, OutcomeDenied, OutcomeRefused, OutcomeError} {
		m.requests.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) request(outcome string) {
	if m != nil && outcome != "" {
		m.requests.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) decided(d time.Duration, cached bool) {
	if m == nil {
		return
	}
	m.decisionSeconds.Observe(d.Seconds())
	if cached {
		m.cacheHits.Inc()
	}
}

func (m *Metrics) spawned(d time.Duration) {
	if m != nil {
		m.spawnSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) killed(reason string) {
	if m != nil {
		m.kills.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) quota(kind string) {
	if m != nil {
		m.quotaRefused.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) sandboxDenials(r *sandbox.DenialReport) {
	if m == nil {
		return
	}
	for _, d := range r.Denials {
		for _, a := range strings.Split(d.Access, ",") {
			m.denials.WithLabelValues(a).Add(float64(d.Count))
		}
	}
}

// lateDenials counts the denials of final that seen (the exit record's
// report, counted then) did not have.
func (m *Metrics) lateDenials(seen, final *sandbox.DenialReport) {
	if m == nil {
		return
	}
	had := map[string]int{}
	for _, d := range seen.Denials {
		for _, a := range strings.Split(d.Access, ",") {
			had[a] += d.Count
		}
	}
	for _, d := range final.Denials {
		for _, a := range strings.Split(d.Access, ",") {
			n := min(had[a], d.Count)
			had[a] -= n
			if d.Count > n {
				m.denials.WithLabelValues(a).Add(float64(d.Count - n))
			}
		}
	}
}

// registerGauges adds the series s computes when scraped: connections
// being served, and the audit trail's counters.
func (s *Server) registerGauges(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sockwarden_connections_active",
		Help: "Connections being served (requests in flight).",
	}, func() float64 { return float64(s.active.Load()) }))
	if a := s.cfg.Audit; a != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sockwarden_audit_records_total",
			Help: "Audit records written.",
		}, func() float64 { return float64(a.Stats().Records) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sockwarden_audit_bytes_total",
			Help: "Bytes of audit records written.",
		}, func() float64 { return float64(a.Stats().Bytes) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sockwarden_audit_write_failures_total",
			Help: "Audit records that could not be written.",
		}, func() float64 { return float64(a.Stats().Failures) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sockwarden_audit_healthy",
			Help: "1 while the audit trail can be written, else 0 (requests are then refused, unless on_failure = \"continue\").",
		}, func() float64 {
			if a.Healthy() != nil {
				return 0
			}
			return 1
		}))
	}
}

// Healthy reports why the server cannot serve requests, nil when it can:
// its audit trail cannot be written (and requests are refused for it).
func (s *Server) Healthy() error {
	return s.auditHealthy()
}
