package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
)

// ErrNoTests is returned by [RunTests] when the paths hold no test rules,
// so that a typo in a CI job's path does not pass silently.
var ErrNoTests = errors.New("no tests found")

// TestTimeout is the deadline of one Rego test in [RunTests].
const TestTimeout = 5 * time.Second

// RunTests runs the Rego unit tests (rules named test_*) found in paths,
// like `opa test`, and writes the report to w in opa test's format: failing
// tests (and, with verbose, every test with PASS/FAIL/ERROR and the trace of
// failures) and a summary line such as "PASS: 12/12". *_test.rego files are
// loaded together with the policy and data files next to them.
//
// ok is false when any test fails or errors. err is non-nil when the tests
// could not be run at all: unreadable paths, parse or compile errors (each
// naming file:line:column), or no tests found ([ErrNoTests]).
func RunTests(ctx context.Context, w io.Writer, paths []string, verbose bool) (ok bool, err error) {
	if len(paths) == 0 {
		return false, errors.New("no paths given")
	}
	modules, store, err := tester.LoadWithParserOptions(paths, nil, ast.ParserOptions{ProcessAnnotation: true})
	if err != nil {
		return false, loadError(err)
	}
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return false, err
	}
	defer store.Abort(ctx, txn)

	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithUseTypeCheckAnnotations(true)

	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		EnableTracing(verbose).
		StackTraces(true).
		SetTimeout(TestTimeout)

	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return false, loadError(err)
	}

	ok = true
	ran := 0
	results := make(chan *tester.Result)
	go func() {
		defer close(results)
		for r := range ch {
			ran++
			if !r.Pass() {
				ok = false
			}
			results <- r
		}
	}()
	reporter := tester.PrettyReporter{Verbose: verbose, Output: w}
	if err := reporter.Report(results); err != nil {
		for range results { // let the producer finish
		}
		return false, err
	}
	if ran == 0 {
		return false, fmt.Errorf("%w in %s", ErrNoTests, strings.Join(paths, ", "))
	}
	return ok, nil
}
