package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// ErrNoTests is returned by [RunTests] with FailOnEmpty when no test
// ran.
var ErrNoTests = errors.New("no tests found")

// TestTimeout is the default deadline of one Rego test in [RunTests], as
// opa test's.
const TestTimeout = 5 * time.Second

// TestOptions are the options of [RunTests], the flags of `opa test` of
// the same names.
type TestOptions struct {
	// Verbose prints every test and the trace of failures (-v).
	Verbose bool
	// Run runs only the tests whose names match this regular expression
	// (--run).
	Run string
	// Coverage reports coverage as JSON instead of the test report
	// (--coverage); Threshold, a percentage, fails the run below it
	// (--threshold, which implies Coverage).
	Coverage  bool
	Threshold float64
	// Format is "pretty" (the default) or "json" (--format).
	Format string
	// Timeout is the deadline of each test; 0 means [TestTimeout].
	Timeout time.Duration
	// Parallel is how many tests run at once; 0 means the number of CPUs.
	Parallel int
	// RegoVersion forces the Rego version of every file (OPA's
	// --v0-compatible is RegoV0); the zero value detects it per file
	// (see [Options].RegoVersion).
	RegoVersion ast.RegoVersion
	// Query is the decision the decision checks apply to; "" means
	// [DefaultQuery].
	Query string
	// FailOnEmpty makes a run without tests an error ([ErrNoTests]);
	// without it, as with opa test, such a run passes (--fail-on-empty).
	FailOnEmpty bool

	// once reports the results of the decision checks' run instead of
	// running the tests a second time (the server's load-time tests:
	// half the time, and no coverage or traces to show).
	once bool
}

// TestFailure is the outcome of a run whose tests failed or errored, or
// whose coverage is under the threshold: [RunTests] returns it as its
// error, and `policy test` exits 2 for it, as opa test does.
type TestFailure struct {
	// Coverage is set when the coverage was under the threshold.
	Coverage *cover.CoverageThresholdError
}

func (e *TestFailure) Error() string {
	if e.Coverage != nil {
		return e.Coverage.Error()
	}
	return "tests failed"
}

// RunTests runs the Rego unit tests (rules named test_*) found in paths
// with OPA's tester, and writes the report to w as opa test does: with
// its pretty or JSON reporter, or its JSON coverage report.
//
// Every decision a test makes the policy produce (each value of a rule
// of the decision, opts.Query) is also checked against the decision
// schema ([DecodeDecision], and [CheckDecision] for values no server
// accepts): a test that produces an invalid one fails, and its output
// names the problem and the rule's file:line. A policy's own tests that
// compare values thus also catch a typo'd key such as "timout".
//
// The error is a *[TestFailure] when tests failed or errored (or the
// coverage is under opts.Threshold); any other error means the tests
// could not be run (unreadable paths, parse or compile errors, each
// naming file:line:column; [ErrNoTests]), or, as opa test has it, that
// tests failed under opts.Coverage.
func RunTests(ctx context.Context, w io.Writer, paths []string, opts TestOptions) error {
	if len(paths) == 0 {
		return errors.New("no paths given")
	}
	if opts.Threshold < 0 || opts.Threshold > 100 {
		return errors.New("the coverage threshold must be between 0 and 100")
	}
	if opts.Threshold > 0 {
		opts.Coverage = true
	}
	switch opts.Format {
	case "", "pretty", "json":
	default:
		return fmt.Errorf("unknown format %q (want pretty or json)", opts.Format)
	}
	query := opts.Query
	if query == "" {
		query = DefaultQuery
	}
	decisionRef, err := ast.ParseRef(query)
	if err != nil {
		return fmt.Errorf("query %q: %w", query, err)
	}

	l, err := readTestPaths(paths, opts.RegoVersion)
	if err != nil {
		return err
	}
	return runTests(ctx, w, l, opts, decisionRef, strings.Join(paths, ", "))
}

// runTests is RunTests on loaded modules and data; where names them in
// errors.
func runTests(ctx context.Context, w io.Writer, l *testLoad, opts TestOptions, decisionRef ast.Ref, where string) error {
	// First the decision checks, one test at a time, with a tracer that
	// sees each value of the decision's rules. Then the run the report
	// shows, as opa test makes it.
	violations, checked, err := checkTestDecisions(ctx, l, opts, decisionRef)
	if err != nil {
		return err
	}

	var (
		cov *cover.Cover
		ch  chan *tester.Result
	)
	if opts.once {
		ch = make(chan *tester.Result, len(checked))
		for _, r := range checked {
			ch <- r
		}
		close(ch)
	} else {
		store, txn, err := l.store(ctx)
		if err != nil {
			return err
		}
		defer store.Abort(ctx, txn)
		runner := newTestRunner(ctx, l, store, txn, opts)
		if opts.Coverage {
			cov = cover.New()
			runner.SetCoverageQueryTracer(cov)
		}
		runner.EnableTracing(opts.Verbose)
		if ch, err = runner.RunTests(ctx, txn); err != nil {
			return loadError(err)
		}
	}

	var reporter tester.Reporter
	switch {
	case opts.Coverage:
		reporter = tester.JSONCoverageReporter{Cover: cov, Modules: l.modules, Output: w, Threshold: opts.Threshold, Verbose: opts.Verbose}
	case opts.Format == "json":
		reporter = tester.JSONReporter{Output: w}
	default:
		reporter = tester.PrettyReporter{Verbose: opts.Verbose, Output: w}
	}
	ran, failed := 0, false
	results := make(chan *tester.Result)
	go func() {
		defer close(results)
		for r := range ch {
			ran++
			if v := violations[resultKey(r)]; len(v) > 0 && r.Error == nil {
				r.Fail = true
				r.Output = append(r.Output, []byte(strings.Join(v, "\n")+"\n")...)
			}
			if !r.Pass() {
				failed = true
			}
			// As opa test -v shows a trace: notes and failures.
			r.Trace = lineage.Filter(r.Trace, func(e *topdown.Event) bool {
				return e.Op == topdown.NoteOp || e.Op == topdown.FailOp
			})
			results <- r
		}
	}()
	if err := reporter.Report(results); err != nil {
		for range results { // let the producer finish
		}
		// As opa test: under the coverage threshold is a test failure
		// (exit 2); the coverage reporter reports failed tests as an
		// error (exit 1).
		var te *cover.CoverageThresholdError
		if errors.As(err, &te) {
			return &TestFailure{Coverage: te}
		}
		return err
	}
	if ran == 0 && opts.FailOnEmpty {
		return fmt.Errorf("%w in %s", ErrNoTests, where)
	}
	if failed {
		return &TestFailure{}
	}
	return nil
}

// newTestRunner is OPA's tester as opa test sets it up.
func newTestRunner(ctx context.Context, l *testLoad, store storage.Store, txn storage.Transaction, opts TestOptions) *tester.Runner {
	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithUseTypeCheckAnnotations(true)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = TestTimeout
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = runtime.NumCPU()
	}
	return tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(l.modules).
		CapturePrintOutput(true).
		StackTraces(true).
		SetTimeout(timeout).
		Filter(opts.Run).
		SetParallel(parallel)
}

// resultKey identifies a test: its file and line.
func resultKey(r *tester.Result) string {
	if r.Location == nil {
		return r.Package + "." + r.Name
	}
	return fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
}

// checkTestDecisions runs the tests one at a time, checking each value a
// rule of the decision takes, and returns the problems found by test, and
// the tests' results.
func checkTestDecisions(ctx context.Context, l *testLoad, opts TestOptions, decision ast.Ref) (map[string][]string, []*tester.Result, error) {
	store, txn, err := l.store(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer store.Abort(ctx, txn)
	tr := &decisionTracer{decision: decision, found: map[string][]string{}}
	opts.Parallel = 1
	runner := newTestRunner(ctx, l, store, txn, opts).SetCoverageQueryTracer(tr)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, nil, loadError(err)
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	return tr.found, results, nil
}

// decisionTracer sees a test's evaluation: which test runs (its rule is
// entered first), and the value each rule of the decision exits with.
type decisionTracer struct {
	decision ast.Ref

	mu    sync.Mutex
	test  string              // the test running, as resultKey names it
	found map[string][]string // problems by test
	seen  map[string]bool     // problems of the running test, once each
}

func (t *decisionTracer) Enabled() bool { return true }

func (t *decisionTracer) Config() topdown.TraceConfig {
	return topdown.TraceConfig{PlugLocalVars: true}
}

func (t *decisionTracer) TraceEvent(evt topdown.Event) {
	rule, ok := evt.Node.(*ast.Rule)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if evt.Op == topdown.EnterOp && rule.Module != nil && isTestRule(rule) && evt.ParentID == 0 {
		t.test = fmt.Sprintf("%s:%d", rule.Location.File, rule.Location.Row)
		t.seen = map[string]bool{}
		return
	}
	if evt.Op != topdown.ExitOp || t.test == "" {
		return
	}
	path := rule.Path()
	if !path.HasPrefix(t.decision) || len(path) > len(t.decision)+1 {
		return
	}
	var problem string
	value := evt.Plug(rule.Head.Value)
	if value == nil {
		return
	}
	if len(path) == len(t.decision) {
		problem = decisionProblem(value.Value)
	} else {
		// A rule that gives one key of the decision (decision.timeout
		// := "5s", or decision[k] := v): the key and its value alone.
		key := evt.Plug(ast.NewTerm(path[len(path)-1].Value))
		if rule.Head.Key != nil && len(rule.Head.Reference) <= 1 {
			key = evt.Plug(rule.Head.Key)
		}
		if key == nil || !key.IsGround() {
			return
		}
		problem = decisionProblem(ast.NewObject(
			[2]*ast.Term{ast.StringTerm("allow"), ast.BooleanTerm(false)},
			[2]*ast.Term{key, value}))
	}
	if problem == "" {
		return
	}
	msg := fmt.Sprintf("%s:%d: %s", rule.Location.File, rule.Location.Row, problem)
	if !t.seen[msg] {
		t.seen[msg] = true
		t.found[t.test] = append(t.found[t.test], msg)
	}
}

func isTestRule(rule *ast.Rule) bool {
	name := rule.Head.Name.String()
	if name == "" && len(rule.Head.Reference) > 0 {
		name = rule.Head.Reference[len(rule.Head.Reference)-1].String()
	}
	return strings.HasPrefix(name, tester.TestPrefix)
}

// decisionProblem says what is wrong with a value of the decision, ""
// when nothing.
func decisionProblem(v ast.Value) string {
	if !v.IsGround() {
		return ""
	}
	d, err := DecodeDecision(v)
	if err != nil {
		return strings.TrimPrefix(err.Error(), "policy: ")
	}
	if err := CheckDecision(&d); err != nil {
		return err.Error()
	}
	return ""
}
