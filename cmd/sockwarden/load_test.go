package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/policy"
)

// Load and leak tests. They take minutes, so they run only when asked:
// SOCKWARDEN_LOAD=1, or a -run pattern that names them ("make load"
// runs them in CI as part of "make test").

func needLoad(t *testing.T) {
	t.Helper()
	if os.Getenv("SOCKWARDEN_LOAD") == "1" {
		return
	}
	if f := flag.Lookup("test.run"); f != nil && strings.Contains(f.Value.String(), "Load") {
		return
	}
	t.Skip("load test: set SOCKWARDEN_LOAD=1 or run with -run Load")
}

// usage is a snapshot of the server's resources.
type usage struct {
	fds     int
	threads int64
	rssKiB  int64
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d threads, %d KiB RSS", u.fds, u.threads, u.rssKiB)
}

func measure(pid int) usage {
	return usage{openFDs(pid), procStatus(pid, "Threads"), procStatus(pid, "VmRSS")}
}

// settle waits until the server's descriptors and threads are back to
// base (plus slack) and returns what it then uses.
func settle(t *testing.T, pid int, base usage, fdSlack int, threadSlack int64, d time.Duration) usage {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		u := measure(pid)
		if u.fds <= base.fds+fdSlack && u.threads <= base.threads+threadSlack {
			return u
		}
		if time.Now().After(deadline) {
			t.Errorf("server did not settle within %v: %v, baseline %v", d, u, base)
			return u
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func raiseNoFile(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// 20,000 short requests at concurrency 64 against -m 100: no errors, and
// the server's descriptors, threads and memory back to their baseline
// afterwards. The audit trail has every request's three records and
// verifies.
func TestLoadThroughput(t *testing.T) {
	needLoad(t)
	raiseNoFile(t)
	const total, workers = 20000, 64
	ts, tr := startAuditServerExtra(t, noCallerQuota, "-m", "100") // 64 clients of one uid
	pid := ts.Cmd.Process.Pid

	run := func(n int) (lat []time.Duration, errs []string, el time.Duration) {
		var next atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				var bad []string
				for {
					i := next.Add(1)
					if i > int64(n) {
						break
					}
					arg := strconv.FormatInt(i, 10)
					t0 := time.Now()
					got, err := roundTripErr(ts.Socket, request([]string{"echo", arg}, nil, true))
					mine = append(mine, time.Since(t0))
					if want := pairs("stdout", arg+"\n", "exitcode", "0"); err != nil || !bytes.Equal(got, want) {
						bad = append(bad, fmt.Sprintf("request %d: %q, %v", i, got, err))
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				errs = append(errs, bad...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return lat, errs, time.Since(start)
	}

	// Warm up at the same concurrency, so that the baseline includes what
	// the runtime keeps for it and a full decision cache (every request
	// differs, so each is a new entry: the run must not grow it further),
	// then let the lingering connections go.
	const warm = policy.DefaultCacheSize + 500
	if _, errs, _ := run(warm); len(errs) > 0 {
		t.Fatalf("warm-up: %d errors; first: %s", len(errs), errs[0])
	}
	time.Sleep(2 * time.Second)
	before := measure(pid)

	lat, errs, el := run(total)
	during := measure(pid)
	slices.Sort(lat)
	t.Logf("%d requests (echo), concurrency %d: %.0f requests/s, latency p50 %v, p90 %v, p99 %v, max %v",
		total, workers, float64(total)/el.Seconds(), percentile(lat, 0.50), percentile(lat, 0.90), percentile(lat, 0.99), lat[len(lat)-1])
	if len(errs) > 0 {
		t.Errorf("%d of %d requests failed; first: %s", len(errs), total, errs[0])
	}

	// Threads: the Go runtime keeps every thread it starts, and starts one
	// whenever all are blocked in system calls (the vfork of a spawn
	// blocks its thread), so the count reaches a high-water mark set by
	// how many requests happened to block at once, which varies from run
	// to run (measured: 1 to 6 more than after the warm-up). It is bounded
	// by the concurrency, not by the number of requests: a leak of one
	// thread per request, or per thousand, exceeds a quarter of the
	// concurrency.
	after := settle(t, pid, before, 2, workers/4, 15*time.Second)
	// Memory: the Go heap returns to the OS lazily; wait for the
	// scavenger, allowing a small slack.
	for deadline := time.Now().Add(20 * time.Second); after.rssKiB > before.rssKiB+8<<10 && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		after = measure(pid)
	}
	t.Logf("server before: %v; at the end of the run: %v; after settling: %v", before, during, after)
	if after.rssKiB > before.rssKiB+8<<10 {
		t.Errorf("server RSS %d KiB after the run, %d KiB before", after.rssKiB, before.rssKiB)
	}

	rep := tr.verify(t)
	data, err := os.ReadFile(tr.Path)
	if err != nil {
		t.Fatal(err)
	}
	ran := total + warm // the run and the warm-up
	for _, a := range []string{"exec.decision", "exec.start", "exec.exit"} {
		if n := bytes.Count(data, []byte(`"action":"`+a+`"`)); n != ran {
			t.Errorf("%d %s records, want %d", n, a, ran)
		}
	}
	t.Logf("audit trail: %d records, chain verified", rep.Records)
}

// 2,000 requests held at once (sleep 30, -m 2100): every one is running,
// the server still answers, and its memory per held connection is
// reported. When the clients hang up, every program goes and the server
// is back to its baseline of descriptors and threads.
func TestLoadHeldConnections(t *testing.T) {
	needLoad(t)
	raiseNoFile(t)
	const n = 2000
	// A listen backlog for the whole crowd: the clients connect faster
	// than a CPU-bound server (it is spawning) gets round to accepting.
	// And a longer policy evaluation timeout: it is wall-clock time, and
	// with 2,000 requests arriving at once on a small machine a few
	// evaluations (p99 under a millisecond) are descheduled for up to a
	// second or more; with the default 1 s they would be denied ("policy
	// evaluation timed out"), which is fail-closed and not what this test
	// measures. The evaluation times are reported.
	dir := shortTempDir(t)
	cfg, tr := auditConfig(t, dir, "[policy]\neval_timeout = \"10s\"\n"+noCallerQuota)
	ts := startServer(t, "-c", cfg, "-m", "2100", "-q", "2048", "-t", "120", "-k", "2")
	pid := ts.Cmd.Process.Pid
	ts.assertAlive(t)
	time.Sleep(1500 * time.Millisecond)
	base := measure(pid)

	conns := make([]net.Conn, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	start := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				c, err := net.Dial("unix", ts.Socket)
				for tries := 0; err != nil && errors.Is(err, syscall.EAGAIN) && tries < 100; tries++ {
					time.Sleep(10 * time.Millisecond) // backlog full: the server is busy spawning
					c, err = net.Dial("unix", ts.Socket)
				}
				if err != nil {
					if dialErrs.Add(1) == 1 {
						t.Logf("dial: %v", err)
					}
					continue
				}
				conns[i] = c
				c.Write(request([]string{"sleep", "30"}, nil, false))
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if dialErrs.Load() > 0 {
		t.Fatalf("%d connections could not be made", dialErrs.Load())
	}
	var running int
	lastLog := time.Now()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		running = len(childPids(pid))
		if running >= n {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			t.Logf("%v: %d programs running, server %v", time.Since(start).Round(time.Second), running, measure(pid))
		}
		if running < n && time.Since(start) > 20*time.Second || time.Now().After(deadline) {
			// Which clients got an answer (their request ended)?
			var ended []string
			for i, c := range conns {
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				var b [256]byte
				m, err := c.Read(b[:])
				if m > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
					ended = append(ended, fmt.Sprintf("#%d: %q %v", i, b[:m], err))
				}
			}
			t.Fatalf("only %d of %d programs running after %v; %d clients got an answer: %.2000s",
				running, n, time.Since(start), len(ended), strings.Join(ended, "; "))
		}
	}
	startup := time.Since(start)
	time.Sleep(time.Second)
	held := measure(pid)
	perConn := float64(held.rssKiB-base.rssKiB) / n
	t.Logf("%d requests held (sleep 30): all running after %v (%.0f spawns/s)", n, startup.Round(time.Millisecond), n/startup.Seconds())
	t.Logf("server baseline %v; holding %d: %v; per held connection: %.1f KiB RSS, %.2f fds, %.2f threads",
		base, n, held, perConn, float64(held.fds-base.fds)/n, float64(held.threads-base.threads)/n)
	evals := evalDurations(t, tr)
	t.Logf("policy evaluation while %d requests arrived at once: p50 %v, p99 %v, max %v",
		len(evals), percentile(evals, 0.5), percentile(evals, 0.99), evals[len(evals)-1])
	// Still answers (the limit is 2100).
	ts.assertAlive(t)
	// About 15-17 KiB measured here (these clients keep stdin open);
	// a thread or a few goroutines per request would be 35-100.
	if perConn > 64 {
		t.Errorf("%.1f KiB of server memory per held connection", perConn)
	}

	// Hang up: every program is killed, the server gives everything back.
	release := time.Now()
	for _, c := range conns {
		c.Close()
	}
	for deadline := time.Now().Add(30 * time.Second); len(childPids(pid)) > 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d programs still running 30 s after their clients hung up", len(childPids(pid)))
		}
	}
	gone := time.Since(release)
	// 2,000 programs ending at once make the server do blocking file
	// system calls (cgroup clean-up) concurrently; the Go runtime keeps
	// the few threads that took, so allow some slack over the baseline.
	// A thread per request kept (2,000) would still fail here.
	after := settle(t, pid, base, 2, 32, 30*time.Second)
	// Descriptors and threads come back (settle checked them); the memory
	// the runtime took for the peak stays mapped as a high-water mark
	// (it plateaus across repeated waves rather than growing).
	t.Logf("all %d programs gone %v after their clients hung up; server after settling: %v", n, gone.Round(time.Millisecond), after)
	ts.assertAlive(t)
}

// A burst of 500 connections at once against -m 50: at most 50 are
// served at a time, the others are closed at once (or refused by the
// kernel when the listen backlog is full), and nothing waits without
// bound.
func TestLoadConnectionBurst(t *testing.T) {
	needLoad(t)
	raiseNoFile(t)
	const n, limit = 500, 50
	ts, _ := startAuditServerExtra(t, noCallerQuota, "-m", strconv.Itoa(limit), "-t", "30")
	pid := ts.Cmd.Process.Pid
	ts.assertAlive(t)
	time.Sleep(1500 * time.Millisecond)
	base := measure(pid)

	// Watch the server: programs running, descriptors held.
	var maxChildren, maxFDs atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if c := int64(len(childPids(pid))); c > maxChildren.Load() {
				maxChildren.Store(c)
			}
			if f := int64(openFDs(pid)); f > maxFDs.Load() {
				maxFDs.Store(f)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	type result struct {
		kind string // served, closed, refused
		took time.Duration
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			c, err := net.Dial("unix", ts.Socket)
			if err != nil {
				if !errors.Is(err, syscall.EAGAIN) {
					t.Errorf("dial: %v", err)
				}
				results[i] = result{"refused", time.Since(t0)}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write(request([]string{"sh", "-c", "echo up; sleep 2"}, nil, true))
			d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
			typ, err := d.Decode(nil)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("rejected connection: %v", err)
				}
				results[i] = result{"closed", time.Since(t0)}
				return
			}
			data, _ := d.Decode(nil)
			if string(typ) != "stdout" || string(data) != "up\n" {
				t.Errorf("served connection got %q %q", typ, data)
			}
			typ, _ = d.Decode(nil)
			data, _ = d.Decode(nil)
			if string(typ) != "exitcode" || string(data) != "0" {
				t.Errorf("served connection ended with %q %q", typ, data)
			}
			results[i] = result{"served", time.Since(t0)}
		}()
	}
	close(gate)
	wg.Wait()
	close(stop)
	sampler.Wait()

	count := map[string]int{}
	var slowestClose time.Duration
	for _, r := range results {
		count[r.kind]++
		if r.kind == "closed" {
			slowestClose = max(slowestClose, r.took)
		}
	}
	t.Logf("burst of %d against -m %d: %d served, %d closed at once (slowest after %v), %d refused by the kernel (backlog full); "+
		"at most %d programs at a time, at most %d server fds (baseline %d)",
		n, limit, count["served"], count["closed"], slowestClose.Round(time.Millisecond), count["refused"], maxChildren.Load(), maxFDs.Load(), base.fds)
	if count["served"] > limit || count["served"] == 0 {
		t.Errorf("%d served, want at most %d", count["served"], limit)
	}
	// The served requests all run at once (each sleeps 2 s): the sampler
	// sees them, and never more than the limit.
	if maxChildren.Load() > limit || maxChildren.Load() < int64(count["served"])*9/10 {
		t.Errorf("%d programs ran at once for %d served, want at most %d", maxChildren.Load(), count["served"], limit)
	}
	if slowestClose > time.Second {
		t.Errorf("a connection over the limit was closed only after %v", slowestClose)
	}
	// Each served connection holds a handful of descriptors (socket,
	// pipes, pidfds, more while its program is being spawned); the
	// rejected ones hold nothing once closed, so the peak is bounded by
	// the limit, not by the burst.
	if maxFDs.Load() > int64(base.fds+limit*10+20) {
		t.Errorf("server held up to %d descriptors for %d connections served at once", maxFDs.Load(), limit)
	}
	ts.assertAlive(t)
	settle(t, pid, base, 2, 4, 10*time.Second)
}

// evalDurations returns the sorted evaluation times (event.duration) of
// the decision records in the trail.
func evalDurations(t *testing.T, tr *trail) []time.Duration {
	t.Helper()
	data, err := os.ReadFile(tr.Path)
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Duration
	for _, line := range bytes.Split(data, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"action":"exec.decision"`)) {
			continue
		}
		var r rec
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Duration(r.Num("event.duration")))
	}
	slices.Sort(out)
	if len(out) == 0 {
		t.Fatal("no decision records")
	}
	return out
}
