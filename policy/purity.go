package policy

import (
	"fmt"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// cacheKeyInputs are the top-level input keys a policy may read and still
// be memoized: the cache key (appendCacheKey) covers each of them in full.
// input.request_id and input.time differ on every request; any other key
// (absent from the input today) is refused too, so that a field added to
// Input later is not read from a stale cached decision by accident.
var cacheKeyInputs = map[string]bool{"argv": true, "exe": true, "peer": true, "socket": true}

// clockDependent are builtins that read the wall clock or otherwise vary
// between evaluations with equal arguments but that OPA does not mark
// ast.Builtin.Nondeterministic: certificate chain verification checks
// validity against time.Now() unless the options give a CurrentTime.
var clockDependent = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// impurity reports why decisions of the compiled policy may depend on more
// than the cache key (argv, exe, peer, socket) and the policy's fixed data,
// or "" when they cannot. It inspects every rule of every module (also rules
// the query never reaches) after compilation, when imports and local
// names have been resolved to full references, and is conservative: what it
// cannot see through makes the policy impure. The reason names the first
// offending place, as "file:row:col: what", for the logs.
//
// A policy is impure when a rule
//   - reads input.request_id or input.time, or an input key other than
//     argv, exe, peer and socket;
//   - reads input other than through a constant top-level key: bare input
//     (walk(input), object.get(input, k, d), x in input, with input as ...),
//     input[k] with a non-constant k;
//   - calls (or substitutes with `with`) a builtin that OPA marks
//     non-deterministic (time.now_ns, rand.intn, uuid.rfc4122, http.send,
//     net.lookup_ip_addr, opa.runtime, io.jwt.decode_verify, ...), or one
//     that reads the clock (crypto.x509.parse_and_verify_certificates*);
//   - calls a function that is neither a rule under data nor a known
//     builtin.
//
// print and trace are harmless: they do not change the decision (print is
// compiled out anyway).
func impurity(c *ast.Compiler) string {
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		for _, r := range c.Modules[name].Rules {
			if why := ruleImpurity(r); why != "" {
				return why
			}
		}
	}
	return ""
}

func ruleImpurity(r *ast.Rule) string {
	var (
		why string
		loc = r.Location // the innermost location seen so far
		vis *ast.GenericVisitor
	)
	flag := func(format string, args ...any) {
		if why == "" {
			why = fmt.Sprintf("%s: %s", where(loc), fmt.Sprintf(format, args...))
		}
	}
	vis = ast.NewGenericVisitor(func(x any) bool {
		if why != "" {
			return true
		}
		switch x := x.(type) {
		case *ast.Rule:
			// The walk skips the terms of a rule's reference head
			// (a.b[k].c := ...): the compiler moves non-variable ones into
			// the body, but look anyway.
			if x.Head != nil {
				for _, t := range x.Head.Reference {
					vis.Walk(t)
				}
			}
		case *ast.Expr:
			if x.Location != nil {
				loc = x.Location
			}
			if x.IsCall() {
				if op := x.Operator(); op != nil {
					callImpurity(op, flag)
				} else {
					flag("calls %v, which is not a function name", x.OperatorTerm())
				}
			}
		case *ast.Term:
			if x.Location != nil {
				loc = x.Location
			}
		case ast.Call:
			if len(x) > 0 {
				if op, ok := x[0].Value.(ast.Ref); ok {
					callImpurity(op, flag)
				} else {
					flag("calls %v, which is not a function name", x[0])
				}
			}
		case ast.Var:
			// A variable named input outside a reference: the whole input
			// document (a rule head's name is a Var too, but a rule cannot
			// be named input).
			if x.Equal(ast.InputRootDocument.Value) {
				flag("uses the whole input document (bare input), which holds the per-request request_id and time")
			}
		case ast.Ref:
			if len(x) == 0 {
				return true
			}
			head, ok := x[0].Value.(ast.Var)
			switch {
			case !ok:
				// A reference into a composite or a call result: walk it all.
				return false
			case head.Equal(ast.InputRootDocument.Value):
				if len(x) < 2 {
					flag("uses the whole input document (bare input), which holds the per-request request_id and time")
					return true
				}
				key, ok := x[1].Value.(ast.String)
				switch {
				case !ok:
					flag("reads input[%v], a key computed during evaluation", x[1])
					return true
				case key == "request_id" || key == "time":
					flag("reads input.%s, which differs on every request", string(key))
					return true
				case !cacheKeyInputs[string(key)]:
					flag("reads input.%s, which is not part of the decision cache key", string(key))
					return true
				}
				// input.argv, input.peer, ...: the cache key holds them
				// whole; only the terms further down may hide something.
				for _, t := range x[2:] {
					vis.Walk(t)
				}
				return true
			case head.Equal(ast.DefaultRootDocument.Value):
				// data is fixed per Engine; only the terms may hide something.
				for _, t := range x[1:] {
					vis.Walk(t)
				}
				return true
			default:
				// A local variable, or a builtin named where a function
				// value is expected (with f as time.now_ns).
				builtinImpurity(x, flag)
				for _, t := range x[1:] {
					vis.Walk(t)
				}
				return true
			}
		}
		return false
	})
	vis.Walk(r)
	return why
}

// callImpurity checks the function a call names: a rule under data, or a
// builtin that is deterministic.
func callImpurity(op ast.Ref, flag func(string, ...any)) {
	if op.HasPrefix(ast.DefaultRootRef) {
		return
	}
	name := op.String()
	if _, ok := ast.BuiltinMap[name]; !ok {
		flag("calls %s, which is neither a rule nor a known builtin", name)
		return
	}
	builtinImpurity(op, flag)
}

// builtinImpurity flags a reference that names a non-deterministic builtin.
func builtinImpurity(ref ast.Ref, flag func(string, ...any)) {
	name := ref.String()
	b, ok := ast.BuiltinMap[name]
	switch {
	case !ok:
	case b.Nondeterministic:
		flag("calls %s, which is non-deterministic", name)
	case clockDependent[name]:
		flag("calls %s, which reads the clock", name)
	}
}

func where(loc *ast.Location) string {
	if loc == nil {
		return "(unknown location)"
	}
	return fmt.Sprintf("%s:%d:%d", loc.File, loc.Row, loc.Col)
}
