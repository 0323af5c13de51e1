package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
	"github.com/sockwarden/sockwarden/policy"
)

// lockedBuffer is an io.Writer safe for the audit sink and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

// record is one decoded audit line.
type record = audittest.Record

// records returns the audit records of one request, in order, after
// checking every line of the trail against the published schema.
func records(t *testing.T, trail *lockedBuffer, requestID string) []record {
	t.Helper()
	var out []record
	for _, r := range audittest.Parse(t, trail.Bytes()) {
		if r.RequestID() == requestID {
			out = append(out, r)
		}
	}
	return out
}

func actions(rs []record) string {
	var a []string
	for _, r := range rs {
		a = append(a, r.Str("event.action"))
	}
	return strings.Join(a, " ")
}

type auditedServer struct {
	s     *Server
	sock  string
	trail *lockedBuffer
}

func startAudited(t *testing.T, cfg Config) *auditedServer {
	trail := &lockedBuffer{}
	cfg.Audit = audit.New(audit.NewWriterSink(trail), audit.Options{})
	s, sock := startServer(t, cfg)
	return &auditedServer{s, sock, trail}
}

// lastRequestID waits for the trail to hold a record of a new request and
// returns its id.
func (as *auditedServer) waitRecords(t *testing.T, n int, last string) []record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ids []string
		for _, line := range bytes.Split(bytes.TrimSpace(as.trail.Bytes()), []byte("\n")) {
			var r record
			if json.Unmarshal(line, &r) == nil && r.Str("request_id") != "" {
				ids = append(ids, r.Str("request_id"))
			}
		}
		if len(ids) > 0 {
			rs := records(t, as.trail, ids[len(ids)-1])
			if len(rs) >= n && (last == "" || rs[len(rs)-1].Str("event.action") == last) {
				return rs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("trail did not get %d records ending in %s:\n%s", n, last, as.trail.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuditSequences(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		send    []byte
		hangup  bool // close right after sending
		want    string
		records int
		check   func(t *testing.T, rs []record)
	}{
		{
			name: "allowed", send: encode("2", "echo", "hi", ""),
			want: "exec.decision exec.start exec.exit", records: 3,
			check: func(t *testing.T, rs []record) {
				d, st, ex := rs[0], rs[1], rs[2]
				if d.Get("sockwarden.decision.allow") != true || d.Str("process.executable") != "/usr/bin/echo" ||
					d.Str("client.user.id") != "0" || d.Get("event.outcome") != "success" {
					t.Errorf("decision %v", d)
				}
				if args, _ := d.Get("process.args").([]any); len(args) != 2 || args[1] != "hi" {
					t.Errorf("process.args %v", d.Get("process.args"))
				}
				if st.Get("process.pid") == nil || st.Get("process.pid") != st.Get("process.pgid") {
					t.Errorf("start %v", st)
				}
				if ex.Get("process.exit_code") != float64(0) || ex.Get("sockwarden.exit.bytes.stdout") != float64(3) {
					t.Errorf("exit %v", ex)
				}
			},
		},
		{
			name: "denied", cfg: Config{Authorizer: denyAll{}}, send: encode("1", "true", ""),
			want: "exec.decision", records: 1,
			check: func(t *testing.T, rs []record) {
				if rs[0].Get("sockwarden.decision.allow") != false || rs[0].Str("event.outcome") != "failure" {
					t.Errorf("decision %v", rs[0])
				}
			},
		},
		{
			name: "timed out", cfg: Config{Deadline: 300 * time.Millisecond, KillTimeout: time.Second},
			send: encode("2", "sleep", "30", ""),
			want: "exec.decision exec.start exec.kill exec.exit", records: 4,
			check: func(t *testing.T, rs []record) {
				k, ex := rs[2], rs[3]
				if k.Str("event.reason") != "timeout" || k.Str("sockwarden.kill.signal") != "TERM" || k.Get("sockwarden.kill.escalated") != false {
					t.Errorf("kill %v", k)
				}
				if ex.Str("sockwarden.exit.signal") != "TERM" || ex.Get("process.exit_code") != nil {
					t.Errorf("exit %v", ex)
				}
			},
		},
		{
			// The deadline leaves sh ample time to set its trap first.
			name: "timed out, ignores TERM", cfg: Config{Deadline: 3 * time.Second, KillTimeout: 300 * time.Millisecond},
			send: encode("3", "sh", "-c", "trap '' TERM; sleep 30", ""),
			want: "exec.decision exec.start exec.kill exec.kill exec.exit", records: 5,
			check: func(t *testing.T, rs []record) {
				if k := rs[3]; k.Str("sockwarden.kill.signal") != "KILL" || k.Get("sockwarden.kill.escalated") != true || k.Str("event.reason") != "timeout" {
					t.Errorf("escalation %v", k)
				}
				if rs[4].Str("sockwarden.exit.signal") != "KILL" {
					t.Errorf("exit %v", rs[4])
				}
			},
		},
		{
			name: "stdin over the cap", cfg: Config{Authorizer: capped{in: 4}, KillTimeout: time.Second},
			send: encode("3", "sh", "-c", "cat >/dev/null; sleep 30", "0123456789", ""),
			want: "exec.decision exec.start exec.kill exec.exit", records: 4,
			check: func(t *testing.T, rs []record) {
				k, ex := rs[2], rs[3]
				if k.Str("event.reason") != "stdin_limit" || k.Str("sockwarden.kill.signal") != "TERM" {
					t.Errorf("kill %v", k)
				}
				if ex.Get("sockwarden.exit.truncated.stdin") != true || ex.Get("sockwarden.exit.bytes.stdin") != float64(4) {
					t.Errorf("exit %v", ex)
				}
			},
		},
		{
			name: "disconnected", cfg: Config{KillTimeout: time.Second}, send: encode("2", "sleep", "30"), hangup: true,
			want: "exec.decision exec.start exec.kill exec.exit", records: 4,
			check: func(t *testing.T, rs []record) {
				if rs[2].Str("event.reason") != "disconnect" {
					t.Errorf("kill %v", rs[2])
				}
			},
		},
		{
			name: "output capped", cfg: Config{Authorizer: capped{out: 5000}}, send: encode("2", "cat", "/dev/zero", ""),
			want: "exec.decision exec.start exec.kill exec.exit", records: 4,
			check: func(t *testing.T, rs []record) {
				if rs[2].Str("event.reason") != "output_limit" {
					t.Errorf("kill %v", rs[2])
				}
				ex := rs[3]
				if ex.Get("sockwarden.exit.truncated.stdout") != true || ex.Get("sockwarden.exit.bytes.stdout") != float64(5000) {
					t.Errorf("exit %v", ex)
				}
			},
		},
		{
			name: "malformed", send: []byte("1:1,3:abc;"),
			want: "protocol.error", records: 1,
			check: func(t *testing.T, rs []record) {
				if !strings.Contains(rs[0].Str("error.message"), "syntax error") || rs[0].Get("sockwarden.protocol.bytes_read") == nil {
					t.Errorf("protocol error %v", rs[0])
				}
			},
		},
		{
			name: "malformed stdin", send: append(encode("3", "sh", "-c", "cat >/dev/null"), "3:abc;"...),
			want: "exec.decision exec.start protocol.error exec.kill exec.exit", records: 5,
			check: func(t *testing.T, rs []record) {
				if rs[3].Str("event.reason") != "protocol_error" {
					t.Errorf("kill %v", rs[3])
				}
			},
		},
		{
			name: "killed by signal", send: encode("3", "sh", "-c", "kill -SEGV $$", ""),
			want: "exec.decision exec.start exec.exit", records: 3,
			check: func(t *testing.T, rs []record) {
				if rs[2].Str("sockwarden.exit.signal") != "SEGV" || rs[2].Str("event.outcome") != "failure" {
					t.Errorf("exit %v", rs[2])
				}
			},
		},
		{
			name: "not found", send: encode("1", "/no/such/program", ""),
			want: "exec.decision exec.start", records: 2,
			check: func(t *testing.T, rs []record) {
				if !strings.Contains(rs[1].Str("error.message"), "no such file") && !strings.Contains(rs[1].Str("sockwarden.start.error"), "no such file") {
					t.Logf("start failure record %v", rs[1])
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as := startAudited(t, tt.cfg)
			c, err := net.Dial("unix", as.sock)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(tt.send)
			if tt.hangup {
				as.waitRecords(t, 2, "exec.start")
				c.Close()
			} else {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}
			rs := as.waitRecords(t, tt.records, strings.Fields(tt.want)[len(strings.Fields(tt.want))-1])
			if got := actions(rs); got != tt.want {
				t.Fatalf("records %q, want %q", got, tt.want)
			}
			for _, r := range rs[1:] {
				if r.Str("request_id") != rs[0].Str("request_id") {
					t.Errorf("request ids differ")
				}
			}
			tt.check(t, rs)
		})
	}
}

// With the audit file on a full file system, requests are refused before
// anything runs; when space returns, service resumes and the trail
// verifies.
func TestAuditDiskFull(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	path := filepath.Join(dir, "audit.jsonl")
	sink, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	trail := audit.New(sink, audit.Options{})
	_, sock := startServer(t, Config{Audit: trail, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	marker := filepath.Join(t.TempDir(), "ran")
	touch := encode("2", "touch", marker, "")

	if got := string(roundTrip(t, sock, touch)); !strings.HasSuffix(got, "8:exitcode,1:0,") {
		t.Fatalf("before the disk filled: %q", got)
	}
	os.Remove(marker)

	// Fill the file system.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Close()
	// The audit file's last page may still have room for a few records:
	// requests run while (and only while) their records are written.
	ran, refusals := 1, 0
	for i := 0; i < 40 && refusals < 3; i++ {
		os.Remove(marker)
		got := string(roundTrip(t, sock, touch))
		switch {
		case strings.Contains(got, "unavailable: the audit log cannot be written") && strings.HasSuffix(got, "8:exitcode,3:126,"):
			refusals++
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("a request ran while its audit record could not be written")
			}
		case refusals == 0 && strings.HasSuffix(got, "8:exitcode,1:0,"):
			ran++
		default:
			t.Fatalf("disk full, request %d: %q", i, got)
		}
	}
	if refusals < 3 {
		t.Fatalf("requests kept running on a full disk")
	}
	if trail.Admit() == nil {
		t.Error("trail admits requests on a full disk")
	}

	// Space returns: service resumes by itself.
	os.Remove(filepath.Join(dir, "filler"))
	if got := string(roundTrip(t, sock, touch)); !strings.HasSuffix(got, "8:exitcode,1:0,") {
		t.Fatalf("after space returned: %q", got)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("the request after recovery did not run")
	}
	rep, err := audit.VerifyFiles(path)
	if err != nil || !rep.OK() {
		t.Fatalf("trail does not verify: %v %+v", err, rep.Problem)
	}
	data, _ := os.ReadFile(path)
	audittest.ValidateLines(t, data)
	if want := 3 * (ran + 1); rep.Records != want {
		t.Errorf("%d records, want %d (3 for each of the %d requests that ran)", rep.Records, want, ran+1)
	}
}

// landlocked allows with Landlock rules: TCP unrestricted (connect nil)
// or restricted to the ports given, and a path this host lacks.
type landlocked struct{ connect []int }

func (l landlocked) Authorize(context.Context, *Request) (*policy.Decision, error) {
	return &policy.Decision{Allow: true, Landlock: &policy.Landlock{
		RO: []string{"/usr", "/lib", "/lib64", "/bin", "/no/such/dir/sw"}, ConnectTCP: l.connect,
	}}, nil
}

// exec.start says what the Landlock rules mean: whether TCP is
// restricted at all (an empty port list reads the same either way), and
// which of the decision's paths were dropped because they do not exist.
func TestAuditLandlockSaysWhatItMeans(t *testing.T) {
	for _, tt := range []struct {
		name       string
		connect    []int
		restricted bool
	}{
		{"TCP unrestricted", nil, false},
		{"TCP restricted to no port", []int{}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			as := startAudited(t, Config{Authorizer: landlocked{tt.connect}})
			roundTrip(t, as.sock, encode("1", "true", ""))
			rs := as.waitRecords(t, 3, "exec.exit")
			st := rs[1]
			if got := st.Get("sockwarden.landlock.tcp_restricted"); got != tt.restricted {
				t.Errorf("tcp_restricted %v, want %v: %v", got, tt.restricted, st)
			}
			if ports, _ := st.Get("sockwarden.landlock.connect_tcp").([]any); len(ports) != 0 {
				t.Errorf("connect_tcp %v", ports)
			}
			if dropped, _ := st.Get("sockwarden.landlock.dropped").([]any); len(dropped) != 1 || dropped[0] != "/no/such/dir/sw" {
				t.Errorf("dropped %v, want [/no/such/dir/sw]", st.Get("sockwarden.landlock.dropped"))
			}
			// The system call filters the child really got: the
			// default profile, and the network filter exactly when
			// TCP is restricted.
			if got := st.Get("sockwarden.seccomp.profile"); got != "default" {
				t.Errorf("seccomp.profile %v, want default", got)
			}
			if got := st.Get("sockwarden.seccomp.network"); got != tt.restricted {
				t.Errorf("seccomp.network %v, want %v", got, tt.restricted)
			}
			if ipc, net := st.Get("sockwarden.namespaces.ipc"), st.Get("sockwarden.namespaces.network"); ipc != "private" || net != "host" {
				t.Errorf("namespaces ipc %v network %v, want private and host", ipc, net)
			}
		})
	}
}
