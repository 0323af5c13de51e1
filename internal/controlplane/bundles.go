package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/prometheus/client_golang/prometheus"
)

// bundleLoader downloads the configured bundles with OPA's downloader and
// puts their policy in force only when it loads. It is registered with
// the manager as OPA's "bundle" plugin, so that the manager starts and
// stops it and the status report shows its state under that name.
type bundleLoader struct {
	a           *Agent
	opts        Options
	names       []string // sorted
	sources     map[string]*bundleplugin.Source
	downloaders map[string]*download.Downloader
	metrics     *bundleMetrics

	mu       sync.Mutex
	inForce  map[string]*bundle.Bundle // the bundles whose policy serves (or, until all came, that came)
	etags    map[string]string         // of the bundles in inForce
	status   map[string]*bundleplugin.Status
	refusals map[string]string // the last refusal's message, by bundle
	ready    bool              // every bundle has been activated once
}

func newBundleLoader(a *Agent, opts Options) (*bundleLoader, error) {
	if opts.Load == nil || opts.OnBundles == nil {
		return nil, errors.New("controlplane: Options.Load and Options.OnBundles are required with bundles")
	}
	m := a.m
	c, err := bundleplugin.NewConfigBuilder().
		WithBytes(m.Config.Bundles).
		WithServices(m.Services()).
		WithKeyConfigs(m.PublicKeys()).
		WithTriggerMode(new(plugins.DefaultTriggerMode)).
		Parse()
	if err != nil {
		return nil, fmt.Errorf("opa config: bundles: %w", err)
	}
	if len(c.Bundles) == 0 {
		return nil, errors.New("opa config: bundles: none configured")
	}
	l := &bundleLoader{
		a:           a,
		opts:        opts,
		sources:     c.Bundles,
		downloaders: map[string]*download.Downloader{},
		inForce:     map[string]*bundle.Bundle{},
		etags:       map[string]string{},
		status:      map[string]*bundleplugin.Status{},
		refusals:    map[string]string{},
	}
	l.names = slices.Sorted(maps.Keys(c.Bundles))
	keys := m.PublicKeys()
	for _, name := range l.names {
		src := c.Bundles[name]
		if u, err := url.Parse(src.Resource); err == nil && u.Scheme == "file" {
			return nil, fmt.Errorf("opa config: bundles.%s: file:// resources are not supported; name local bundles in [policy] paths", name)
		}
		if src.Persist {
			return nil, fmt.Errorf("opa config: bundles.%s: persist is not supported: bundles are not persisted", name)
		}
		switch {
		case src.Signing != nil && !src.Signing.SignatureRequired():
			// OPA accepts unsigned bundles when keys exist but the bundle
			// has no signing block. Here a key means verification: a
			// bundle that is not signed is refused.
			src.Signing = bundle.NewVerificationConfig(keys, "", "", nil)
			a.log.Info("bundle signatures required: keys are configured", "bundle", name)
		case src.Signing == nil:
			a.log.Warn("bundle signatures not verified: no keys are configured (keys, and a signing block per bundle, turn verification on)", "bundle", name)
		}
		l.status[name] = &bundleplugin.Status{Name: name, Metrics: metrics.New()}
		name := name
		l.downloaders[name] = download.New(src.Config, m.Client(src.Service), src.Resource).
			WithCallback(func(ctx context.Context, u download.Update) error { return l.update(ctx, name, u) }).
			WithBundleVerificationConfig(src.Signing).
			WithSizeLimitBytes(src.SizeLimitBytes).
			WithBundleName(name).
			WithBundleParserOpts(m.ParserOptions()).
			WithLogAttrs(map[string]any{"bundle": name})
	}
	if opts.Registerer != nil {
		l.metrics = newBundleMetrics(opts.Registerer, l.names)
	}
	m.UpdatePluginStatus(bundleplugin.Name, &plugins.Status{State: plugins.StateNotReady, Message: "no bundle activated yet"})
	return l, nil
}

// Start implements plugins.Plugin: each downloader polls from now on.
func (l *bundleLoader) Start(ctx context.Context) error {
	for _, name := range l.names {
		l.downloaders[name].Start(ctx)
	}
	return nil
}

// Stop implements plugins.Plugin.
func (l *bundleLoader) Stop(ctx context.Context) {
	for _, name := range l.names {
		l.downloaders[name].Stop(ctx)
	}
	l.a.m.UpdatePluginStatus(bundleplugin.Name, &plugins.Status{State: plugins.StateNotReady})
}

// Reconfigure implements plugins.Plugin; a changed configuration needs a
// restart.
func (l *bundleLoader) Reconfigure(context.Context, any) {}

// Results of a bundle request, as the metrics count them.
const (
	resultActivated   = "activated"    // a new bundle came and its policy is in force
	resultNotModified = "not_modified" // the bundle in force is still current
	resultRefused     = "refused"      // a bundle came and was refused
	resultFailed      = "failed"       // no bundle came: network or HTTP error
)

// update is the downloader's callback for bundle name.
func (l *bundleLoader) update(ctx context.Context, name string, u download.Update) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.status[name]
	if u.Metrics != nil {
		st.Metrics = u.Metrics
	} else {
		st.Metrics = metrics.New()
	}
	st.SetRequest()
	result, err := l.process(ctx, name, st, u)
	if err != nil {
		st.SetError(err)
		// Ask again for what is in force: a control plane that still
		// serves what was refused answers with it again, and the refusal
		// stands.
		l.downloaders[name].SetCache(l.etags[name])
	} else {
		st.SetError(nil)
	}
	l.metrics.observe(name, result, st)
	l.publish()
	return err
}

func (l *bundleLoader) process(ctx context.Context, name string, st *bundleplugin.Status, u download.Update) (string, error) {
	log := l.a.log.With("bundle", name)
	if u.Error != nil {
		var herr download.HTTPError
		if errors.As(u.Error, &herr) || strings.HasPrefix(u.Error.Error(), "request failed: ") {
			log.Warn("bundle download failed; the policy in force keeps serving", "err", u.Error)
			return resultFailed, u.Error
		}
		// It came, but could not be read: corrupt, or its signature does
		// not verify, or it is not signed.
		err := fmt.Errorf("bundle %s: %w", name, u.Error)
		l.refuse(name, "", err)
		return resultRefused, err
	}
	st.LastSuccessfulRequest = st.LastRequest
	if u.Bundle == nil {
		log.Debug("bundle not modified")
		return resultNotModified, nil
	}
	st.Type = u.Bundle.Type()
	st.LastSuccessfulDownload = st.LastSuccessfulRequest
	rev := u.Bundle.Manifest.Revision
	if u.Bundle.Type() == bundle.DeltaBundleType {
		err := fmt.Errorf("bundle %s: delta bundles are not supported; serve snapshot bundles", name)
		l.refuse(name, rev, err)
		return resultRefused, err
	}
	next := maps.Clone(l.inForce)
	next[name] = u.Bundle
	if len(next) < len(l.names) {
		// Several bundles make one policy: wait for the others.
		l.inForce, l.etags[name] = next, u.ETag
		var missing []string
		for _, n := range l.names {
			if next[n] == nil {
				missing = append(missing, n)
			}
		}
		log.Info("bundle downloaded; waiting for the other bundles before putting the policy in force", "revision", rev, "waiting_for", missing)
		l.opts.OnBundles(Event{Bundle: name, Revision: rev})
		return resultActivated, nil
	}
	e, err := l.opts.Load(ctx, next)
	if err != nil {
		l.refuse(name, rev, err)
		return resultRefused, err
	}
	l.inForce, l.etags[name] = next, u.ETag
	delete(l.refusals, name)
	for _, n := range l.names {
		if s := l.status[n]; n == name || s.LastSuccessfulActivation.IsZero() {
			s.SetActivateSuccess(next[n].Manifest.Revision)
		}
	}
	st.SetBundleSize(u.Size)
	l.opts.OnBundles(Event{Bundle: name, Revision: rev, Engine: e})
	if !l.ready {
		l.ready = true
		l.a.m.UpdatePluginStatus(bundleplugin.Name, &plugins.Status{State: plugins.StateOK})
	}
	return resultActivated, nil
}

// refuse reports a refused bundle; the same refusal again is marked
// Repeated.
func (l *bundleLoader) refuse(name, rev string, err error) {
	msg := err.Error()
	repeated := l.refusals[name] == msg
	l.refusals[name] = msg
	l.opts.OnBundles(Event{Bundle: name, Revision: rev, Err: err, Repeated: repeated})
}

// publish sends the bundles' status to the status plugin.
func (l *bundleLoader) publish() {
	if l.a.status != nil {
		l.a.status.BulkUpdateBundleStatus(l.statusCopyLocked())
	}
}

func (l *bundleLoader) statusCopy() map[string]*bundleplugin.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.statusCopyLocked()
}

func (l *bundleLoader) statusCopyLocked() map[string]*bundleplugin.Status {
	out := make(map[string]*bundleplugin.Status, len(l.status))
	for k, v := range l.status {
		c := *v
		out[k] = &c
	}
	return out
}

// revisions are the bundles' revisions for a decision log entry made
// under the policy of revision rev (the engine's: the bundles'
// revisions joined with "+", in name order).
func (l *bundleLoader) revisions(rev string) map[string]server.BundleInfo {
	revs := strings.Split(rev, "+")
	out := make(map[string]server.BundleInfo, len(l.names))
	for i, name := range l.names {
		if len(revs) == len(l.names) {
			out[name] = server.BundleInfo{Revision: revs[i]}
		} else {
			out[name] = server.BundleInfo{}
		}
	}
	return out
}

// bundleMetrics are the bundle series: what each request for a bundle
// brought, and when a bundle last downloaded and activated.
type bundleMetrics struct {
	requests   *prometheus.CounterVec
	ok         *prometheus.GaugeVec
	download   *prometheus.GaugeVec
	activation *prometheus.GaugeVec
}

func newBundleMetrics(reg prometheus.Registerer, names []string) *bundleMetrics {
	m := &bundleMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sockwarden_policy_bundle_requests_total",
			Help: "Requests for each policy bundle by result: activated (a new bundle is in force), not_modified, refused (it came and did not load: unsigned, tampered, or its policy fails the load checks) or failed (network or HTTP error).",
		}, []string{"name", "result"}),
		ok: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sockwarden_policy_bundle_ok",
			Help: "1 when the last request for the bundle succeeded (activated or not modified), 0 when it failed or was refused.",
		}, []string{"name"}),
		download: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sockwarden_policy_bundle_last_successful_download_timestamp_seconds",
			Help: "When the bundle was last downloaded, in Unix seconds; 0 = never.",
		}, []string{"name"}),
		activation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sockwarden_policy_bundle_last_successful_activation_timestamp_seconds",
			Help: "When the bundle's policy was last put in force, in Unix seconds; 0 = never.",
		}, []string{"name"}),
	}
	reg.MustRegister(m.requests, m.ok, m.download, m.activation)
	for _, n := range names {
		for _, r := range []string{resultActivated, resultNotModified, resultRefused, resultFailed} {
			m.requests.WithLabelValues(n, r)
		}
		m.ok.WithLabelValues(n)
		m.download.WithLabelValues(n)
		m.activation.WithLabelValues(n)
	}
	return m
}

func (m *bundleMetrics) observe(name, result string, st *bundleplugin.Status) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(name, result).Inc()
	ok := 0.0
	if result == resultActivated || result == resultNotModified {
		ok = 1
	}
	m.ok.WithLabelValues(name).Set(ok)
	m.download.WithLabelValues(name).Set(unix(st.LastSuccessfulDownload))
	m.activation.WithLabelValues(name).Set(unix(st.LastSuccessfulActivation))
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// opaLogger hands OPA's logs to slog.
type opaLogger struct {
	log *slog.Logger
}

func (l *opaLogger) Debug(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }

// Info is Debug here: OPA logs its routine work (every status update
// sent, every batch uploaded) at info.
func (l *opaLogger) Info(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l *opaLogger) Warn(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l *opaLogger) Error(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }

func (l *opaLogger) WithFields(fields map[string]any) logging.Logger {
	args := make([]any, 0, 2*len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		args = append(args, k, fields[k])
	}
	return &opaLogger{log: l.log.With(args...)}
}

// GetLevel says Debug: slog's handler decides what is shown.
func (l *opaLogger) GetLevel() logging.Level { return logging.Debug }

// SetLevel is ignored: the level is sockwarden's.
func (l *opaLogger) SetLevel(logging.Level) {}
