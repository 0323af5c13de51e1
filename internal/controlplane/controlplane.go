// Package controlplane connects sockwarden to an OPA control plane (any
// server of OPA's management APIs: a plain HTTP bundle server, OPAL, Styra
// DAS, Permit) with OPA's own code: its agent configuration (services,
// keys, labels, bundles, decision_logs, status), its plugin manager and
// REST clients, its bundle downloader and its decision-log and status
// plugins.
//
// Bundles are not activated by OPA's bundle plugin, which puts whatever
// it downloads in force: an [Agent] downloads them with OPA's download
// package and hands them to its Load function (the same checks as a local
// policy: signature, compilation, smoke evaluation, the policy's own
// tests). Only an engine that loads is reported for activation; a bundle
// that does not leaves the policy in force serving, and the refusal is
// reported to the caller, in the status sent to the control plane and in
// the metrics.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/plugins/status"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockwarden/sockwarden/policy"
)

// Options configure an [Agent].
type Options struct {
	// Config is OPA's agent configuration, YAML or JSON (the file opa run
	// takes with -c). Its services, keys, labels, bundles, decision_logs
	// and status sections are used; discovery, plugins and
	// persistence_directory are refused (sockwarden does not implement
	// them), and the sections only an OPA server uses (server, caching,
	// storage, distributed_tracing, default_decision) are ignored.
	Config []byte
	// ID names this instance to the control plane (status and decision
	// logs carry it as labels.id); "" means a random UUID, as OPA does.
	ID string
	// Load makes the policy of a complete set of bundles (one per name
	// configured under bundles), with the checks of a local policy. It
	// must not put the engine in force: OnBundles does that.
	Load func(ctx context.Context, bundles map[string]*bundle.Bundle) (*policy.Engine, error)
	// Query is the decision's query, as decision logs name it (their
	// path); "" means policy.DefaultQuery.
	Query string
	// OnBundles is told what became of each bundle that came (see
	// [Event]). It is called on the downloader's goroutine, one call at a
	// time.
	OnBundles func(Event)
	// Logger receives the agent's and OPA's logs; nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer, when set, gets the bundle series (see Metrics in the
	// package's README section) and, with status.prometheus = true,
	// OPA's own status series.
	Registerer prometheus.Registerer
}

// Event is what became of a bundle that was served.
type Event struct {
	// Bundle is its name in the configuration; Revision its manifest's
	// revision (empty when it could not be read).
	Bundle   string
	Revision string
	// Engine is the policy of the bundles now in force, to put in force;
	// nil when the bundle was refused or (with several bundles) others
	// have not come yet.
	Engine *policy.Engine
	// Err says why the bundle was refused: it could not be read, its
	// signature did not verify, or its policy does not load. The policy
	// in force keeps serving.
	Err error
	// Repeated is true when Err is the same refusal as the bundle's
	// previous one (the control plane still serves what was refused).
	Repeated bool
}

// Agent is the running connection to the control plane: bundle
// downloaders, the decision logger and the status reporter, on one OPA
// plugin manager.
type Agent struct {
	m       *plugins.Manager
	log     *slog.Logger
	path    string        // the decision's path in decision logs
	bundles *bundleLoader // nil: no bundles configured
	logs    *logs.Plugin  // nil: no decision logs
	status  *status.Plugin

	// entries queue decision log entries for the goroutine that hands
	// them to the plugin (about 30 µs of CPU each), off the request's
	// path; done is closed when it has handed the last one.
	entries chan *server.Info
	done    chan struct{}
	handing bool // the goroutine runs (Start to Stop)
	dropped prometheus.Counter
	warned  atomic.Bool // the drop was logged
}

// DecisionQueue is how many decision log entries wait, at most, to be
// handed to OPA's decision logger; past it entries are dropped, counted
// (sockwarden_decision_logs_dropped_total) and logged. The audit trail
// keeps every decision regardless.
const DecisionQueue = 4096

// New parses opts.Config and sets up the agent; Start starts it. Errors
// name the section at fault.
func New(opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	id := opts.ID
	if id == "" {
		id = uuid.NewString()
	}
	ol := &opaLogger{log: log.With("component", "opa")}
	mopts := []func(*plugins.Manager){plugins.Logger(ol), plugins.ConsoleLogger(ol), plugins.WithEnableVersionCheck(false)}
	if opts.Registerer != nil {
		mopts = append(mopts, plugins.WithPrometheusRegister(opts.Registerer))
	}
	// OPA's store, empty: the manager needs one; the policy lives in
	// sockwarden's engine.
	m, err := plugins.New(opts.Config, id, inmem.New(), mopts...)
	if err != nil {
		return nil, fmt.Errorf("opa config: %w", err)
	}
	c := m.Config
	for _, w := range c.Warnings {
		log.Warn("opa config: " + w)
	}
	switch {
	case c.Discovery != nil:
		return nil, errors.New("opa config: discovery is not supported; configure bundles, decision_logs and status directly")
	case len(c.Plugins) > 0:
		return nil, errors.New("opa config: plugins is not supported (sockwarden runs OPA's bundle, decision-log and status plugins only)")
	case c.PersistenceDirectory != nil:
		return nil, errors.New("opa config: persistence_directory is not supported: bundles are not persisted; the policy comes from the control plane after each start")
	case c.Bundle != nil:
		return nil, errors.New("opa config: bundle (the single-bundle form OPA deprecated) is not supported; use bundles: {NAME: {service: ..., resource: ...}}")
	}
	q := opts.Query
	if q == "" {
		q = policy.DefaultQuery
	}
	a := &Agent{m: m, log: log, path: strings.ReplaceAll(strings.TrimPrefix(q, "data."), ".", "/")}
	if c.Bundles != nil {
		if a.bundles, err = newBundleLoader(a, opts); err != nil {
			return nil, err
		}
		m.Register(bundleplugin.Name, a.bundles)
	}
	if c.DecisionLogs != nil {
		lc, err := logs.NewConfigBuilder().WithBytes(c.DecisionLogs).WithServices(m.Services()).WithPlugins(m.Plugins()).WithLogger(ol).Parse()
		if err != nil {
			return nil, fmt.Errorf("opa config: decision_logs: %w", err)
		}
		if lc.Plugin != nil {
			return nil, errors.New("opa config: decision_logs.plugin is not supported; decision logs go to a service")
		}
		a.logs = logs.New(lc, m).WithMetrics(metrics.New())
		m.Register(logs.Name, a.logs)
		a.entries, a.done = make(chan *server.Info, DecisionQueue), make(chan struct{})
		a.dropped = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sockwarden_decision_logs_dropped_total",
			Help: "Decision log entries dropped because the queue to OPA's decision logger was full (the audit trail has them).",
		})
		if opts.Registerer != nil {
			opts.Registerer.MustRegister(a.dropped)
		}
	}
	if c.Status != nil {
		sc, err := status.NewConfigBuilder().WithBytes(c.Status).WithServices(m.Services()).WithPlugins(m.Plugins()).Parse()
		if err != nil {
			return nil, fmt.Errorf("opa config: status: %w", err)
		}
		if sc.Plugin != nil {
			return nil, errors.New("opa config: status.plugin is not supported; status goes to a service")
		}
		a.status = status.New(sc, m).WithMetrics(metrics.New())
		m.Register(status.Name, a.status)
	}
	return a, nil
}

// ID is the instance's id, as the control plane sees it.
func (a *Agent) ID() string { return a.m.ID }

// Services are the names of the configured services.
func (a *Agent) Services() []string { return a.m.Services() }

// Bundles are the names of the configured bundles, sorted; none when the
// policy does not come from the control plane.
func (a *Agent) Bundles() []string {
	if a.bundles == nil {
		return nil
	}
	return a.bundles.names
}

// DecisionLogs reports whether decisions are logged to the control plane.
func (a *Agent) DecisionLogs() bool { return a.logs != nil }

// Status reports whether status is sent to the control plane.
func (a *Agent) Status() bool { return a.status != nil }

// Start starts the plugins: the downloaders make their first request at
// once.
func (a *Agent) Start(ctx context.Context) error {
	if err := a.m.Init(ctx); err != nil {
		return fmt.Errorf("opa plugin manager: %w", err)
	}
	if err := a.m.Start(ctx); err != nil {
		return fmt.Errorf("opa plugins: %w", err)
	}
	if a.entries != nil {
		a.handing = true
		go a.handEntries()
	}
	return nil
}

// handEntries hands the queued decision log entries to the plugin.
func (a *Agent) handEntries() {
	defer close(a.done)
	for info := range a.entries {
		if err := a.logs.Log(context.Background(), info); err != nil {
			a.log.Warn("decision log: entry not logged", "request_id", info.DecisionID, "err", err)
		}
	}
}

// Stop stops the plugins; with a deadline on ctx, the decision logs still
// queued and buffered are sent first. LogDecision must not be called
// during or after Stop.
func (a *Agent) Stop(ctx context.Context) {
	if a.handing {
		a.handing = false
		close(a.entries)
		select {
		case <-a.done:
		case <-ctx.Done():
		}
	}
	a.m.Stop(ctx)
}

// LogDecision queues one decision for OPA's decision logger (a no-op
// without decision_logs), as an OPA server logs its decisions: the
// decision_id is the request id, the input is in as given (the caller
// masks it), the result is result, and the bundles are the revisions of
// the policy that decided. It never blocks: the plugin buffers, batches
// (gzip) and retries on its own goroutines, and an entry that finds the
// queue full (see [DecisionQueue]) is dropped and counted.
func (a *Agent) LogDecision(ctx context.Context, in *policy.Input, result any, revision string, evalErr error) {
	if a == nil || a.logs == nil {
		return
	}
	var input any = in
	info := &server.Info{
		DecisionID: in.RequestID,
		Path:       a.path,
		Timestamp:  in.Time,
		Input:      &input,
		Results:    &result,
		Error:      evalErr,
	}
	if a.bundles != nil {
		info.Bundles = a.bundles.revisions(revision)
	} else if revision != "" {
		info.Revision = revision
	}
	select {
	case a.entries <- info:
	default:
		if a.dropped.Inc(); a.warned.CompareAndSwap(false, true) {
			a.log.Warn("decision log: queue full, entries dropped (counted in sockwarden_decision_logs_dropped_total; the audit trail has them)", "queue", DecisionQueue)
		}
	}
}

// BundleStatus is the status of each configured bundle, as sent to the
// control plane (OPA's bundle.Status), by name.
func (a *Agent) BundleStatus() map[string]*bundleplugin.Status {
	if a.bundles == nil {
		return nil
	}
	return a.bundles.statusCopy()
}

// Pending names the bundles that have not yet been activated; the
// policy is in force once none is.
func (a *Agent) Pending() []string {
	if a.bundles == nil {
		return nil
	}
	var out []string
	for name, st := range a.bundles.statusCopy() {
		if st.LastSuccessfulActivation.IsZero() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
