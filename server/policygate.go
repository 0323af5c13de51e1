package server

import (
	"context"
	"sync/atomic"

	"github.com/sockwarden/sockwarden/policy"
)

// PolicyGate is the [Authorizer] that asks an OPA/Rego policy. The policy
// can be replaced at any time ([PolicyGate.Swap]); a request is judged
// under the policy that was current when it was judged.
type PolicyGate struct {
	engine atomic.Pointer[policy.Engine]
}

// NewPolicyGate returns a gate judging with e.
func NewPolicyGate(e *policy.Engine) *PolicyGate {
	g := &PolicyGate{}
	g.engine.Store(e)
	return g
}

// Engine returns the policy in force.
func (g *PolicyGate) Engine() *policy.Engine { return g.engine.Load() }

// Swap puts e in force for the requests judged from now on.
func (g *PolicyGate) Swap(e *policy.Engine) { g.engine.Store(e) }

// Authorize implements [Authorizer].
func (g *PolicyGate) Authorize(ctx context.Context, req *Request) (*policy.Decision, error) {
	d := g.engine.Load().Evaluate(ctx, Input(req))
	return &d, nil
}

// AuthorizeCached is Authorize for a request whose decision the policy
// engine has memoized (see policy.Engine.Lookup); ok is false otherwise.
// It needs no evaluation, so the server calls it on the connection's
// goroutine and hands only the rest to its judges.
func (g *PolicyGate) AuthorizeCached(ctx context.Context, req *Request) (*policy.Decision, bool) {
	d, ok := g.engine.Load().Lookup(ctx, Input(req))
	if !ok {
		return nil, false
	}
	return &d, true
}

// Input is the policy's view of req.
func Input(req *Request) policy.Input {
	return policy.Input{
		Argv:      req.Argv,
		Exe:       req.Exe,
		Peer:      req.Peer,
		Socket:    req.Socket,
		RequestID: req.ID,
		Time:      req.Time,
	}
}

// DecisionLogger receives decisions for a decision log (see
// Config.DecisionLog). LogDecision is called on the request's path, once
// per judged request, so it must not block: in is the policy's input with
// the argv masked as the audit record shows it, result is the decision
// as the record has it (allow, message, reasons), revision is the
// revision of the policy that decided and err the policy's error, if
// any.
type DecisionLogger interface {
	LogDecision(ctx context.Context, in *policy.Input, result any, revision string, err error)
}

// DecisionResult is the result a [DecisionLogger] gets: what the audit
// record says of the decision.
type DecisionResult struct {
	Allow   bool     `json:"allow"`
	Message string   `json:"message,omitempty"`
	Reasons []string `json:"reasons,omitempty"`
	Cached  bool     `json:"cached,omitempty"`
}
