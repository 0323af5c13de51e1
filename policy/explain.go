package policy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// RuleResult is one rule that held while the policy decided: the rule
// (its full reference, with the arguments of a function), where it is,
// and the value it produced.
type RuleResult struct {
	// Rule is the rule's reference, e.g. data.sockwarden.web_allowed,
	// data.sockwarden.denials or data.sockwarden.inline_flag("-c").
	Rule string `json:"rule"`
	// Location is the rule's file:line.
	Location string `json:"location"`
	// Value is the value the rule produced: the whole value of a rule
	// with one, the member a "contains" rule added, true for a rule
	// without a value.
	Value any `json:"value"`
}

// Explain evaluates the decision for in, as Evaluate does (without the
// cache), and also returns every rule that held on the way, in the order
// they did, each rule and value once: which rules allowed or denied the
// request, and with what. It is what `sockwarden check --explain` prints.
func (e *Engine) Explain(ctx context.Context, in Input) (Decision, []RuleResult) {
	if e == nil {
		return failed(ErrNoPolicy), nil
	}
	if in.Time.IsZero() {
		in.Time = time.Now()
	}
	tr := &ruleTracer{seen: map[string]bool{}}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	start := time.Now()
	rs, err := e.pq.Eval(ctx, rego.EvalParsedInput(in.Value()), rego.EvalTime(in.Time), rego.EvalQueryTracer(tr))
	d := e.decide(rs, err)
	d.Revision, d.EvalDuration = e.revision, time.Since(start)
	return d, tr.results
}

// decide turns an evaluation's outcome into a Decision.
func (e *Engine) decide(rs rego.ResultSet, err error) Decision {
	switch {
	case err != nil:
		return failed(fmt.Errorf("%w: %s", ErrEvaluation, evalErrorString(err)))
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return failed(fmt.Errorf("%w: %s", ErrUndefined, e.query))
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return failed(fmt.Errorf("%w: unexpected result type %T", ErrEvaluation, rs[0].Expressions[0].Value))
	}
	d, derr := DecodeDecision(t.Value)
	if derr != nil {
		return failed(derr)
	}
	return d
}

// ruleTracer records the rules that exit (hold), with their values.
type ruleTracer struct {
	mu      sync.Mutex
	seen    map[string]bool
	results []RuleResult
}

func (t *ruleTracer) Enabled() bool { return true }

func (t *ruleTracer) Config() topdown.TraceConfig {
	return topdown.TraceConfig{PlugLocalVars: true}
}

func (t *ruleTracer) TraceEvent(evt topdown.Event) {
	if evt.Op != topdown.ExitOp {
		return
	}
	rule, ok := evt.Node.(*ast.Rule)
	if !ok || rule.Location == nil {
		return
	}
	name := rule.Path().String()
	if len(rule.Head.Args) > 0 {
		args := evt.Plug(ast.NewTerm(ast.NewArray(rule.Head.Args...)))
		name += "(" + trimBrackets(args.String()) + ")"
	}
	var value *ast.Term
	switch {
	case rule.Head.Value != nil:
		value = evt.Plug(rule.Head.Value)
	case rule.Head.Key != nil:
		value = evt.Plug(rule.Head.Key)
	default:
		value = ast.BooleanTerm(true)
	}
	var v any = value.String()
	if value.IsGround() {
		if j, err := ast.JSON(value.Value); err == nil {
			v = j
		}
	}
	loc := fmt.Sprintf("%s:%d", rule.Location.File, rule.Location.Row)
	key := name + "\x00" + loc + "\x00" + value.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[key] {
		return
	}
	t.seen[key] = true
	t.results = append(t.results, RuleResult{Rule: name, Location: loc, Value: v})
}

func trimBrackets(s string) string {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}
