package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// loop runs n requests on c workers. Each worker calls newWorker once for
// its request function; a request returns its latency or an error. It
// returns the sorted latencies of the successful requests and the wall
// time.
func loop(ctx context.Context, n, c int, fail *failures, newWorker func() func(i int) (time.Duration, error)) ([]time.Duration, time.Duration) {
	c = min(c, n)
	lat := make([]time.Duration, n)
	ok := make([]bool, n)
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do := newWorker()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				d, err := do(i)
				if err != nil {
					mu.Lock()
					fail.add("request %d: %v", i+1, err)
					mu.Unlock()
					continue
				}
				lat[i], ok[i] = d, true
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	good := lat[:0]
	for i, d := range lat {
		if ok[i] {
			good = append(good, d)
		}
	}
	slices.Sort(good)
	return good, elapsed
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func latencyResult(cfg *Config, lat []time.Duration, elapsed time.Duration, fail *failures) *Result {
	r := &Result{
		Workload:    cfg.Workload,
		Requests:    cfg.Requests,
		Concurrency: min(cfg.Concurrency, cfg.Requests),
		Elapsed:     elapsed,
		P50:         percentile(lat, 50),
		P90:         percentile(lat, 90),
		P99:         percentile(lat, 99),
	}
	if len(lat) > 0 {
		r.Max = lat[len(lat)-1]
	}
	if elapsed > 0 {
		r.Rate = float64(len(lat)) / elapsed.Seconds()
	}
	fail.into(r)
	return r
}

// runSpawn: cfg.Requests requests of cfg.Argv through the server, each on
// its own connection, with the whole request (argv and the end of stdin)
// in one write.
func runSpawn(ctx context.Context, cfg *Config) (*Result, error) {
	req := encodeRequest(cfg.Argv, true)
	var fail failures
	lat, elapsed := loop(ctx, cfg.Requests, cfg.Concurrency, &fail, func() func(int) (time.Duration, error) {
		f := newFrames(bufio.NewReaderSize(nil, 64<<10))
		discard := func(int, []byte) {}
		return func(int) (time.Duration, error) {
			start := time.Now()
			c, err := dialUnix(ctx, cfg.Socket)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			defer context.AfterFunc(ctx, func() { c.Close() })()
			c.SetDeadline(start.Add(cfg.Timeout))
			if _, err := c.Write(req); err != nil {
				return 0, fmt.Errorf("sending request: %w", err)
			}
			f.reset(c)
			st, err := f.status(discard)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			if st.Signal != "" || st.Code != cfg.ExitCode {
				return 0, fmt.Errorf("%v, expected exit status %d", st, cfg.ExitCode)
			}
			if err := f.end(); err != nil {
				return 0, err
			}
			return d, nil
		}
	})
	return latencyResult(cfg, lat, elapsed, &fail), nil
}

// runBaseline: the Spawn loop without a server: os/exec with stdin,
// stdout and stderr all pipes, stdin closed at once, both outputs read to
// EOF concurrently, then Wait; the program gets the same clean
// environment a sockwarden gives it.
func runBaseline(ctx context.Context, cfg *Config) (*Result, error) {
	path, err := exec.LookPath(cfg.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	env := []string{"PATH=" + childPath}
	var fail failures
	lat, elapsed := loop(ctx, cfg.Requests, cfg.Concurrency, &fail, func() func(int) (time.Duration, error) {
		obuf := make([]byte, 32<<10)
		ebuf := make([]byte, 32<<10)
		return func(int) (time.Duration, error) {
			start := time.Now()
			st, err := spawnDirect(path, cfg.Argv, env, obuf, ebuf)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			if st.Signal != "" || st.Code != cfg.ExitCode {
				return 0, fmt.Errorf("%v, expected exit status %d", st, cfg.ExitCode)
			}
			return d, nil
		}
	})
	return latencyResult(cfg, lat, elapsed, &fail), nil
}

// spawnDirect runs one child with three pipes, reads its output to EOF
// and waits for it.
func spawnDirect(path string, argv, env []string, obuf, ebuf []byte) (Status, error) {
	var p [6]*os.File // stdin r/w, stdout r/w, stderr r/w
	defer func() {
		for _, f := range p {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			return Status{}, err
		}
		p[i], p[i+1] = r, w
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: "/", Stdin: p[0], Stdout: p[3], Stderr: p[5]}
	if err := cmd.Start(); err != nil {
		return Status{}, err
	}
	for _, i := range []int{0, 1, 3, 5} { // the child's ends, and EOF on its stdin
		p[i].Close()
		p[i] = nil
	}
	errDone := make(chan error, 1)
	go func() { errDone <- drain(p[4], ebuf) }()
	oerr := drain(p[2], obuf)
	eerr := <-errDone
	werr := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case oerr != nil:
		return Status{}, oerr
	case eerr != nil:
		return Status{}, eerr
	case werr == nil:
		return Status{}, nil
	case errors.As(werr, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return Status{Code: -1, Signal: strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")}, nil
		}
		return Status{Code: ee.ExitCode()}, nil
	default:
		return Status{}, werr
	}
}

func drain(r io.Reader, buf []byte) error {
	for {
		_, err := r.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
