package bench_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sockwarden/sockwarden/internal/bench"
)

// Measure the spawn rate of this machine without a server, the figure a
// server's spawn run is compared to. Against a server, set Workload to
// bench.Spawn and Socket to its path.
func Example() {
	res, err := bench.Run(context.Background(), bench.Config{
		Workload:    bench.Baseline,
		Requests:    20,
		Concurrency: 2,
		Argv:        []string{"/bin/true"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Workload, res.Requests, "requests,", res.Errors, "errors")
	// The figures vary from run to run; Fields().Text() formats them as
	// "workload=baseline n=20 c=2 rps=... p50_ms=... errors=0".
	f, _ := res.Fields().Get("rps")
	fmt.Println(f.Value > 0)
	// Output:
	// baseline 20 requests, 0 errors
	// true
}

// Repeated runs are combined with Median.
func ExampleMedian() {
	runs := []*bench.Result{
		{Workload: bench.Flood, Size: 1 << 30, MiBps: 1210, Elapsed: 846 * time.Millisecond},
		{Workload: bench.Flood, Size: 1 << 30, MiBps: 1302, Elapsed: 786 * time.Millisecond},
		{Workload: bench.Flood, Size: 1 << 30, MiBps: 1288, Elapsed: 795 * time.Millisecond},
	}
	fmt.Println(bench.Median(runs).Insert(bench.Str("run", "median")).Text())
	// Output:
	// workload=flood run=median runs=3 bytes=1073741824 mib_s=1288.0 elapsed_s=0.795 errors=0
}
