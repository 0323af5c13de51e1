package audit_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
)

var update = flag.Bool("update", false, "rewrite testdata/records.golden.jsonl")

// TestRecordsGolden pins the exact bytes of one record of each kind.
func TestRecordsGolden(t *testing.T) {
	var m memSink
	l := newLogger(t, &m)
	logAll(t, l)
	got := m.buf.String()
	const golden = "testdata/records.golden.jsonl"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		gl, wl := splitLines(got), splitLines(string(want))
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d:\n got %s\nwant %s", i+1, g, w)
			}
		}
		t.Fatal("records differ from golden file (go test ./audit -run Golden -update to accept)")
	}
	if n := audittest.ValidateLines(t, want); n != 13 {
		t.Errorf("golden file has %d records, want 13", n)
	}
}

// lookup returns the value at a dotted path of a decoded record, and
// whether it is there.
func lookup(rec map[string]any, path string) (any, bool) {
	var v any = rec
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// TestRecordFields checks the fields of each kind of record by path, as
// a SIEM query would see them.
func TestRecordFields(t *testing.T) {
	absent := struct{}{}
	tests := []struct {
		name   string
		log    func(l *audit.Logger) error
		fields map[string]any // path -> want (JSON-decoded), or absent
	}{
		{"decision allow", func(l *audit.Logger) error { return l.Decision(sampleDecision) }, map[string]any{
			"event.action": "exec.decision", "event.outcome": "success", "event.kind": "event",
			"event.category": []any{"process"}, "event.type": []any{"access"}, "event.duration": 183000.0,
			"request_id": "req-1", "host.name": "web1", "seq": 1.0,
			"process.args": []any{"uname", "-a"}, "process.args_count": 2.0, "process.executable": "/usr/bin/uname",
			"client.user.id": "33", "client.user.name": "www-data", "client.user.group.id": "33", "client.user.group.name": "www-data",
			"sockwarden.peer.pid": 4242.0, "sockwarden.peer.exe": "/usr/sbin/nginx",
			"sockwarden.decision.allow": true, "sockwarden.decision.reasons": []any{"uid 33 may run uname"},
			"sockwarden.policy.revision": "rev-7", "sockwarden.chain.prev": audit.Genesis,
			"message": absent, "error": absent, "sockwarden.policy.cached": absent,
		}},
		{"decision from the cache", func(l *audit.Logger) error {
			d := sampleDecision
			d.Cached = true
			return l.Decision(d)
		}, map[string]any{
			"sockwarden.policy.revision": "rev-7", "sockwarden.policy.cached": true, "sockwarden.decision.allow": true,
		}},
		{"decision deny", func(l *audit.Logger) error { return l.Decision(sampleDeny) }, map[string]any{
			"event.outcome": "failure", "message": "rm is not allowed", "sockwarden.decision.allow": false,
			"sockwarden.decision.reasons": []any{"argv[0] not in allow list", "quote \" and \\ and \n newline"},
		}},
		{"decision eval error", func(l *audit.Logger) error {
			return l.Decision(audit.Decision{RequestID: "r", Allow: false, Argv: []string{"x"}, Error: "eval timeout"})
		}, map[string]any{
			"event.outcome": "failure", "error.message": "eval timeout", "sockwarden.decision.reasons": []any{},
			"process.executable": absent, "client.user.name": absent, "sockwarden.peer.exe": absent,
		}},
		{"start", func(l *audit.Logger) error { return l.Start(sampleStart) }, map[string]any{
			"event.action": "exec.start", "event.outcome": "success", "event.type": []any{"start"},
			"process.pid": 5001.0, "process.pgid": 5001.0, "process.executable": "/usr/bin/uname", "process.working_directory": "/",
			"user.id": "65534", "user.name": "nobody", "group.id": "65534", "group.name": "nogroup",
			"sockwarden.run_as.groups": []any{map[string]any{"id": "100", "name": "users"}},
			"sockwarden.rlimits":       map[string]any{"as": 536870912.0, "core": 0.0, "cpu": 10.0, "fsize": -1.0, "nofile": 64.0},
			"sockwarden.landlock.abi":  6.0, "sockwarden.landlock.ro": []any{"/usr", "/lib", "/etc"},
			"sockwarden.landlock.rw": []any{"/tmp/job"}, "sockwarden.landlock.connect_tcp": []any{443.0},
			"sockwarden.landlock.bind_tcp": []any{}, "sockwarden.landlock.best_effort": false, "sockwarden.landlock.downgraded": false,
			"event.duration": absent,
		}},
		{"start failed", func(l *audit.Logger) error { return l.Start(sampleSpawnFail) }, map[string]any{
			"event.outcome": "failure", "error.message": "exec: no such file or directory",
			"process.pid": absent, "process.pgid": absent, "sockwarden.landlock": absent,
			"sockwarden.rlimits": map[string]any{}, "sockwarden.run_as.groups": []any{},
		}},
		{"exit code", func(l *audit.Logger) error { return l.Exit(sampleExit) }, map[string]any{
			"event.action": "exec.exit", "event.outcome": "success", "event.type": []any{"end"}, "event.duration": 2500000.0,
			"process.pid": 5001.0, "process.exit_code": 0.0, "process.end": "2026-11-21T10:00:00.123456789Z",
			"sockwarden.exit.signal":        absent,
			"sockwarden.exit.bytes":         map[string]any{"stdin": 0.0, "stdout": 93.0, "stderr": 0.0},
			"sockwarden.exit.truncated":     map[string]any{"stdin": false, "stdout": false, "stderr": false},
			"sockwarden.exit.cpu":           map[string]any{"user_ns": 1200000.0, "system_ns": 800000.0},
			"sockwarden.exit.max_rss_bytes": 3145728.0,
			"sockwarden.exit.cgroup": map[string]any{"path": "/sys/fs/cgroup/system.slice/sockwarden.service/sockwarden/req-1000-1",
				"killed": 1.0, "oom_kills": 0.0, "memory_peak_bytes": 4194304.0, "pids_peak": 2.0, "cpu_ns": 2100000.0},
		}},
		{"exit nonzero", func(l *audit.Logger) error {
			return l.Exit(audit.Exit{RequestID: "r", PID: 9, ExitCode: 3})
		}, map[string]any{"event.outcome": "failure", "process.exit_code": 3.0}},
		{"exit signal", func(l *audit.Logger) error { return l.Exit(sampleSignalExit) }, map[string]any{
			"event.outcome": "failure", "process.exit_code": absent, "sockwarden.exit.signal": "XFSZ",
			"process.end": "2026-11-21T11:00:00.123456789Z", "sockwarden.exit.truncated.stdout": true,
			"sockwarden.exit.bytes.stdout": 10485760.0, "sockwarden.exit.cgroup": absent,
		}},
		{"exit cgroup oom lingering", func(l *audit.Logger) error {
			return l.Exit(audit.Exit{RequestID: "r", PID: 9, Signal: "KILL",
				Cgroup: &audit.ExitCgroup{Path: "/c", Killed: 3, OOMKills: 1, Lingering: true}})
		}, map[string]any{"sockwarden.exit.cgroup": map[string]any{"path": "/c", "killed": 3.0, "oom_kills": 1.0, "lingering": true}}},
		{"kill", func(l *audit.Logger) error { return l.Kill(sampleKill) }, map[string]any{
			"event.action": "exec.kill", "event.outcome": "success", "event.reason": "timeout",
			"process.pid": 5002.0, "process.pgid": 5002.0,
			"sockwarden.kill": map[string]any{"signal": "TERM", "escalated": true},
		}},
		{"kill protocol error", func(l *audit.Logger) error {
			return l.Kill(audit.Kill{RequestID: "r", PID: 9, PGID: 9, Reason: audit.KillProtocolError, Signal: "TERM"})
		}, map[string]any{"event.reason": "protocol_error", "sockwarden.kill.escalated": false}},
		{"kill failed", func(l *audit.Logger) error {
			return l.Kill(audit.Kill{RequestID: "r", PID: 9, Reason: audit.KillShutdown, Signal: "TERM", Error: "no such process"})
		}, map[string]any{"event.outcome": "failure", "error.message": "no such process", "process.pgid": absent}},
		{"protocol error", func(l *audit.Logger) error { return l.ProtocolError(sampleProtocolError) }, map[string]any{
			"event.action": "protocol.error", "event.outcome": "failure", "event.category": []any{"network"},
			"error.message": "netstring: bad length prefix", "client.user.id": "1000", "client.user.group.id": "1000",
			"sockwarden.peer": map[string]any{"pid": 77.0}, "sockwarden.protocol.bytes_read": 12.0, "request_id": "req-5",
		}},
		{"policy reload", func(l *audit.Logger) error { return l.PolicyReload(sampleReload) }, map[string]any{
			"event.action": "policy.reload", "event.outcome": "success", "event.category": []any{"configuration"},
			"sockwarden.policy": map[string]any{"revision": "rev-8", "source": "/etc/sockwarden/policy"},
			"request_id":        absent, "error": absent,
		}},
		{"policy reload failed", func(l *audit.Logger) error { return l.PolicyReload(sampleReloadFail) }, map[string]any{
			"event.outcome": "failure", "error.message": "rego_parse_error: unexpected eof",
		}},
		{"server start", func(l *audit.Logger) error { return l.ServerStart(sampleServerStart) }, map[string]any{
			"event.action": "server.start", "event.type": []any{"start"}, "process.pid": 1000.0,
			"service": map[string]any{"name": "sockwarden", "version": "0.1.0"}, "message": "sockwarden started",
			"sockwarden.server.socket": "/run/sockwarden/exec.sock", "sockwarden.server.landlock_abi": 6.0,
			"sockwarden.server.details": map[string]any{"policy": "embedded", "max_connections": 100.0},
			"request_id":                absent,
		}},
		{"server stop", func(l *audit.Logger) error { return l.ServerStop(audit.ServerEvent{Error: "listener closed"}) }, map[string]any{
			"event.action": "server.stop", "event.type": []any{"end"}, "event.outcome": "failure",
			"process.pid": float64(os.Getpid()), "error.message": "listener closed", "service.version": absent,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m memSink
			l := newLogger(t, &m)
			if err := tt.log(l); err != nil {
				t.Fatal(err)
			}
			lines := m.lines()
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1", len(lines))
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
				t.Fatal(err)
			}
			if ts, _ := lookup(rec, "@timestamp"); ts != "2026-11-21T10:00:00.123456789Z" {
				t.Errorf("@timestamp = %v", ts)
			}
			for path, want := range tt.fields {
				got, ok := lookup(rec, path)
				if want == absent {
					if ok {
						t.Errorf("%s = %v, want absent", path, got)
					}
					continue
				}
				if !ok {
					t.Errorf("%s absent, want %v", path, want)
				} else if !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", path, got, want)
				}
			}
			// The chain is the last member, the hash the last of the chain.
			if !strings.HasSuffix(lines[0], fmt.Sprintf(`"hash":"%s"}}}`, rec["sockwarden"].(map[string]any)["chain"].(map[string]any)["hash"])) {
				t.Errorf("record does not end with the chain hash: %s", lines[0])
			}
		})
	}
}

// TestStringEscaping checks that hostile strings stay on one line of
// valid JSON and decode to what was logged (invalid UTF-8 as U+FFFD).
func TestStringEscaping(t *testing.T) {
	argv := []string{
		"plain", "", "tab\there", "nl\nand\rcr", "quote\"back\\slash", "\x00\x01\x1f\x7f",
		"ünïcödé ✓ 𝄞", "bad\xffutf8\xc3", "line\u2028sep\u2029", `</script>&`, "}}}\"hash\":\"",
	}
	var m memSink
	l := newLogger(t, &m)
	if err := l.Decision(audit.Decision{RequestID: "r\n1", Argv: argv, Message: "m\x00"}); err != nil {
		t.Fatal(err)
	}
	lines := m.lines()
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1: %q", len(lines), m.buf.String())
	}
	var rec struct {
		RequestID string `json:"request_id"`
		Message   string
		Process   struct{ Args []string }
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	want := append([]string(nil), argv...)
	want[7] = "bad\ufffdutf8\ufffd"
	if !reflect.DeepEqual(rec.Process.Args, want) {
		t.Errorf("args = %q\nwant   %q", rec.Process.Args, want)
	}
	if rec.RequestID != "r\n1" || rec.Message != "m\x00" {
		t.Errorf("request_id %q message %q", rec.RequestID, rec.Message)
	}
	if strings.Contains(lines[0], "\u2028") {
		t.Error("U+2028 not escaped")
	}
	// and the chain still verifies
	p := writeLog(t, t.TempDir(), "a.log", lines)
	verifyOK(t, p)
}

// TestTimestampsAreUTC checks that a local clock is written in UTC.
func TestTimestampsAreUTC(t *testing.T) {
	loc := time.FixedZone("X", 5*3600)
	var m memSink
	l := audit.New(schemaSink{&m, t}, audit.Options{Host: "h", Now: func() time.Time { return t0.In(loc) }})
	if err := l.Exit(audit.Exit{RequestID: "r", PID: 1}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.lines()[0], `{"@timestamp":"2026-11-21T10:00:00.123456789Z"`) {
		t.Errorf("got %s", m.lines()[0])
	}
}

// TestDetailsError checks that unencodable details fail without harming
// the chain or the health.
func TestDetailsError(t *testing.T) {
	var m memSink
	l := newLogger(t, &m)
	err := l.ServerStart(audit.ServerEvent{Details: map[string]any{"f": func() {}}})
	if err == nil {
		t.Fatal("no error for unencodable details")
	}
	if l.Healthy() != nil {
		t.Errorf("Healthy() = %v after an encoding error", l.Healthy())
	}
	if seq, _ := l.Last(); seq != 0 {
		t.Errorf("seq %d consumed by a record that was not written", seq)
	}
}
