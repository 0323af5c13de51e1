package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sockwarden/sockwarden/internal/bench"
)

const benchUsage = `Usage: sockwarden bench [flags] WORKLOAD [flags] [-- argv...]

A load generator for any sockexec-protocol server (sockexec, sockwarden).
Every reply is verified; a request whose reply is wrong counts as an error.

Workloads:
  spawn     -n requests of argv (default /bin/true), -c at a time, one
            connection each: requests/s of the successful ones and their
            latency percentiles; every exit status must be -exit
  echo      one cat, fed -size bytes (default 256MiB) in 64 KiB netstrings
            while its output is read and compared with what was sent: MiB/s
  flood     head -c SIZE /dev/zero (-size, default 1GiB); the output must be
            exactly SIZE zero bytes: MiB/s
  idle      -k connections each running argv (default: sleep 600); once all
            are seen running under the server (its pid from -pid, or found
            from the socket through /proc), the server's RSS, open files and
            threads, in total and per connection; then all are closed and
            every program must be gone within -timeout
  baseline  the spawn loop with no server: os/exec, stdin, stdout and stderr
            all pipes, read to EOF, then wait: the machine's limit (-socket
            not needed)

Flags:
  -socket PATH  the server's socket (all workloads but baseline)
  -n N          requests of spawn and baseline (default %d)
  -c N          concurrency of spawn and baseline; idle opens this many
                connections at a time (default %d)
  -size SIZE    bytes of echo and flood: a number of MiB, or with a unit
                B, KiB, MiB, GiB (K, M, G; all powers of 1024)
  -k N          connections of idle (default %d)
  -argv "PROG ARGS"  the program of spawn, baseline and idle, split at
                spaces; or give it after --
  -exit N       the exit status spawn and baseline expect (default 0)
  -pid PID      the server process idle measures; spawn, echo and flood
                given it also report the CPU time it spent (user and
                system, its children's not included)
  -repeat R     run R times; print each run and a final run=median line
                (the median of each figure; errors is the total) (default 1)
  -timeout D    per-request I/O limit; for idle, the wait for the programs
                to start and to be killed (default %v)
  -json         print JSON objects instead of key=value lines

idle needs a server that admits -k connections at once (sockwarden -m), a
file limit (ulimit -n) for them on both sides, and read access to the
server's /proc entries (root, or the server's user). Its per-connection
figures are growth over the base: run it against a freshly started server,
as one that has served earlier loads may reuse memory it kept from them.

Output: one line per run of space-separated key=value pairs, e.g.
  workload=spawn n=2000 c=8 rps=1234.5 p50_ms=6.104 p90_ms=7.921 p99_ms=11.030 max_ms=15.200 elapsed_s=1.621 errors=0
with run=I after the workload when -repeat is above 1. The keys:
  spawn, baseline  n c rps p50_ms p90_ms p99_ms max_ms [server_cpu_us]
                   elapsed_s errors
  echo, flood      bytes mib_s [server_cpu_s] elapsed_s errors
  idle             k c pid start_s rss_base_kib rss_kib kib_per_conn fds_base
                   fds fds_per_conn threads_base threads close_ms
                   rss_after_kib fds_after threads_after errors
("base": the server before the connections; "after": once all were closed;
server_cpu_us: the server's CPU time per request, with -pid; server_cpu_s:
its CPU time over the run, with -pid.)
The first failures of a run are described on stderr.

Exit status: 0 if no request failed, 1 if any failed verification or a run
could not be performed, 2 on a usage error.
`

// runBench implements "sockwarden bench".
func runBench(args []string, stdout, stderr io.Writer) int {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, benchUsage, bench.DefaultRequests, bench.DefaultConcurrency, bench.DefaultConns, bench.DefaultTimeout)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sockwarden bench: "+format+"\n", a...)
		fmt.Fprintln(stderr, `Run "sockwarden bench -h" for usage.`)
		return 2
	}
	fs := flag.NewFlagSet("sockwarden bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	socket := fs.String("socket", "", "")
	n := fs.Int("n", bench.DefaultRequests, "")
	c := fs.Int("c", bench.DefaultConcurrency, "")
	size := fs.String("size", "", "")
	k := fs.Int("k", bench.DefaultConns, "")
	argvFlag := fs.String("argv", "", "")
	exitCode := fs.Int("exit", 0, "")
	pid := fs.Int("pid", 0, "")
	repeat := fs.Int("repeat", 1, "")
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "")
	jsonOut := fs.Bool("json", false, "")

	// The workload may come before, between or after the flags; argv
	// follows "--".
	var workload string
	var argv []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage(stdout)
				return 0
			}
			fmt.Fprintln(stderr, `Run "sockwarden bench -h" for usage.`)
			return 2
		}
		consumed := len(rest) - fs.NArg()
		dashdash := consumed > 0 && rest[consumed-1] == "--"
		rest = fs.Args()
		if dashdash {
			argv = rest
			break
		}
		if len(rest) == 0 {
			break
		}
		if workload != "" {
			return usageErr("unexpected argument %q (the program goes after --)", rest[0])
		}
		workload, rest = rest[0], rest[1:]
	}
	if workload == "help" {
		usage(stdout)
		return 0
	}
	if workload == "" {
		return usageErr("no workload given (spawn, echo, flood, idle or baseline)")
	}
	cfg := bench.Config{
		Workload:    bench.Workload(workload),
		Socket:      *socket,
		Requests:    *n,
		Concurrency: *c,
		Conns:       *k,
		ExitCode:    *exitCode,
		ServerPID:   *pid,
		Timeout:     *timeout,
	}
	switch cfg.Workload {
	case bench.Spawn, bench.Echo, bench.Flood, bench.Idle, bench.Baseline:
	default:
		return usageErr("unknown workload %q (spawn, echo, flood, idle or baseline)", workload)
	}
	if *argvFlag != "" {
		if argv != nil {
			return usageErr("give the program with -argv or after --, not both")
		}
		argv = strings.Fields(*argvFlag)
	}
	if argv != nil {
		if len(argv) == 0 || argv[0] == "" {
			return usageErr("empty program")
		}
		if cfg.Workload == bench.Echo || cfg.Workload == bench.Flood {
			return usageErr("%s runs a fixed program; -argv and -- do not apply", workload)
		}
		cfg.Argv = argv
	}
	if *size != "" {
		if cfg.Workload != bench.Echo && cfg.Workload != bench.Flood {
			return usageErr("-size applies to echo and flood only")
		}
		b, err := parseBenchSize(*size)
		if err != nil {
			return usageErr("-size: %v", err)
		}
		cfg.Size = b
	}
	switch {
	case cfg.Workload != bench.Baseline && cfg.Socket == "":
		return usageErr("%s needs -socket", workload)
	case *n <= 0 || *c <= 0 || *k <= 0 || *repeat <= 0:
		return usageErr("-n, -c, -k and -repeat must be positive")
	case *timeout <= 0:
		return usageErr("-timeout must be positive")
	case *pid < 0:
		return usageErr("-pid must be positive")
	case *exitCode < 0 || *exitCode > 255:
		return usageErr("-exit must be in 0..255")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	emit := func(fs bench.Fields) {
		if *jsonOut {
			fmt.Fprintln(stdout, fs.JSON())
		} else {
			fmt.Fprintln(stdout, fs.Text())
		}
	}
	status := 0
	var results []*bench.Result
	for i := 1; i <= *repeat; i++ {
		res, err := bench.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintf(stderr, "sockwarden bench: %s: %v\n", workload, err)
			return 1
		}
		results = append(results, res)
		fields := res.Fields()
		if *repeat > 1 {
			fields = fields.Insert(bench.Num("run", float64(i), 0))
		}
		emit(fields)
		if res.Errors > 0 {
			status = 1
			for _, f := range res.Failures {
				fmt.Fprintf(stderr, "sockwarden bench: %s run %d: %s\n", workload, i, f)
			}
			if more := res.Errors - len(res.Failures); more > 0 {
				fmt.Fprintf(stderr, "sockwarden bench: %s run %d: ... %d more errors\n", workload, i, more)
			}
		}
	}
	if *repeat > 1 {
		emit(bench.Median(results).Insert(bench.Str("run", "median")))
	}
	return status
}

// parseBenchSize parses -size: a number of MiB, or a number with a unit
// B, K/KiB, M/MiB or G/GiB (powers of 1024).
func parseBenchSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, "MiB"
	if i >= 0 {
		num, unit = s[:i], s[i:]
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	var mul float64
	switch strings.ToLower(unit) {
	case "b":
		mul = 1
	case "k", "kib":
		mul = 1 << 10
	case "m", "mib":
		mul = 1 << 20
	case "g", "gib":
		mul = 1 << 30
	default:
		return 0, fmt.Errorf("unknown unit %q in %q (B, KiB, MiB, GiB)", unit, s)
	}
	b := int64(v * mul)
	if b <= 0 || v*mul > 1<<50 {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return b, nil
}
