package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// idleSettle is the pause between the last program starting and reading
// the server's figures, for its connection handlers to settle.
const idleSettle = 250 * time.Millisecond

// idlePoll is the interval of the cheap /proc polls, walkEvery the
// longest interval between two walks of the server's descendants.
const (
	idlePoll  = 10 * time.Millisecond
	walkEvery = 200 * time.Millisecond
)

// idleConn is one Idle connection and the goroutine watching it: any
// byte or EOF before the benchmark closes it means its program ended.
type idleConn struct {
	c      *net.UnixConn
	closed bool // closed by us, under idle.mu
}

type idle struct {
	mu    sync.Mutex
	conns []*idleConn
	fail  failures
}

// runIdle: Conns connections, each running cfg.Argv (a long sleep). Once
// every program runs under the server, read the server's figures; then
// close everything and time the clean-up.
func runIdle(ctx context.Context, cfg *Config) (*Result, error) {
	pid := cfg.ServerPID
	if pid == 0 {
		found, _, err := FindServerPID(cfg.Socket)
		if err != nil {
			return nil, fmt.Errorf("bench: finding the server's pid (set Config.ServerPID, -pid on the command line): %w", err)
		}
		pid = found
	}
	pc := newProgramCounter(pid, cfg.Argv[0])
	before, err := pc.running()
	if err != nil {
		return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
	}
	base, err := readProcStats(pid)
	if err != nil {
		return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
	}
	res := &Result{
		Workload: Idle, Conns: cfg.Conns, Concurrency: min(cfg.Concurrency, cfg.Conns), PID: pid,
		RSSBaseKiB: base.RSSKiB, FDsBase: base.FDs, ThreadsBase: base.Threads,
	}
	id := &idle{}
	defer id.closeAll()

	// Open the connections, Concurrency at a time.
	req := encodeRequest(cfg.Argv, true)
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range res.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id.open(ctx, cfg.Socket, req, i)
			}
		}()
	}
	for i := range cfg.Conns {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Wait until every program runs (those of connections that failed
	// never will).
	failedConns := func() int {
		id.mu.Lock()
		defer id.mu.Unlock()
		return id.fail.n
	}
	running, err := pc.waitFor(ctx, start.Add(cfg.Timeout), before,
		func(n int) int { return max(cfg.Conns-failedConns()-n, 1) },
		func(n int) bool { return n+failedConns() >= cfg.Conns })
	if err != nil {
		return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
	}
	res.StartTime = time.Since(start)
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return nil, err
	}
	st, err := readProcStats(pid)
	if err != nil {
		return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
	}
	res.RSSKiB, res.FDs, res.Threads = st.RSSKiB, st.FDs, st.Threads
	res.KiBPerConn = float64(st.RSSKiB-base.RSSKiB) / float64(cfg.Conns)
	res.FDsPerConn = float64(st.FDs-base.FDs) / float64(cfg.Conns)
	res.Elapsed = time.Since(start)

	// Every connection must still be open with its program running.
	id.mu.Lock()
	if missing := cfg.Conns - id.fail.n - running; missing > 0 {
		id.fail.add("%d of %d programs not seen running under pid %d after %v", missing, cfg.Conns, pid, cfg.Timeout.Round(time.Millisecond))
		id.fail.n += missing - 1
	}
	id.mu.Unlock()

	// Close everything; the server must kill every program.
	closed := time.Now()
	id.closeAll()
	left, err := pc.waitFor(ctx, closed.Add(cfg.Timeout), before,
		func(n int) int { return max(n, 1) },
		func(n int) bool { return n == 0 })
	if err != nil {
		return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
	}
	res.CloseTime = time.Since(closed)
	id.mu.Lock()
	if left > 0 {
		id.fail.add("%d programs still running %v after their connections closed", left, cfg.Timeout.Round(time.Millisecond))
		id.fail.n += left - 1
	}
	id.fail.into(res)
	id.mu.Unlock()

	// The server's files go back to the base once its handlers return.
	for end := time.Now().Add(2 * time.Second); ; {
		st, err = readProcStats(pid)
		if err != nil || st.FDs <= base.FDs || time.Now().After(end) {
			break
		}
		time.Sleep(idlePoll)
	}
	res.RSSAfterKiB, res.FDsAfter, res.ThreadsAfter = st.RSSKiB, st.FDs, st.Threads
	return res, nil
}

// open connects, sends the request and starts the watcher.
func (id *idle) open(ctx context.Context, socket string, req []byte, i int) {
	c, err := dialUnix(ctx, socket)
	if err == nil {
		if _, err = c.Write(req); err != nil {
			c.Close()
		}
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	if err != nil {
		id.fail.add("connection %d: %v", i+1, err)
		return
	}
	ic := &idleConn{c: c}
	id.conns = append(id.conns, ic)
	go id.watch(ic, i)
}

// watch reads from an idle connection until it is closed; anything the
// server sends before that is a failure.
func (id *idle) watch(ic *idleConn, i int) {
	var buf [256]byte
	n, err := ic.c.Read(buf[:])
	id.mu.Lock()
	defer id.mu.Unlock()
	if ic.closed {
		return
	}
	switch {
	case n > 0:
		id.fail.add("connection %d: the server replied while the program should run: %q", i+1, buf[:n])
	case errors.Is(err, net.ErrClosed):
		return
	default:
		id.fail.add("connection %d: closed by the server before the benchmark closed it (%v)", i+1, err)
	}
}

func (id *idle) closeAll() {
	id.mu.Lock()
	defer id.mu.Unlock()
	for _, ic := range id.conns {
		if !ic.closed {
			ic.closed = true
			ic.c.Close()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
