package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFieldsText(t *testing.T) {
	tests := []struct {
		res  Result
		want string
	}{
		{Result{Workload: Spawn, Requests: 2000, Concurrency: 8, Rate: 1234.56, P50: 4321 * time.Microsecond,
			P90: 5 * time.Millisecond, P99: 9 * time.Millisecond, Max: 12 * time.Millisecond, Elapsed: 1620 * time.Millisecond},
			"workload=spawn n=2000 c=8 rps=1234.6 p50_ms=4.321 p90_ms=5.000 p99_ms=9.000 max_ms=12.000 elapsed_s=1.620 errors=0"},
		{Result{Workload: Flood, Size: 1 << 30, MiBps: 1500.04, Elapsed: time.Second, Errors: 1},
			"workload=flood bytes=1073741824 mib_s=1500.0 elapsed_s=1.000 errors=1"},
		{Result{Workload: Idle, Conns: 2000, Concurrency: 8, PID: 42, StartTime: 3 * time.Second, RSSBaseKiB: 10000, RSSKiB: 70000,
			KiBPerConn: 30, FDsBase: 10, FDs: 8010, FDsPerConn: 4, ThreadsBase: 5, Threads: 9, CloseTime: 250 * time.Millisecond,
			RSSAfterKiB: 60000, FDsAfter: 10, ThreadsAfter: 9},
			"workload=idle k=2000 c=8 pid=42 start_s=3.000 rss_base_kib=10000 rss_kib=70000 kib_per_conn=30.0 fds_base=10 fds=8010 fds_per_conn=4.00 threads_base=5 threads=9 close_ms=250.0 rss_after_kib=60000 fds_after=10 threads_after=9 errors=0"},
	}
	for _, tt := range tests {
		fs := tt.res.Fields()
		if got := fs.Text(); got != tt.want {
			t.Errorf("Text:\n got %s\nwant %s", got, tt.want)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(fs.JSON()), &m); err != nil {
			t.Fatalf("JSON %s: %v", fs.JSON(), err)
		}
		if m["workload"] != string(tt.res.Workload) || m["errors"] != float64(tt.res.Errors) || len(m) != len(fs) {
			t.Errorf("JSON %s does not match %s", fs.JSON(), tt.want)
		}
	}
}

func TestMedian(t *testing.T) {
	rs := []*Result{
		{Workload: Spawn, Requests: 10, Concurrency: 2, Rate: 100, P50: 3 * time.Millisecond, Errors: 1},
		{Workload: Spawn, Requests: 10, Concurrency: 2, Rate: 300, P50: 1 * time.Millisecond},
		{Workload: Spawn, Requests: 10, Concurrency: 2, Rate: 200, P50: 2 * time.Millisecond, Errors: 2},
	}
	got := Median(rs).Insert(Str("run", "median")).Text()
	want := "workload=spawn run=median runs=3 n=10 c=2 rps=200.0 p50_ms=2.000 p90_ms=0.000 p99_ms=0.000 max_ms=0.000 elapsed_s=0.000 errors=3"
	if got != want {
		t.Errorf("Median:\n got %s\nwant %s", got, want)
	}
	even := Median(rs[:2])
	if f, _ := even.Get("rps"); f.Value != 200 {
		t.Errorf("median of two = %v, want their mean 200", f.Value)
	}
	if Median(nil) != nil {
		t.Error("Median(nil) != nil")
	}
}

func TestTextHasNoSpacesInValues(t *testing.T) {
	fs := Fields{Str("workload", "a b"), Num("x", 1, 0)}
	if got := fs.Text(); strings.Count(got, " ") != 1 {
		t.Errorf("Text = %q", got)
	}
}
