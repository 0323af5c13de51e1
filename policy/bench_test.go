package policy

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func benchInput(uid uint32) Input {
	return Input{
		Argv:      []string{"uname", "-a"},
		Exe:       "/usr/bin/uname",
		Peer:      Peer{Pid: 4242, UID: uid, GID: uid, User: "www-data", Group: "www-data", Exe: "/usr/sbin/nginx"},
		Socket:    "/run/sockwarden/exec.sock",
		RequestID: "01JBENCHMARK0000000000000",
		Time:      time.Now(),
	}
}

func benchEvaluate(b *testing.B, e *Engine, in Input) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Evaluate(ctx, in); !d.Allow {
			b.Fatalf("denied: %+v", d)
		}
	}
}

// BenchmarkEvaluateExample: the example nginx policy, an allowed request
// (www-data runs uname -a).
func BenchmarkEvaluateExample(b *testing.B) {
	benchEvaluate(b, mustLoad(b, Options{Paths: []string{examplePolicy}}), benchInput(33))
}

// BenchmarkEvaluateDefault: the embedded default policy, an allowed request.
func BenchmarkEvaluateDefault(b *testing.B) {
	e, err := Default()
	if err != nil {
		b.Fatal(err)
	}
	benchEvaluate(b, e, benchInput(uint32(os.Getuid())))
}

// BenchmarkEvaluateExampleParallel: the example policy from many goroutines.
func BenchmarkEvaluateExampleParallel(b *testing.B) {
	e := mustLoad(b, Options{Paths: []string{examplePolicy}})
	in := benchInput(33)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := e.Evaluate(context.Background(), in); !d.Allow {
				b.Errorf("denied: %+v", d)
				return
			}
		}
	})
}

// The two ways to turn an Input into the policy's input document.
func BenchmarkInputValue(b *testing.B) {
	in := benchInput(33)
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = in.Value()
		}
	})
	b.Run("json-round-trip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ := json.Marshal(in)
			var x any
			_ = json.Unmarshal(buf, &x)
			if _, err := ast.InterfaceToValue(x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
