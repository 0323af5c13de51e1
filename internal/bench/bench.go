// Package bench is a load generator for any server speaking the sockexec
// protocol (sockexec itself, sockwarden), and a reference measurement of
// the same work done without a server.
//
// Each [Workload] measures one thing and verifies every reply, so a fast
// but wrong server cannot win:
//
//   - [Spawn]: N requests of an argv (default /bin/true) at concurrency C;
//     requests per second, latency percentiles, and every exit status
//     checked against the expected one.
//   - [Echo]: one cat; S bytes of stdin sent in 64 KiB netstrings while
//     the output is read concurrently and compared byte for byte with
//     what was sent; MiB/s.
//   - [Flood]: head -c S /dev/zero; MiB/s, the output checked to be
//     exactly S zero bytes.
//   - [Idle]: K connections each running a long sleep; once every sleep
//     is seen running under the server, the server's RSS, open files and
//     threads per connection, read from /proc; then every connection is
//     closed and the time until the server has killed the sleeps.
//   - [Baseline]: the Spawn loop done directly with os/exec, with three
//     pipes per child read to EOF: the physical limit of the machine, the
//     figure a server's spawn rate is compared to.
//
// The client side is built not to be the bottleneck: it reuses buffers,
// hands output to the verifier as slices of a large read buffer (no copy),
// verifies with memcmp-speed comparisons, and batches stdin netstrings
// into one writev. It never half-closes a connection: sockexec and
// sockwarden treat a half-close as a disconnect and kill the program.
//
// [Run] performs one run and returns a [Result]; [Result.Fields] gives the
// figures in a fixed order for key=value or JSON output, and [Median]
// combines repeated runs.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Workload names a kind of run.
type Workload string

// The workloads.
const (
	Spawn    Workload = "spawn"
	Echo     Workload = "echo"
	Flood    Workload = "flood"
	Idle     Workload = "idle"
	Baseline Workload = "baseline"
)

// Workloads lists every workload, in the order of the usage text.
var Workloads = []Workload{Spawn, Echo, Flood, Idle, Baseline}

// Defaults of [Config].
const (
	DefaultRequests    = 2000
	DefaultConcurrency = 8
	DefaultEchoSize    = 256 << 20
	DefaultFloodSize   = 1 << 30
	DefaultConns       = 100
	DefaultTimeout     = 60 * time.Second
	// ChunkSize is the size of the stdin netstrings of the Echo workload.
	ChunkSize = 64 << 10
	// MaxFailures is how many failure descriptions a Result keeps.
	MaxFailures = 5
)

// DefaultSpawnArgv is the program of Spawn and Baseline runs.
var DefaultSpawnArgv = []string{"/bin/true"}

// DefaultIdleArgv is the program each Idle connection runs.
var DefaultIdleArgv = []string{"sleep", "600"}

// childPath is the PATH of Baseline children: the one a sockwarden gives
// its children, so both runs resolve and execute the same way.
const childPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config describes one run. The zero value of a field means its default.
type Config struct {
	// Workload is what to run.
	Workload Workload
	// Socket is the server's UNIX socket (unused by Baseline).
	Socket string
	// Requests is the number of requests of Spawn and Baseline.
	Requests int
	// Concurrency is the number of requests in flight (Spawn, Baseline),
	// or of connections being opened at once (Idle).
	Concurrency int
	// Size is the number of bytes sent (Echo) or requested (Flood).
	Size int64
	// Conns is the number of Idle connections.
	Conns int
	// Argv is the program of Spawn, Baseline and Idle runs; Echo always
	// runs cat and Flood head.
	Argv []string
	// ExitCode is the exit status every Spawn and Baseline request must
	// end with.
	ExitCode int
	// ServerPID is the server process measured by Idle; 0 means find it
	// from the socket with [FindServerPID]. Spawn, Echo and Flood runs
	// given a ServerPID also measure the CPU time the server process
	// spent over the run (Result.ServerCPU).
	ServerPID int
	// Timeout bounds each request's I/O (Spawn, Echo, Flood), and the
	// wait for the Idle programs to start and to be killed.
	Timeout time.Duration
}

// withDefaults returns c with its zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Requests <= 0 {
		c.Requests = DefaultRequests
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Size <= 0 {
		switch c.Workload {
		case Echo:
			c.Size = DefaultEchoSize
		case Flood:
			c.Size = DefaultFloodSize
		}
	}
	if c.Conns <= 0 {
		c.Conns = DefaultConns
	}
	if len(c.Argv) == 0 {
		switch c.Workload {
		case Idle:
			c.Argv = DefaultIdleArgv
		case Spawn, Baseline:
			c.Argv = DefaultSpawnArgv
		}
	}
	c.Argv = slices.Clone(c.Argv)
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// validate reports a configuration that cannot run.
func (c *Config) validate() error {
	if !slices.Contains(Workloads, c.Workload) {
		return fmt.Errorf("bench: unknown workload %q", c.Workload)
	}
	if c.Workload != Baseline {
		if c.Socket == "" {
			return fmt.Errorf("bench: %s needs a socket", c.Workload)
		}
		fi, err := os.Stat(c.Socket)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("bench: %s is not a socket", c.Socket)
		}
	}
	if len(c.Argv) > 0 && c.Argv[0] == "" {
		return errors.New("bench: empty program name")
	}
	return nil
}

// Result is the outcome of one run. Which figures are set depends on the
// workload; [Result.Fields] lists those that apply.
type Result struct {
	Workload Workload
	// Requests, Concurrency: Spawn and Baseline; Concurrency also Idle.
	Requests, Concurrency int
	// Size is the byte count of Echo and Flood.
	Size int64
	// Conns is the number of Idle connections.
	Conns int
	// Elapsed is the wall time of the measured part of the run.
	Elapsed time.Duration

	// Rate is successful requests per second (Spawn, Baseline).
	Rate float64
	// Latency percentiles of the successful requests, from before the
	// connect (or fork) to the final status (Spawn, Baseline).
	P50, P90, P99, Max time.Duration

	// MiBps is the verified throughput of Echo and Flood.
	MiBps float64

	// Idle figures: the server's pid, and its resident memory (KiB), open
	// file descriptors and threads before the connections were opened
	// (Base), once every program ran, and after all were closed (After).
	PID                                int
	RSSBaseKiB, RSSKiB, RSSAfterKiB    int64
	FDsBase, FDs, FDsAfter             int
	ThreadsBase, Threads, ThreadsAfter int
	// KiBPerConn and FDsPerConn are (running - base) / Conns.
	KiBPerConn, FDsPerConn float64
	// StartTime is from the first connect until every program ran;
	// CloseTime from closing the connections until every program was gone.
	StartTime, CloseTime time.Duration

	// ServerCPU is the CPU time (user and system, all its threads) the
	// server process spent during a Spawn, Echo or Flood run given a
	// ServerPID; 0 otherwise. Its children's time is not in it.
	ServerCPU time.Duration

	// Errors counts failed requests (or, for Idle, connections whose
	// program did not run, ended early, or outlived the close).
	Errors int
	// Failures describes the first MaxFailures errors.
	Failures []string
}

// Run performs one run of cfg.Workload and returns its result. An error
// means the run could not be performed (bad configuration, no server
// pid, ctx canceled); failed requests are counted in Result.Errors.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var res *Result
	var err error
	var cpu0 time.Duration
	measureCPU := cfg.ServerPID > 0 && cfg.Workload != Idle && cfg.Workload != Baseline
	if measureCPU {
		if cpu0, err = processCPU(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", cfg.ServerPID, err)
		}
	}
	switch cfg.Workload {
	case Spawn:
		res, err = runSpawn(ctx, &cfg)
	case Baseline:
		res, err = runBaseline(ctx, &cfg)
	case Echo:
		res, err = runEcho(ctx, &cfg)
	case Flood:
		res, err = runFlood(ctx, &cfg)
	case Idle:
		res, err = runIdle(ctx, &cfg)
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil && measureCPU {
		cpu1, cerr := processCPU(cfg.ServerPID)
		if cerr != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", cfg.ServerPID, cerr)
		}
		res.ServerCPU = cpu1 - cpu0
	}
	return res, err
}

// failures counts errors and keeps the first few descriptions. It is not
// safe for concurrent use; concurrent workloads guard it with a mutex.
type failures struct {
	n    int
	msgs []string
}

func (f *failures) add(format string, args ...any) {
	f.n++
	if len(f.msgs) < MaxFailures {
		f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
	}
}

func (f *failures) into(r *Result) {
	r.Errors = f.n
	r.Failures = f.msgs
}
