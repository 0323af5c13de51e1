package policy_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sockwarden/sockwarden/policy"
)

// Load a policy once, then evaluate every request against it. The engine is
// safe for concurrent use; to reload, Load again and swap the pointer.
func ExampleLoad() {
	eng, err := policy.Load(context.Background(), policy.Options{
		Paths:   []string{"../examples/policy"}, // policy.rego + data.json
		Timeout: time.Second,                    // per-evaluation deadline; the default is 100ms
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	d := eng.Evaluate(context.Background(), policy.Input{
		Argv: []string{"uname", "-a"},
		Exe:  "/usr/bin/uname", // the server fills this with policy.ResolveExe(argv[0])
		Peer: policy.Peer{PID: 4242, UID: 33, GID: 33},
	})
	fmt.Println("allow:", d.Allow, d.Reasons)
	fmt.Println("cpu:", d.Rlimits["cpu"], "timeout:", d.Timeout, "dynamic uid:", d.RunAs.Dynamic, "network:", d.Network)

	d = eng.Evaluate(context.Background(), policy.Input{
		Argv: []string{"sh", "-c", "id"},
		Exe:  "/usr/bin/sh",
		Peer: policy.Peer{PID: 4242, UID: 33, GID: 33},
	})
	fmt.Println("allow:", d.Allow, d.Message)
	// Output:
	// allow: true [web profile: allow-listed tool (see exe)]
	// cpu: 5 timeout: 10s dynamic uid: true network: none
	// allow: false shells and interpreters may not run inline code (sh -c)
}

// Errors never allow: an engine that failed to load, a policy error, an
// undefined decision or a timeout all deny, with Err saying why.
func ExampleEngine_Evaluate_failClosed() {
	var eng *policy.Engine // e.g. never loaded
	d := eng.Evaluate(context.Background(), policy.Input{Argv: []string{"true"}})
	fmt.Println(d.Allow, d.Message, d.Err)
	// Output:
	// false policy error no policy loaded
}

// The built-in policy serves only the user the server runs as.
func ExampleDefault() {
	eng, err := policy.Default(false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(eng.Source())
	// Output:
	// embedded default
}
