package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
	"github.com/sockwarden/sockwarden/sandbox"
)

// t0 is the fixed clock of the tests.
var t0 = time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.UTC)

// clock returns a Now function that advances one millisecond a call.
func clock() func() time.Time {
	var mu sync.Mutex
	t := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := t
		t = t.Add(time.Millisecond)
		return now
	}
}

// schemaSink validates every record against the schema before passing it
// on, so every record any test writes is checked.
type schemaSink struct {
	audit.Sink
	t testing.TB
}

func (s schemaSink) Write(rec []byte) error {
	s.t.Helper()
	audittest.Validate(s.t, rec)
	return s.Sink.Write(rec)
}

// proberSchemaSink is a schemaSink for sinks that can be probed.
type proberSchemaSink struct{ schemaSink }

func (s proberSchemaSink) Probe() error { return s.Sink.(audit.Prober).Probe() }

// memSink keeps records in memory.
type memSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	fail  error
	count int
}

func (m *memSink) Write(rec []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.buf.Write(rec)
	m.count++
	return nil
}
func (m *memSink) Reopen() error { return nil }
func (m *memSink) Sync() error   { return nil }
func (m *memSink) Close() error  { return nil }

func (m *memSink) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memSink) lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return splitLines(m.buf.String())
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// newLogger returns a Logger with the test clock and host "web1" whose
// records are schema-checked on their way to sink.
func newLogger(t testing.TB, sink audit.Sink) *audit.Logger {
	return newLoggerClock(t, sink, clock())
}

// newLoggerClock is newLogger with a given clock.
func newLoggerClock(t testing.TB, sink audit.Sink, now func() time.Time) *audit.Logger {
	var s audit.Sink = schemaSink{sink, t}
	if _, ok := sink.(audit.Prober); ok {
		s = proberSchemaSink{schemaSink{sink, t}}
	}
	return audit.New(s, audit.Options{Host: "web1", Now: now})
}

var peer = audit.Peer{PID: 4242, UID: 33, GID: 33, User: "www-data", Group: "www-data", Exe: "/usr/sbin/nginx"}

// Sample events, one or more of each kind.
var (
	sampleServerStart = audit.ServerEvent{Version: "0.1.0", Socket: "/run/sockwarden/exec.sock", PID: 1000,
		LandlockABI: 6, Message: "sockwarden started", Details: map[string]any{"policy": "embedded", "max_connections": 100}}
	sampleDecision = audit.Decision{RequestID: "req-1", Allow: true, Reasons: []string{"uid 33 may run uname"},
		Argv: []string{"uname", "-a"}, Exe: "/usr/bin/uname", Peer: peer, Revision: "rev-7", EvalDuration: 183 * time.Microsecond}
	sampleDeny = audit.Decision{RequestID: "req-2", Allow: false, Message: "rm is not allowed",
		Reasons: []string{"argv[0] not in allow list", "quote \" and \\ and \n newline"},
		Argv:    []string{"rm", "-rf", "/"}, Exe: "/usr/bin/rm", Peer: peer, Revision: "rev-7", EvalDuration: 95 * time.Microsecond}
	sampleStart = audit.Start{RequestID: "req-1", PID: 5001, PGID: 5001, Exe: "/usr/bin/uname", Dir: "/",
		RunAs:   audit.RunAs{UID: 65534, GID: 65534, User: "nobody", Group: "nogroup", Groups: []audit.Group{{ID: 100, Name: "users"}}},
		Rlimits: map[string]uint64{"cpu": 10, "as": 536870912, "nofile": 64, "core": 0, "fsize": sandbox.RlimitInfinity},
		Landlock: &audit.Landlock{ABI: 6, RO: []string{"/usr", "/lib", "/etc"}, RW: []string{"/tmp/job"}, Dropped: []string{"/lib64"},
			TCPRestricted: true, ConnectTCP: []uint16{443}, BindTCP: []uint16{}, BestEffort: false, Downgraded: false},
		Seccomp:    &audit.Seccomp{Profile: "default", Deny: []string{"ptrace"}, Network: true},
		Namespaces: &audit.Namespaces{IPC: "private", Network: "none"},
		TmpDir:     "/run/sockwarden/tmp/req-1000-4f2a"}
	sampleSpawnFail = audit.Start{RequestID: "req-3", Exe: "/usr/bin/nope", RunAs: audit.RunAs{UID: 65534, GID: 65534},
		Error: "exec: no such file or directory"}
	sampleExit = audit.Exit{RequestID: "req-1", PID: 5001, ExitCode: 0, Duration: 2500 * time.Microsecond,
		StdinBytes: 0, StdoutBytes: 93, StderrBytes: 0, UserCPU: 1200 * time.Microsecond, SystemCPU: 800 * time.Microsecond, MaxRSS: 3 << 20,
		Cgroup: &audit.ExitCgroup{Path: "/sys/fs/cgroup/system.slice/sockwarden.service/sockwarden/req-1000-1", Killed: 1,
			MemoryPeak: 4 << 20, PidsPeak: 2, CPU: 2100 * time.Microsecond},
		Denials: &audit.SandboxDenials{Landlock: []audit.Denial{{Access: "fs.make_reg", Target: "/etc", Count: 2},
			{Access: "net.connect_tcp", Target: "127.0.0.1:5432", Count: 1}}, Received: 3, Total: -1}}
	sampleDenials = audit.Denials{RequestID: "req-1", PID: 5001, Denials: audit.SandboxDenials{
		Landlock: []audit.Denial{{Access: "fs.make_reg", Target: "/etc", Count: 2}, {Access: "net.connect_tcp", Target: "127.0.0.1:5432", Count: 1},
			{Access: "fs.execute,fs.read_file", Target: "/tmp/a b/run.sh", Count: 1}},
		Received: 4, Total: 4, Final: true, Complete: true}}
	sampleSignalExit = audit.Exit{RequestID: "req-4", PID: 5002, Signal: "XFSZ", Duration: 3 * time.Second,
		End: t0.Add(time.Hour), StdinBytes: 10, StdoutBytes: 10485760, StderrBytes: 12, StdoutTruncated: true, MaxRSS: 1 << 20}
	sampleKill          = audit.Kill{RequestID: "req-4", PID: 5002, PGID: 5002, Reason: audit.KillTimeout, Signal: "TERM", Escalated: true}
	sampleProtocolError = audit.ProtocolError{RequestID: "req-5", Peer: audit.Peer{PID: 77, UID: 1000, GID: 1000},
		Error: "netstring: bad length prefix", BytesRead: 12}
	sampleReload     = audit.PolicyReload{Revision: "rev-8", Source: "/etc/sockwarden/policy"}
	sampleReloadFail = audit.PolicyReload{Revision: "rev-8", Source: "/etc/sockwarden/policy", Error: "rego_parse_error: unexpected eof"}
	sampleServerStop = audit.ServerEvent{Version: "0.1.0", Socket: "/run/sockwarden/exec.sock", PID: 1000, Message: "SIGTERM"}
)

// logAll writes one record of each sample to l, in a plausible order.
func logAll(t testing.TB, l *audit.Logger) {
	t.Helper()
	steps := []func() error{
		func() error { return l.ServerStart(sampleServerStart) },
		func() error { return l.Decision(sampleDecision) },
		func() error { return l.Start(sampleStart) },
		func() error { return l.Exit(sampleExit) },
		func() error { return l.Denials(sampleDenials) },
		func() error { return l.Decision(sampleDeny) },
		func() error { return l.Start(sampleSpawnFail) },
		func() error { return l.Kill(sampleKill) },
		func() error { return l.Exit(sampleSignalExit) },
		func() error { return l.ProtocolError(sampleProtocolError) },
		func() error { return l.PolicyReload(sampleReload) },
		func() error { return l.PolicyReload(sampleReloadFail) },
		func() error { return l.ServerStop(sampleServerStop) },
	}
	for i, f := range steps {
		if err := f(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

// writeLog writes lines to a file in dir and returns its path.
func writeLog(t testing.TB, dir, name string, lines []string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// verifyOK fails t unless the files verify cleanly, and returns the report.
func verifyOK(t testing.TB, paths ...string) audit.Report {
	t.Helper()
	rep, err := audit.VerifyFiles(paths...)
	if err != nil {
		t.Fatalf("VerifyFiles: %v", err)
	}
	if rep.Problem != nil {
		t.Fatalf("VerifyFiles: %s", rep.Problem)
	}
	return rep
}
