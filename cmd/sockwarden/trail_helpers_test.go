package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
	"github.com/sockwarden/sockwarden/internal/testutil/fdcount"
	"github.com/sockwarden/sockwarden/netstring"
)

// Helpers for the hostile-client, fault and load tests: a server whose
// audit trail goes to a file of its own (so that it is not mixed with the
// operator log), and the records of that file.

// trail is the audit file of a test server.
type trail struct {
	Path string
}

// auditConfig writes a configuration file sending the audit trail to a
// file in dir, with extra TOML appended, and returns both paths.
func auditConfig(t testing.TB, dir, extra string) (cfgPath string, tr *trail) {
	t.Helper()
	tr = &trail{Path: filepath.Join(dir, "audit.jsonl")}
	cfgPath = filepath.Join(dir, "config.toml")
	cfg := fmt.Sprintf("[audit]\nsink = \"file\"\npath = %q\n%s", tr.Path, extra)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, tr
}

// startAuditServer starts the built binary with its audit trail in a
// file, args being further flags.
func startAuditServer(t testing.TB, args ...string) (*testServer, *trail) {
	t.Helper()
	return startAuditServerExtra(t, "", args...)
}

// noCallerQuota is configuration for the tests of the global limit, whose
// clients all share one uid.
const noCallerQuota = "[server]\nmax_conns_per_uid = -1\n"

// startAuditServerExtra is startAuditServer with extra TOML in its
// configuration.
func startAuditServerExtra(t testing.TB, extra string, args ...string) (*testServer, *trail) {
	t.Helper()
	cfg, tr := auditConfig(t, shortTempDir(t), extra)
	ts := startServer(t, append([]string{"-c", cfg}, args...)...)
	// The socket may accept before the server.start record is written:
	// wait for it, so that tests counting records start after it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if rs := tr.all(t); len(rs) > 0 && rs[0].Action() == "server.start" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no server.start record in the audit trail")
		}
	}
	return ts, tr
}

// rec is one decoded audit record.
type rec = audittest.Record

// all reads every complete record of the trail, checking each against the
// published schema. A line still being written (no newline yet) is left
// for the next call.
func (tr *trail) all(t testing.TB) []rec {
	t.Helper()
	data, err := os.ReadFile(tr.Path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	if len(data) > 0 {
		audittest.ValidateLines(t, data)
	}
	var out []rec
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r rec
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		out = append(out, r)
	}
	return out
}

// count returns the number of complete records so far: a mark for since.
func (tr *trail) count(t testing.TB) int {
	t.Helper()
	return len(tr.all(t))
}

// since returns the records after the first n.
func (tr *trail) since(t testing.TB, n int) []rec {
	t.Helper()
	rs := tr.all(t)
	if n > len(rs) {
		t.Fatalf("trail shrank from %d to %d records", n, len(rs))
	}
	return rs[n:]
}

// waitFor polls the records after mark until cond holds of them.
func (tr *trail) waitFor(t testing.TB, mark int, d time.Duration, what string, cond func([]rec) bool) []rec {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		rs := tr.since(t, mark)
		if cond(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit trail: no %s within %v; records since the mark:\n%s", what, d, dumpRecs(rs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verify checks the hash chain of the whole file.
func (tr *trail) verify(t testing.TB) audit.Report {
	t.Helper()
	rep, err := audit.VerifyFiles(tr.Path)
	if err != nil {
		t.Fatalf("audit verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("audit trail does not verify: %v", rep.Problem)
	}
	return rep
}

// byID groups records by request id, keeping their order.
func byID(rs []rec) map[string][]rec {
	m := map[string][]rec{}
	for _, r := range rs {
		if id := r.RequestID(); id != "" {
			m[id] = append(m[id], r)
		}
	}
	return m
}

func withAction(rs []rec, action string) []rec {
	var out []rec
	for _, r := range rs {
		if r.Action() == action {
			out = append(out, r)
		}
	}
	return out
}

func actionsOf(rs []rec) string {
	a := make([]string, len(rs))
	for i, r := range rs {
		a[i] = r.Action()
	}
	return strings.Join(a, " ")
}

func dumpRecs(rs []rec) string {
	var b strings.Builder
	for _, r := range rs {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// requestsWithArgv returns the records of the requests whose decision
// record has exactly argv.
func requestsWithArgv(rs []rec, argv ...string) map[string][]rec {
	out := map[string][]rec{}
	for id, g := range byID(rs) {
		if g[0].Action() == audit.ActionDecision && slicesEqual(g[0].Args(), argv) {
			out[id] = g
		}
	}
	return out
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// procStatus returns a field of /proc/PID/status in its unit (kB for
// memory, a count for Threads), or -1.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return -1
			}
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n
		}
	}
	return -1
}

// openFDs returns how many descriptors pid has open, those the cgroup
// pool keeps aside (see fdcount); -1 when they cannot be read.
func openFDs(pid int) int {
	n, _, err := fdcount.Count(pid)
	if err != nil {
		return -1
	}
	return n
}

// childPids returns the pids of pid's children.
func childPids(pid int) []int {
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	var out []int
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

// startHeld sends argv (a script that prints a line first) and returns
// the connection after that first stdout pair was read.
func startHeld(t testing.TB, sock string, argv []string) (*net.UnixConn, *netstring.Decoder, string) {
	t.Helper()
	c := dial(t, sock)
	if _, err := c.Write(request(argv, nil, false)); err != nil {
		t.Fatal(err)
	}
	d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
	typ, data := readPair(t, d)
	if typ != "stdout" {
		t.Fatalf("first pair %q %q, want stdout", typ, data)
	}
	return c, d, data
}

// pidsOf parses the pids a script printed on its first line.
func pidsOf(t testing.TB, line string) []int {
	t.Helper()
	line, _, _ = strings.Cut(line, "\n")
	var pids []int
	for _, f := range strings.Fields(line) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("bad pid line %q", line)
		}
		pids = append(pids, pid)
	}
	return pids
}
