package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// DefaultQuery is the query evaluated when Options.Query is empty.
const DefaultQuery = "data.sockwarden.decision"

// DefaultTimeout is the evaluation deadline when Options.Timeout is zero.
const DefaultTimeout = 100 * time.Millisecond

// Options says where a policy comes from and how to evaluate it.
type Options struct {
	// Paths are .rego files, JSON or YAML data files, directories (read
	// recursively; data files land under data.<subdirectory path>) and
	// bundles: .tar.gz files, or directories holding a .manifest. Inside
	// directories and bundles, *_test.rego files and (outside bundles)
	// hidden entries are skipped. A path may carry OPA's "a.b:path" prefix
	// to place data under data.a.b.
	Paths []string
	// Query is the decision to evaluate; default [DefaultQuery]. It must be
	// a reference into data.
	Query string
	// Timeout is the per-evaluation deadline; default [DefaultTimeout].
	Timeout time.Duration
	// Data, when set, is merged into data next to the loaded data files
	// (a conflicting key is a load error). Values must be JSON-like.
	Data map[string]any
	// Verification, when set, requires every path to be a bundle signed
	// with its key (see [Verification]); a bundle that does not verify
	// does not load.
	Verification *Verification
	// Tests is what the policy's own tests (its *_test.rego files) decide
	// at load: [TestsRefuse] (the default, also for ""), [TestsWarn] or
	// [TestsOff].
	Tests string
	// CacheSize bounds the decision cache: the number of decisions the
	// engine memoizes when the policy is a pure function of the request
	// (see [Engine.Cacheable]). 0 means [DefaultCacheSize]; a negative
	// value turns the cache off, so that every request is evaluated. An
	// entry takes about the size of its request plus 1 to 2 KB (the
	// example policy's allow decision: 1.3 KB).
	CacheSize int
}

// Engine is a compiled, prepared policy. It is immutable (but for its
// internally synchronized decision cache, see [Engine.Cacheable]) and safe
// for concurrent use by many goroutines. To reload, call [Load] again and
// swap the pointer (for example with atomic.Pointer[Engine]); Load has no
// side effects, so a policy that fails to load never replaces the running
// one, and the new engine starts with an empty cache.
type Engine struct {
	pq       rego.PreparedEvalQuery
	query    string
	timeout  time.Duration
	revision string
	source   string
	modules  []string
	tests    TestSummary

	// impure says why the policy's decisions may vary for equal cache keys
	// (see impurity); "" = they cannot.
	impure string
	// cache memoizes decisions; nil when the policy is impure or the cache
	// is off. Shared by the copies WithTimeout makes.
	cache *decisionCache
}

// Load reads, compiles and prepares the policy in opts.Paths. Errors name
// file:line:column. It then evaluates the query once against a synthetic
// request (uid 65534 running /usr/bin/true) and fails if that evaluation
// errors, is undefined (write a `default decision := {...}`), or yields a
// malformed decision: a policy that would deny everything by accident is
// caught here instead of at the first request.
//
// Load also decides, by looking at the compiled rules, whether the
// policy's decisions can be memoized; see [Engine.Cacheable].
func Load(ctx context.Context, opts Options) (*Engine, error) {
	read := func(tests bool) (*loaded, error) {
		var vc *bundle.VerificationConfig
		if opts.Verification != nil {
			var err error
			if vc, err = opts.Verification.config(); err != nil {
				return nil, err
			}
		}
		return readPaths(opts.Paths, nil, tests, vc)
	}
	e, err := load(ctx, opts, strings.Join(opts.Paths, ", "), read)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", strings.Join(opts.Paths, ", "), err)
	}
	return e, nil
}

// LoadBundles is [Load] for bundles already read and verified, such as
// those an OPA control plane serves (by name, as OPA's bundles
// configuration names them): the same checks, and the same engine.
// opts.Paths and opts.Verification are not used; the revision is the
// bundles' manifest revisions, in name order, joined with "+".
func LoadBundles(ctx context.Context, opts Options, bundles map[string]*bundle.Bundle) (*Engine, error) {
	names := slices.Sorted(maps.Keys(bundles))
	read := func(tests bool) (*loaded, error) {
		l := newLoaded()
		for _, name := range names {
			if err := l.addBundle(name, bundles[name], tests); err != nil {
				return nil, err
			}
		}
		return l, nil
	}
	source := "bundle " + strings.Join(names, ", bundle ")
	e, err := load(ctx, opts, source, read)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", source, err)
	}
	return e, nil
}

// load reads the policy with read (tests says whether to read its
// *_test.rego files too), then compiles, prepares and checks it.
func load(ctx context.Context, opts Options, source string, read func(tests bool) (*loaded, error)) (*Engine, error) {
	query := opts.Query
	if query == "" {
		query = DefaultQuery
	}
	body, err := ast.ParseBody(query)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	if len(body) != 1 || !isDataRef(body[0]) {
		return nil, fmt.Errorf("query %q: want a reference into data, like %s", query, DefaultQuery)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	l, err := read(opts.Tests != TestsOff)
	if err != nil {
		return nil, err
	}
	if len(l.modules) == 0 {
		return nil, errors.New("no .rego modules found")
	}
	if opts.Data != nil {
		if err := mergeData(l.data, opts.Data, "data"); err != nil {
			return nil, err
		}
	}
	rev, err := l.revision()
	if err != nil {
		return nil, err
	}

	store := inmem.NewFromObjectWithOpts(l.data, inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(false)
	compiler.Compile(l.modules)
	store.Abort(ctx, txn)
	if compiler.Failed() {
		return nil, loadError(compiler.Errors)
	}

	pq, err := rego.New(
		rego.ParsedQuery(body),
		rego.Compiler(compiler),
		rego.Store(store),
		// Hand back the result term as is: Evaluate decodes the AST
		// directly instead of converting it to Go maps first.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, loadError(err)
	}

	e := &Engine{
		pq:       pq,
		query:    query,
		timeout:  timeout,
		revision: rev,
		source:   source,
	}
	e.modules = slices.Sorted(maps.Keys(l.modules))
	e.impure = impurity(compiler)

	// Smoke evaluation; a generous deadline so a cold first run on a busy
	// machine does not fail a good policy.
	smoke := *e
	smoke.timeout = max(timeout, time.Second)
	d := smoke.Evaluate(ctx, Input{
		Argv:      []string{"true"},
		Exe:       "/usr/bin/true",
		Peer:      Peer{PID: 1, UID: 65534, GID: 65534, User: "nobody", Group: "nogroup"},
		Socket:    "/run/sockwarden/smoke-test.sock",
		RequestID: "smoke-test",
		Time:      time.Now(),
	})
	if d.Err != nil {
		if errors.Is(d.Err, ErrUndefined) {
			return nil, fmt.Errorf("smoke evaluation: %s is undefined for a synthetic request; define `default decision := {\"allow\": false, ...}` (or check the package name)", query)
		}
		return nil, fmt.Errorf("smoke evaluation: %w", d.Err)
	}
	if err := e.runOwnTests(ctx, l, opts.Tests, body[0].Terms.(*ast.Term).Value.(ast.Ref)); err != nil {
		return nil, err
	}
	// The cache starts after the smoke evaluation: a synthetic request
	// has no business in it.
	return e.withCache(opts.CacheSize), nil
}

// Modes of [Options].Tests.
const (
	TestsRefuse = "refuse" // a policy whose tests fail does not load (the default)
	TestsWarn   = "warn"   // it loads; Engine.Tests says they failed
	TestsOff    = "off"    // the tests are not run
)

// TestSummary is how a policy's own tests went when it was loaded.
type TestSummary struct {
	// Files is how many *_test.rego files the policy had; 0 when none
	// (or the tests were off), and then nothing ran.
	Files int
	// Failed is true when some test failed or errored, or could not be
	// compiled; Report is the tester's report of the run.
	Failed bool
	Report string
}

// runOwnTests runs the policy's *_test.rego files, as `policy test` does
// (decisions checked against the schema), as mode says.
func (e *Engine) runOwnTests(ctx context.Context, l *loaded, mode string, decision ast.Ref) error {
	if len(l.tests) == 0 || mode == TestsOff {
		return nil
	}
	all := maps.Clone(l.modules)
	maps.Copy(all, l.tests)
	var report bytes.Buffer
	err := runTests(ctx, &report, &testLoad{modules: all, data: l.data}, TestOptions{once: true}, decision, e.source)
	e.tests = TestSummary{Files: len(l.tests), Failed: err != nil, Report: strings.TrimSpace(report.String())}
	if err == nil || mode == TestsWarn {
		return nil
	}
	var tf *TestFailure
	if !errors.As(err, &tf) {
		e.tests.Report = strings.TrimSpace(e.tests.Report + "\n" + err.Error())
	}
	return fmt.Errorf("its own tests fail (policy.tests = \"warn\" would load it anyway):\n%s", e.tests.Report)
}

// Tests says how the policy's own tests went when it was loaded.
func (e *Engine) Tests() TestSummary { return e.tests }

func isDataRef(expr *ast.Expr) bool {
	t, ok := expr.Terms.(*ast.Term)
	if !ok {
		return false
	}
	ref, ok := t.Value.(ast.Ref)
	return ok && len(ref) > 0 && ref[0].Equal(ast.DefaultRootDocument)
}

// Revision is the policy revision: the bundle manifest's revision when the
// policy is made only of bundles that have one, else the first 12 hex digits
// of a SHA-256 over the modules and data (independent of file locations).
func (e *Engine) Revision() string {
	if e == nil {
		return ""
	}
	return e.revision
}

// Source describes where the policy came from: "embedded default" or the
// comma-separated paths.
func (e *Engine) Source() string {
	if e == nil {
		return ""
	}
	return e.source
}

// Modules returns the names of the policy's modules (file names), sorted.
func (e *Engine) Modules() []string {
	if e == nil {
		return nil
	}
	return slices.Clone(e.modules)
}

// Query returns the query the engine evaluates.
func (e *Engine) Query() string {
	if e == nil {
		return ""
	}
	return e.query
}

// Timeout returns the per-evaluation deadline.
func (e *Engine) Timeout() time.Duration {
	if e == nil {
		return 0
	}
	return e.timeout
}

// WithTimeout returns a copy of e whose evaluations have deadline d
// (d <= 0 means [DefaultTimeout]). The copy shares the compiled policy and
// the decision cache (a cached decision is one that evaluated in time).
func (e *Engine) WithTimeout(d time.Duration) *Engine {
	if e == nil {
		return nil
	}
	if d <= 0 {
		d = DefaultTimeout
	}
	c := *e
	c.timeout = d
	return &c
}

// WithCacheSize returns a copy of e with an empty decision cache of n
// entries, as Options.CacheSize: 0 means [DefaultCacheSize], a negative n
// turns the cache off. It is how to size the cache of the built-in policy
// ([Default]). The copy shares the compiled policy. An impure policy (see
// [Engine.Cacheable]) gets no cache whatever n is.
func (e *Engine) WithCacheSize(n int) *Engine {
	if e == nil {
		return nil
	}
	return e.withCache(n)
}

// withCache returns a copy of e with a new cache of n entries (see
// Options.CacheSize).
func (e *Engine) withCache(n int) *Engine {
	c := *e
	c.cache = nil
	if n == 0 {
		n = DefaultCacheSize
	}
	if n > 0 && c.impure == "" {
		c.cache = newDecisionCache(n)
	}
	return &c
}

// Cacheable reports whether e memoizes decisions, and when it does not,
// why, for the logs: a policy place such as "policy.rego:12:5: calls
// time.now_ns, which is non-deterministic", or that the cache is off.
//
// Load decides it by looking at the compiled rules (all of them, reached by
// the query or not), conservatively: a policy is cacheable when its
// decisions can depend only on input.argv, input.exe, input.peer and
// input.socket and on data (fixed for the Engine's lifetime; a reload makes
// a new Engine with an empty cache). So it must not read input.request_id
// or input.time, read input in a way that cannot be seen through (bare
// input as in walk(input) or object.get(input, ...), or input[k] with a
// non-constant k), or call a non-deterministic builtin (time.now_ns,
// rand.intn, uuid.rfc4122, http.send, net.lookup_ip_addr, opa.runtime,
// io.jwt.decode_verify, the crypto.x509 chain verifications, ...).
//
// A cacheable engine keeps up to Options.CacheSize decisions, keyed by
// argv, exe, peer (pid, uid, gid, user, group, exe) and socket; requests
// whose key exceeds 4 KiB are always evaluated. Only successful decisions
// are kept, allows and denies alike, never errors, timeouts or undefined
// decisions. A decision served from the cache has Cached set, EvalDuration
// is the time of the lookup, and it is a deep copy the caller may change.
func (e *Engine) Cacheable() (ok bool, reason string) {
	switch {
	case e == nil:
		return false, "no policy loaded"
	case e.impure != "":
		return false, e.impure
	case e.cache == nil:
		return false, "decision cache turned off (cache size < 0)"
	}
	return true, ""
}

var noMetrics = metrics.NoOp()

// Evaluate asks the policy about one request. It never returns Allow on an
// error: a nil engine, an evaluation error, an undefined decision, a
// timeout (Options.Timeout, or ctx ending first) or a malformed decision all
// give a deny with Err set and a generic Message. Revision and EvalDuration
// are always filled. When the engine is [Engine.Cacheable], a request equal
// to an earlier one but for RequestID and Time gets the earlier decision
// from the cache, with Cached set. Safe for concurrent use.
func (e *Engine) Evaluate(ctx context.Context, in Input) (d Decision) {
	start := time.Now()
	if in.Time.IsZero() {
		in.Time = start
	}
	defer func() {
		if r := recover(); r != nil {
			d = failed(fmt.Errorf("%w: panic: %v", ErrEvaluation, r))
		}
		if e != nil {
			d.Revision = e.revision
		}
		d.EvalDuration = time.Since(start)
	}()
	if e == nil {
		return failed(ErrNoPolicy)
	}
	if err := ctx.Err(); err != nil {
		return failed(fmt.Errorf("%w: %w", ErrCanceled, err))
	}

	var (
		kbuf [256]byte
		key  []byte // nil: do not cache
	)
	if e.cache != nil {
		if key = appendCacheKey(kbuf[:0], &in); len(key) > maxCacheKeyBytes {
			key = nil
		} else if cd, ok := e.cache.get(key); ok {
			cd.Cached = true
			return cd
		}
	}

	// Cancel through topdown directly: no goroutine per evaluation, unlike
	// a context deadline.
	cancel := topdown.NewCancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(e.timeout, func() {
		timedOut.Store(true)
		cancel.Cancel()
	})
	defer timer.Stop()
	if ctx.Done() != nil {
		defer context.AfterFunc(ctx, cancel.Cancel)()
	}

	rs, err := e.pq.Eval(ctx,
		rego.EvalParsedInput(in.Value()),
		rego.EvalTime(in.Time),
		rego.EvalExternalCancel(cancel),
		rego.EvalMetrics(noMetrics),
	)
	switch {
	case err != nil && timedOut.Load():
		return failed(fmt.Errorf("%w after %v", ErrTimeout, e.timeout))
	case err != nil && ctx.Err() != nil:
		return failed(fmt.Errorf("%w: %w", ErrCanceled, ctx.Err()))
	}
	if d = e.decide(rs, err); d.Err != nil {
		return d
	}
	if key != nil {
		e.cache.put(key, d)
	}
	return d
}

// Lookup returns the memoized decision for in, as [Engine.Evaluate]
// would return it, without evaluating: ok is false when the engine is not
// [Engine.Cacheable] or has no decision for in yet (then call Evaluate).
// It is cheap and shallow, for callers that evaluate elsewhere (on a
// goroutine with a grown stack) only what the cache does not have.
func (e *Engine) Lookup(ctx context.Context, in Input) (d Decision, ok bool) {
	if e == nil || e.cache == nil || ctx.Err() != nil {
		return Decision{}, false
	}
	start := time.Now()
	var kbuf [256]byte
	key := appendCacheKey(kbuf[:0], &in)
	if len(key) > maxCacheKeyBytes {
		return Decision{}, false
	}
	if d, ok = e.cache.get(key); !ok {
		return Decision{}, false
	}
	d.Cached = true
	d.Revision = e.revision
	d.EvalDuration = time.Since(start)
	return d, true
}

// failed is the deny for an error. The message is generic: the detail is
// for the audit log (Err, Reasons), not for the client.
func failed(err error) Decision {
	msg := "policy error"
	if errors.Is(err, ErrTimeout) {
		msg = "policy evaluation timed out"
	}
	return Decision{Allow: false, Message: msg, Reasons: []string{err.Error()}, Err: err}
}
