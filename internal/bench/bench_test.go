package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hung is set when a run had to be canceled: the server under test does
// not answer, and further runs against it would only wait as long.
var hung atomic.Bool

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			hung.Store(true)
		}
		t.Fatalf("Run(%s): %v", cfg.Workload, err)
	}
	return res
}

// floodReply answers head -c N /dev/zero with N bytes made by mutate.
func floodReply(mutate func([]byte) []byte, tail ...string) func(*fakeReq, io.Writer) {
	return func(r *fakeReq, w io.Writer) {
		n, _ := strconv.Atoi(r.argv[2])
		writeOut(w, mutate(make([]byte, n)))
		w.Write(pair(tail...))
	}
}

// echoReply echoes stdin, chunk by chunk, through mutate (which gets the
// chunk's index and returns what to send for it).
func echoReply(mutate func(i int, b []byte) []byte) func(*fakeReq, io.Writer) {
	return func(r *fakeReq, w io.Writer) {
		i := 0
		var held []byte
		r.stdinChunks(func(b []byte) {
			out := mutate(i, append([]byte(nil), b...))
			if i == 2 && held == nil && out == nil { // swap: hold chunk 2
				held = append([]byte(nil), b...)
			} else {
				writeOut(w, out)
				if held != nil {
					writeOut(w, held)
					held = nil
				}
			}
			i++
		})
		w.Write(pair("exitcode", "0"))
	}
}

func same(b []byte) []byte { return b }

// TestVerificationCatchesBadServers runs each workload against fake
// servers that answer correctly, then subtly wrongly: every wrong answer
// must be counted as an error.
func TestVerificationCatchesBadServers(t *testing.T) {
	const floodSize = 200<<10 + 3
	const echoSize = 5*ChunkSize + 100
	tests := []struct {
		name    string
		cfg     Config
		handle  func(*fakeReq, io.Writer)
		errors  int    // -1: any number > 0
		message string // in the first failure
	}{
		{"spawn ok", Config{Workload: Spawn, Requests: 10}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("stdout", "x", "stderr", "y", "exitcode", "0"))
		}, 0, ""},
		{"spawn expected status", Config{Workload: Spawn, Requests: 5, ExitCode: 3}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("exitcode", "3"))
		}, 0, ""},
		{"spawn wrong status", Config{Workload: Spawn, Requests: 10}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("exitcode", "1"))
		}, 10, "exit status 1, expected exit status 0"},
		{"spawn one wrong status", Config{Workload: Spawn, Requests: 10, Concurrency: 1}, func() func(*fakeReq, io.Writer) {
			n := 0
			return func(r *fakeReq, w io.Writer) {
				n++
				code := "0"
				if n == 7 {
					code = "2"
				}
				w.Write(pair("exitcode", code))
			}
		}(), 1, "request 7: exit status 2"},
		{"spawn killed", Config{Workload: Spawn, Requests: 3}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("termsig", "KILL"))
		}, 3, "killed by SIGKILL"},
		{"spawn no status", Config{Workload: Spawn, Requests: 3}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("stdout", "partial"))
		}, 3, "without an exit status"},
		{"spawn truncated pair", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write([]byte("6:stdout,10:abc"))
		}, 2, "unexpected EOF"},
		{"spawn missing comma", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write([]byte("6:stdout,3:abc;8:exitcode,1:0,"))
		}, 2, "expected ','"},
		{"spawn leading zero", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write([]byte("8:exitcode,01:0,"))
		}, 2, "leading zero"},
		{"spawn unknown type", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("status", "0", "exitcode", "0"))
		}, 2, `unknown reply type "status"`},
		{"spawn bad exit code", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("exitcode", "-1"))
		}, 2, "bad exit code"},
		{"spawn data after final pair", Config{Workload: Spawn, Requests: 2}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("exitcode", "0", "exitcode", "0"))
		}, 2, "after the final pair"},

		{"flood ok", Config{Workload: Flood, Size: floodSize}, floodReply(same, "exitcode", "0"), 0, ""},
		{"flood wrong byte", Config{Workload: Flood, Size: floodSize}, floodReply(func(b []byte) []byte {
			b[123457] = 1
			return b
		}, "exitcode", "0"), 1, "wrong stdout byte at offset 123457"},
		{"flood last byte", Config{Workload: Flood, Size: floodSize}, floodReply(func(b []byte) []byte {
			b[len(b)-1] = 0x80
			return b
		}, "exitcode", "0"), 1, "wrong stdout byte at offset " + strconv.Itoa(floodSize-1)},
		{"flood short", Config{Workload: Flood, Size: floodSize}, floodReply(func(b []byte) []byte {
			return b[1:]
		}, "exitcode", "0"), 1, "stdout has 204802 bytes, expected 204803"},
		{"flood long", Config{Workload: Flood, Size: floodSize}, floodReply(func(b []byte) []byte {
			return append(b, 0)
		}, "exitcode", "0"), 1, "expected 204803"},
		{"flood stderr", Config{Workload: Flood, Size: floodSize}, floodReply(same, "stderr", "head: oops\n", "exitcode", "0"), 1, "stderr"},
		{"flood exit status", Config{Workload: Flood, Size: floodSize}, floodReply(same, "exitcode", "1"), 1, "exit status 1"},

		{"echo ok", Config{Workload: Echo, Size: echoSize}, echoReply(func(_ int, b []byte) []byte { return b }), 0, ""},
		{"echo flipped byte", Config{Workload: Echo, Size: echoSize}, echoReply(func(i int, b []byte) []byte {
			if i == 3 {
				b[10] ^= 0x20
			}
			return b
		}), 1, "wrong stdout byte at offset " + strconv.Itoa(3*ChunkSize+10)},
		{"echo dropped chunk", Config{Workload: Echo, Size: echoSize}, echoReply(func(i int, b []byte) []byte {
			if i == 1 {
				return []byte{}
			}
			return b
		}), 1, "wrong stdout byte"},
		{"echo swapped chunks", Config{Workload: Echo, Size: echoSize}, echoReply(func(i int, b []byte) []byte {
			if i == 2 {
				return nil // held, sent after chunk 3
			}
			return b
		}), 1, "wrong stdout byte at offset " + strconv.Itoa(2*ChunkSize)},
		{"echo truncated", Config{Workload: Echo, Size: echoSize}, echoReply(func(i int, b []byte) []byte {
			if i == 5 {
				return b[:50]
			}
			return b
		}), 1, "expected " + strconv.Itoa(echoSize)},
		{"echo stdin cut short", Config{Workload: Echo, Size: 64 << 20}, func(r *fakeReq, w io.Writer) {
			// Echo two chunks, then end the request without reading on,
			// as a server that caps stdin does.
			var out [][]byte
			for range 2 {
				b, _ := r.dec.Decode(nil)
				out = append(out, b)
			}
			for _, b := range out {
				writeOut(w, b)
			}
			w.Write(pair("exitcode", "0"))
			w.(interface{ Flush() error }).Flush()
			time.Sleep(300 * time.Millisecond) // the client reads the reply while its stdin is blocked
		}, 1, "the reply ended before all stdin was sent"},

		{"idle server replies", Config{Workload: Idle, Conns: 4, ServerPID: os.Getpid(), Timeout: 300 * time.Millisecond}, func(r *fakeReq, w io.Writer) {
			w.Write(pair("exitcode", "0"))
		}, 4, "the server replied while the program should run"},
		{"idle nothing runs", Config{Workload: Idle, Conns: 3, ServerPID: os.Getpid(), Timeout: 300 * time.Millisecond}, func(r *fakeReq, w io.Writer) {
			waitClose(r) // hold the connection, start nothing
		}, 3, "3 of 3 programs not seen running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Socket = startFake(t, tt.handle)
			res := run(t, cfg)
			switch {
			case tt.errors == 0 && res.Errors != 0:
				t.Fatalf("errors = %d, want 0: %q", res.Errors, res.Failures)
			case tt.errors > 0 && res.Errors != tt.errors:
				t.Fatalf("errors = %d, want %d: %q", res.Errors, tt.errors, res.Failures)
			}
			if tt.message != "" && (len(res.Failures) == 0 || !strings.Contains(res.Failures[0], tt.message)) {
				t.Fatalf("failures = %q, want the first to contain %q", res.Failures, tt.message)
			}
			if len(res.Failures) > MaxFailures {
				t.Errorf("%d failures kept, want at most %d", len(res.Failures), MaxFailures)
			}
			if tt.errors != 0 && (cfg.Workload == Echo || cfg.Workload == Flood) && res.MiBps != 0 {
				t.Errorf("a failed %s run reports %.1f MiB/s", cfg.Workload, res.MiBps)
			}
		})
	}
}

// TestRealServer runs every workload against the real server package.
func TestRealServer(t *testing.T) {
	sock := startServer(t)
	tests := []struct {
		name   string
		cfg    Config
		errors int
		check  func(t *testing.T, r *Result)
	}{
		{"spawn true", Config{Workload: Spawn, Requests: 40, Concurrency: 4}, 0, func(t *testing.T, r *Result) {
			if r.Rate <= 0 || r.P50 <= 0 || r.P50 > r.P90 || r.P90 > r.P99 || r.P99 > r.Max {
				t.Errorf("implausible figures: %+v", r)
			}
		}},
		{"spawn false expected", Config{Workload: Spawn, Requests: 8, Argv: []string{"false"}, ExitCode: 1}, 0, nil},
		{"spawn false unexpected", Config{Workload: Spawn, Requests: 8, Argv: []string{"false"}}, 8, nil},
		{"spawn missing program", Config{Workload: Spawn, Requests: 4, Argv: []string{"/nonexistent/prog"}}, 4, nil},
		{"spawn with output", Config{Workload: Spawn, Requests: 6, Argv: []string{"sh", "-c", "seq 20000; echo err >&2"}}, 0, nil},
		{"flood", Config{Workload: Flood, Size: 8<<20 + 7}, 0, func(t *testing.T, r *Result) {
			if r.MiBps <= 0 {
				t.Errorf("mib_s = %v", r.MiBps)
			}
		}},
		{"echo", Config{Workload: Echo, Size: 6<<20 + 12345}, 0, func(t *testing.T, r *Result) {
			if r.MiBps <= 0 {
				t.Errorf("mib_s = %v", r.MiBps)
			}
		}},
		{"idle", Config{Workload: Idle, Conns: 12, Concurrency: 4, Timeout: 15 * time.Second}, 0, func(t *testing.T, r *Result) {
			if r.PID != os.Getpid() {
				t.Errorf("pid = %d, want this process, %d", r.PID, os.Getpid())
			}
			// At least the connection and the child's three pipes.
			if r.FDsPerConn < 2 || r.FDs <= r.FDsBase {
				t.Errorf("fds_per_conn = %v (fds %d, base %d)", r.FDsPerConn, r.FDs, r.FDsBase)
			}
			if r.RSSKiB <= 0 || r.CloseTime <= 0 || r.StartTime <= 0 {
				t.Errorf("implausible figures: %+v", r)
			}
		}},
	}
	for _, tt := range tests {
		if hung.Load() {
			t.Fatal("the server stopped answering; skipping the remaining runs")
		}
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Socket = sock
			res := run(t, cfg)
			if res.Errors != tt.errors {
				t.Fatalf("errors = %d, want %d: %q", res.Errors, tt.errors, res.Failures)
			}
			if tt.check != nil {
				tt.check(t, res)
			}
		})
	}
}

func TestBaseline(t *testing.T) {
	tests := []struct {
		cfg    Config
		errors int
	}{
		{Config{Workload: Baseline, Requests: 20, Concurrency: 3}, 0},
		{Config{Workload: Baseline, Requests: 5, Argv: []string{"sh", "-c", "exit 7"}, ExitCode: 7}, 0},
		{Config{Workload: Baseline, Requests: 5, Argv: []string{"sh", "-c", "seq 50000; seq 50000 >&2"}}, 0},
		{Config{Workload: Baseline, Requests: 5, ExitCode: 1}, 5},
		{Config{Workload: Baseline, Requests: 3, Argv: []string{"sh", "-c", "kill -TERM $$"}}, 3},
	}
	for _, tt := range tests {
		res := run(t, tt.cfg)
		if res.Errors != tt.errors {
			t.Errorf("%v: errors = %d, want %d: %q", tt.cfg.Argv, res.Errors, tt.errors, res.Failures)
		}
		if tt.errors == 0 && res.Rate <= 0 {
			t.Errorf("%v: rps = %v", tt.cfg.Argv, res.Rate)
		}
	}
	res := run(t, Config{Workload: Baseline, Requests: 1, Argv: []string{"sh", "-c", "kill -TERM $$"}})
	if len(res.Failures) != 1 || !strings.Contains(res.Failures[0], "killed by SIGTERM") {
		t.Errorf("failures = %q", res.Failures)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := shortDir(t)
	file := dir + "/plain"
	os.WriteFile(file, nil, 0o600)
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Workload: "fork"}, "unknown workload"},
		{Config{Workload: Spawn}, "needs a socket"},
		{Config{Workload: Spawn, Socket: dir + "/missing"}, "no such file"},
		{Config{Workload: Flood, Socket: file}, "not a socket"},
		{Config{Workload: Baseline, Argv: []string{""}}, "empty program"},
		{Config{Workload: Baseline, Argv: []string{"/nonexistent/x"}}, "no such file"},
	}
	for _, tt := range tests {
		_, err := Run(context.Background(), tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%+v) = %v, want an error containing %q", tt.cfg, err, tt.want)
		}
	}
}

func TestRunCanceled(t *testing.T) {
	sock := startFake(t, func(r *fakeReq, w io.Writer) { waitClose(r) })
	for _, w := range []Workload{Spawn, Echo, Flood, Idle} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := Run(ctx, Config{Workload: w, Socket: sock, Requests: 10, Size: 1 << 20, Conns: 3, ServerPID: os.Getpid()})
		cancel()
		if err == nil || time.Since(start) > 3*time.Second {
			t.Errorf("%s: Run = %v after %v, want a prompt cancellation", w, err, time.Since(start))
		}
	}
}

func TestFramesParser(t *testing.T) {
	tests := []struct {
		in      string
		out     string // stdout+"|"+stderr
		status  Status
		wantErr string
	}{
		{"8:exitcode,1:0,", "|", Status{Code: 0}, ""},
		{"6:stdout,5:hello,6:stderr,3:err,6:stdout,0:,8:exitcode,3:127,", "hello|err", Status{Code: 127}, ""},
		{"7:termsig,4:TERM,", "|", Status{Code: -1, Signal: "TERM"}, ""},
		{"", "", Status{}, "without an exit status"},
		{"6:stdout,2:hi,", "", Status{}, "without an exit status"},
		{"6:stdout,2:hi", "", Status{}, "unexpected EOF"},
		{"6:stdout,2:hi;", "", Status{}, "expected ','"},
		{"6:stdout,02:hi,", "", Status{}, "leading zero"},
		{"6:stdout,x:hi,", "", Status{}, "unexpected 'x'"},
		{"9:exitcodes,1:0,", "", Status{}, "limit"},
		{"4:what,0:,", "", Status{}, "unknown reply type"},
		{"8:exitcode,3:256,", "", Status{}, "bad exit code"},
		{"8:exitcode,0:,", "", Status{}, "bad exit code"},
		{"7:termsig,0:,", "", Status{}, "empty signal name"},
		{"8:exitcode,1234567890123456789:", "", Status{}, "length overflows"},
	}
	for _, tt := range tests {
		f := newFrames(bufioReader(tt.in))
		var out, errb bytes.Buffer
		st, err := f.status(func(kind int, b []byte) {
			if kind == stdout {
				out.Write(b)
			} else {
				errb.Write(b)
			}
		})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || st != tt.status || out.String()+"|"+errb.String() != tt.out {
			t.Errorf("%q: got %v %q|%q %v, want %v %q", tt.in, st, out.String(), errb.String(), err, tt.status, tt.out)
		}
		if err := f.end(); err != nil {
			t.Errorf("%q: end: %v", tt.in, err)
		}
	}
}

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2), 50, 1 * time.Millisecond},
		{ms(1, 2, 3), 50, 2 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 90, 90 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %v) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
		}
	}
}

// BenchmarkClientFlood measures how fast the client reads and verifies
// Flood output from a fake server that writes prebuilt 32 KiB pairs: the
// ceiling above which the client, not the server, would be measured.
func BenchmarkClientFlood(b *testing.B) {
	const size = 512 << 20
	var frame []byte
	for range 32 {
		frame = append(frame, pair("stdout", string(make([]byte, 32<<10)))...)
	}
	sock := startFake(b, func(r *fakeReq, w io.Writer) {
		for sent := 0; sent < size; sent += 32 * 32 << 10 {
			r.conn.Write(frame)
		}
		r.conn.Write(pair("exitcode", "0"))
	})
	b.SetBytes(size)
	for b.Loop() {
		res, err := Run(context.Background(), Config{Workload: Flood, Socket: sock, Size: size})
		if err != nil || res.Errors != 0 {
			b.Fatal(err, res.Failures)
		}
	}
}

// BenchmarkClientEcho: the client sending and verifying Echo data
// through a fake server that copies stdin netstrings back as stdout
// pairs without parsing their content.
func BenchmarkClientEcho(b *testing.B) {
	const size = 256 << 20
	sock := startFake(b, func(r *fakeReq, w io.Writer) {
		r.stdinChunks(func(p []byte) { writeOut(r.conn, p) })
		r.conn.Write(pair("exitcode", "0"))
	})
	b.SetBytes(size)
	for b.Loop() {
		res, err := Run(context.Background(), Config{Workload: Echo, Socket: sock, Size: size})
		if err != nil || res.Errors != 0 {
			b.Fatal(err, res.Failures)
		}
	}
}
