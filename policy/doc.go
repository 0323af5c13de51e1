// Package policy judges sockwarden requests with an OPA/Rego policy.
//
// A policy is loaded, compiled and prepared once ([Load], or [Default] for
// the built-in one); each request is then one evaluation ([Engine.Evaluate])
// of the query (default data.sockwarden.decision) against an [Input]: the
// argv, argv[0] resolved by the server with its own PATH
// (plan.ResolveExe), the caller's kernel-verified identity ([Peer], from
// SO_PEERCRED, with names looked up by peer.Names), the socket, a request
// id and the time.
//
// The policy answers with a decision document, decoded strictly into a
// [Decision]: an unknown key, a wrong type or an out-of-range value is an
// error naming the key ("decision.rlimits.cpu: want a number, got string").
// Everything fails closed: a compile error keeps the old engine (Load has no
// side effects), and an evaluation error, an undefined decision, a timeout
// or a malformed document is a deny with Decision.Err set.
//
// # Server use
//
//	var cur atomic.Pointer[policy.Engine]
//	eng, err := policy.Load(ctx, policy.Options{Paths: cfg.PolicyPaths, Timeout: cfg.PolicyTimeout})
//	if err != nil { ... keep the running engine, log err ... }
//	cur.Store(eng) // at start-up, and again on SIGHUP
//
//	// per request (server.PolicyGate does this):
//	in := policy.Input{
//		Argv: argv, Exe: exe, // exe from plan.ResolveExe(argv[0], serverPATH)
//		Peer: p,              // peer.FromConn(conn), then names.Describe(&p)
//		Socket: socketPath, RequestID: id, Time: time.Now(),
//	}
//	d := cur.Load().Evaluate(ctx, in)
//	// then plan.Planner turns d into the Plan the server runs (or denies),
//	// and the server audits d's Revision, EvalDuration, Reasons and Err.
//
// Revision identifies the policy in the audit log: the bundle revision, or a
// hash of the modules and data. [RunTests] runs the policy's Rego unit tests
// like `opa test`.
//
// # Decision cache
//
// Most policies are pure functions of the request: the same argv, exe,
// caller and socket always get the same decision. Load finds out by
// looking at the compiled rules ([Engine.Cacheable]; conservatively: a
// policy that reads input.time or input.request_id, reads input in a way
// that cannot be seen through, or calls a non-deterministic builtin such
// as time.now_ns or http.send is not cacheable), and a cacheable engine
// memoizes up to Options.CacheSize decisions ([DefaultCacheSize]; a
// negative size turns the cache off, [Engine.WithCacheSize] does the same
// for [Default]). A repeated request then costs a lookup and a copy of
// the decision instead of an evaluation; the decision says Cached, and its
// EvalDuration is the time of the lookup. Only successful decisions are
// kept; errors, timeouts and undefined decisions are evaluated again every
// time. The cache lives and dies with the Engine: a reload starts empty.
// Log the reason Cacheable gives when it says no, so that policy authors
// see what costs them the cache:
//
//	if ok, why := eng.Cacheable(); !ok {
//		logger.Info("policy decisions are not cached", "reason", why)
//	}
//
// # Performance
//
// Evaluate converts the input to an AST value by hand (about four times
// faster than a JSON round trip), evaluates the prepared query without
// converting the result to Go maps, cancels through OPA's cancel hook
// rather than a goroutine per evaluation, and decodes the AST directly.
// On the 2-core VM of README's Performance section, an allowed request
// takes a median 55-60 µs with the example policy (examples/policy; 46 µs
// on the day it was first measured), including decoding
// (BenchmarkEvaluateExample; BenchmarkEvaluateDefault for the default
// policy). Figures move with the machine: compare within one run.
//
// A decision cache hit skips all of that: building the key, a map lookup
// under a shard's read lock and a deep copy of the decision take about
// 0.9 µs there (BenchmarkEvaluateExampleCached; 884 B in 10 allocations, almost
// all of it the copy), and 8 goroutines on 2 cores contend on nothing but
// the allocator (BenchmarkEvaluateExampleCachedParallel: the same figure
// whether they all hit one entry or each its own). A miss costs about 2 µs
// more than no cache (key, copy, insertion; BenchmarkEvaluateExampleMiss).
// A full cache of the example policy's decisions holds about 1.3 KB per
// entry, some 5 MB at [DefaultCacheSize].
package policy
