package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/internal/config"
	"github.com/sockwarden/sockwarden/internal/controlplane"
	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/server"
)

// agent is the server's connection to an OPA control plane ([policy]
// opa_config); a nil *agent is none, and its methods do nothing.
type agent struct {
	*controlplane.Agent
	log *slog.Logger
}

// newAgent sets up the control plane connection that [policy] opa_config
// describes, or returns nil without one. With bundles, their policy is
// put in force in gate when it loads (with the checks of a local
// policy), and every bundle that comes is logged, audited as a
// policy.reload (the first as the policy in force at start-up), and
// counted.
func newAgent(cfg *config.Config, gate *server.PolicyGate, trail *audit.Logger, pm *policyMetrics, reg prometheus.Registerer, log *slog.Logger) (*agent, error) {
	path := cfg.Policy.OPAConfig
	if path == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy.opa_config: %w", err)
	}
	opts := policyOptions(cfg)
	first := true
	a, err := controlplane.New(controlplane.Options{
		Config: raw,
		Query:  cfg.Policy.Query,
		Load: func(ctx context.Context, bundles map[string]*bundle.Bundle) (*policy.Engine, error) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return policy.LoadBundles(ctx, opts, bundles)
		},
		OnBundles: func(ev controlplane.Event) {
			rec := audit.PolicyReload{}
			switch {
			case ev.Err != nil:
				cur := gate.Engine()
				if ev.Repeated {
					log.Warn("policy bundle still refused; the policy in force keeps serving", "bundle", ev.Bundle, "err", ev.Err, "revision", cur.Revision())
					return
				}
				log.Error("policy bundle refused; the policy in force keeps serving", "bundle", ev.Bundle, "bundle_revision", ev.Revision, "err", ev.Err, "revision", cur.Revision())
				pm.reloadFailed()
				rec.Revision, rec.Source, rec.Error = cur.Revision(), cur.Source(), ev.Err.Error()
				if cur == nil {
					rec.Source = "bundle " + ev.Bundle
				}
			case ev.Engine == nil:
				return // waiting for the other bundles
			default:
				e := ev.Engine
				gate.Swap(e)
				pm.loaded(e, !first)
				log.Info("policy bundle activated", "bundle", ev.Bundle, "source", e.Source(), "revision", e.Revision())
				logPolicyTests(log, e, cfg.Policy.Tests)
				if first {
					logCacheable(log, e)
				}
				first = false
				rec.Revision, rec.Source = e.Revision(), e.Source()
			}
			if trail != nil {
				if err := trail.PolicyReload(rec); err != nil {
					log.Error("audit", "err", err)
				}
			}
		},
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("policy.opa_config %s: %w", path, err)
	}
	if len(a.Bundles()) > 0 && len(cfg.Policy.Paths) > 0 {
		return nil, fmt.Errorf("policy.opa_config %s: its bundles and policy.paths (-p) both give the policy; use one", path)
	}
	if len(a.Bundles()) > 0 && cfg.Policy.VerificationKey != "" {
		return nil, fmt.Errorf("policy.opa_config %s: bundles from the control plane are verified with its keys and each bundle's signing block, not policy.verification_key", path)
	}
	log.Info("control plane: OPA agent configuration", "file", path, "id", a.ID(), "services", a.Services(),
		"bundles", a.Bundles(), "decision_logs", a.DecisionLogs(), "status", a.Status())
	return &agent{Agent: a, log: log}, nil
}

// Bundles names the configured bundles; none without a control plane.
func (a *agent) Bundles() []string {
	if a == nil {
		return nil
	}
	return a.Agent.Bundles()
}

// decisionLog is the server's decision logger, nil without decision logs.
func (a *agent) decisionLog() server.DecisionLogger {
	if a == nil || !a.DecisionLogs() {
		return nil
	}
	return a.Agent
}

// start starts the downloaders, the decision logger and the status
// reporter. Until the bundles' policy is in force, every request is
// denied (no policy loaded) and /healthz says so.
func (a *agent) start() error {
	if a == nil {
		return nil
	}
	if err := a.Start(context.Background()); err != nil {
		return err
	}
	if b := a.Bundles(); len(b) > 0 {
		a.log.Info("control plane: waiting for the policy bundles; until they are in force every request is denied", "bundles", b)
	}
	return nil
}

// stop stops the plugins, sending the decision logs still buffered (for
// at most 5 s).
func (a *agent) stop() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Stop(ctx)
}
