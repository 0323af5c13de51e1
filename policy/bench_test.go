package policy

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func benchInput(uid uint32) Input {
	return Input{
		Argv:      []string{"uname", "-a"},
		Exe:       "/usr/bin/uname",
		Peer:      Peer{PID: 4242, UID: uid, GID: uid, User: "www-data", Group: "www-data", Exe: "/usr/sbin/nginx"},
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
// (www-data runs uname -a), evaluated every time (decision cache off).
func BenchmarkEvaluateExample(b *testing.B) {
	benchEvaluate(b, mustLoad(b, Options{Paths: []string{examplePolicy}, CacheSize: -1}), benchInput(33))
}

// BenchmarkEvaluateExampleCached: the same request, answered from the
// decision cache (a hit: key, lookup, deep copy of the decision).
func BenchmarkEvaluateExampleCached(b *testing.B) {
	e := mustLoad(b, Options{Paths: []string{examplePolicy}})
	in := benchInput(33)
	if d := e.Evaluate(context.Background(), in); d.Cached || !d.Allow {
		b.Fatalf("warm-up: %+v", d)
	}
	if d := e.Evaluate(context.Background(), in); !d.Cached {
		b.Fatalf("not cached: %+v", d)
	}
	benchEvaluate(b, e, in)
}

// BenchmarkEvaluateExampleMiss: a new request every time (8192 distinct
// argv in turn, twice the cache size, so every lookup misses and every
// insertion evicts), with the cache off and on: the cost of the cache when
// it does not help.
func BenchmarkEvaluateExampleMiss(b *testing.B) {
	ins := make([]Input, 2*DefaultCacheSize)
	for i := range ins {
		ins[i] = benchInput(33)
		ins[i].Argv = []string{"uname", "-a", strconv.Itoa(i)}
	}
	for _, c := range []struct {
		name string
		size int
	}{{"cache=off", -1}, {"cache=on", 0}} {
		b.Run(c.name, func(b *testing.B) {
			e := mustLoad(b, Options{Paths: []string{examplePolicy}, CacheSize: c.size})
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if d := e.Evaluate(ctx, ins[i%len(ins)]); !d.Allow || d.Cached {
					b.Fatalf("decision: %+v", d)
				}
				i++
			}
		})
	}
}

// BenchmarkEvaluateDefault: the embedded default policy, an allowed request,
// evaluated every time (decision cache off).
func BenchmarkEvaluateDefault(b *testing.B) {
	e, err := Default(false)
	if err != nil {
		b.Fatal(err)
	}
	benchEvaluate(b, e.WithCacheSize(-1), benchInput(uint32(os.Getuid())))
}

// benchParallel runs Evaluate from 4 goroutines per GOMAXPROCS (8 on 2
// cores, like nginx workers hitting one server); goroutine g sends
// ins[g % len(ins)].
func benchParallel(b *testing.B, e *Engine, ins []Input, cached bool) {
	var next atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer() // not the policy load
	b.RunParallel(func(pb *testing.PB) {
		in := ins[int(next.Add(1))%len(ins)]
		for pb.Next() {
			if d := e.Evaluate(context.Background(), in); d.Err != nil || d.Cached != cached {
				b.Errorf("decision: %+v", d)
				return
			}
		}
	})
}

// BenchmarkEvaluateExampleParallel: the example policy from 8 goroutines
// per 2 cores, evaluated every time (decision cache off).
func BenchmarkEvaluateExampleParallel(b *testing.B) {
	benchParallel(b, mustLoad(b, Options{Paths: []string{examplePolicy}, CacheSize: -1}), []Input{benchInput(33)}, false)
}

// BenchmarkEvaluateExampleCachedParallel: cache hits from 8 goroutines per
// 2 cores, all for the same request (one shard, one entry: the worst case
// for contention), or each goroutine its own request (uname with another
// option: the same decision, other entries, likely other shards).
func BenchmarkEvaluateExampleCachedParallel(b *testing.B) {
	var distinct []Input
	for _, opt := range []string{"-a", "-s", "-n", "-r", "-v", "-m", "-p", "-o"} {
		in := benchInput(33)
		in.Argv = []string{"uname", opt}
		distinct = append(distinct, in)
	}
	for _, c := range []struct {
		name string
		ins  []Input
	}{{"same", []Input{benchInput(33)}}, {"distinct", distinct}} {
		b.Run(c.name, func(b *testing.B) {
			e := mustLoad(b, Options{Paths: []string{examplePolicy}})
			for _, in := range c.ins {
				e.Evaluate(context.Background(), in)
			}
			benchParallel(b, e, c.ins, true)
		})
	}
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
