package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/server"
)

// policyMetrics are the series of the policy in force and its reloads.
type policyMetrics struct {
	info    *prometheus.GaugeVec
	reloads *prometheus.CounterVec
	last    prometheus.Gauge
}

func newPolicyMetrics(reg prometheus.Registerer) *policyMetrics {
	m := &policyMetrics{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sockwarden_policy_info",
			Help: "The policy in force: 1, labelled with its revision and source.",
		}, []string{"revision", "source"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_policy_reloads_total",
			Help: "Policy reloads (SIGHUP) by result: success, or failure (the previous policy kept serving).",
		}, []string{"result"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sockwarden_policy_last_reload_success",
			Help: "1 when the last policy load or reload put a policy in force, 0 when it failed.",
		}),
	}
	reg.MustRegister(m.info, m.reloads, m.last)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// loaded records e as the policy in force; reload says it came by SIGHUP.
func (m *policyMetrics) loaded(e *policy.Engine, reload bool) {
	if m == nil {
		return
	}
	m.info.Reset()
	m.info.WithLabelValues(e.Revision(), e.Source()).Set(1)
	m.last.Set(1)
	if reload {
		m.reloads.WithLabelValues("success").Inc()
	}
}

func (m *policyMetrics) reloadFailed() {
	if m == nil {
		return
	}
	m.last.Set(0)
	m.reloads.WithLabelValues("failure").Inc()
}

// metricsEndpoint serves /metrics, /healthz and /readyz.
type metricsEndpoint struct {
	srv   *http.Server
	ready atomic.Bool
}

// startMetrics serves reg at /metrics on listen (a loopback TCP address or
// a UNIX socket path), with /healthz (srv can serve: its audit trail can
// be written; a policy is in force) and /readyz (serving, not shutting
// down).
func startMetrics(listen string, reg *prometheus.Registry, srv *server.Server, gate *server.PolicyGate, log *slog.Logger) (*metricsEndpoint, error) {
	network := "tcp"
	if strings.HasPrefix(listen, "/") {
		network = "unix"
		os.Remove(listen) // a socket left by a server that is gone
	}
	l, err := net.Listen(network, listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	ep := &metricsEndpoint{}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		var problems []string
		if err := srv.Healthy(); err != nil {
			problems = append(problems, "audit: "+err.Error())
		}
		if gate.Engine() == nil {
			problems = append(problems, "policy: none in force (with a control plane: no bundle activated yet)")
		}
		if len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ep.ready.Load() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		if gate.Engine() == nil {
			// With a control plane: no bundle in force yet.
			http.Error(w, "no policy in force yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ep.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := ep.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics: serving /metrics, /healthz and /readyz", "listen", listen)
	return ep, nil
}

// stop closes the endpoint.
func (ep *metricsEndpoint) stop() {
	if ep == nil {
		return
	}
	ep.ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ep.srv.Shutdown(ctx)
}

// newRegistry is the registry of a server's series: the Go runtime's and
// the process's, then the server's own.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
