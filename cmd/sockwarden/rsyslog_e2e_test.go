package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startRsyslogd starts Debian's rsyslogd in the foreground with conf
// (its own work directory, no system socket) and stops it by PID at the
// end of the test.
func startRsyslogd(t *testing.T, dir, name, conf string) {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		bin = "/usr/sbin/rsyslogd"
		if _, err := os.Stat(bin); err != nil {
			t.Fatal("rsyslogd is missing: scripts/deps.sh installs Debian's rsyslog")
		}
	}
	work := filepath.Join(dir, name+"-work")
	os.MkdirAll(work, 0o700)
	cf := filepath.Join(dir, name+".conf")
	mustWrite(t, cf, fmt.Sprintf("global(workDirectory=%q maxMessageSize=\"64k\")\n", work)+conf)
	if out, err := exec.Command(bin, "-N1", "-f", cf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 %s: %v\n%s", name, err, out)
	}
	startDaemon(t, "rsyslogd "+name, exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, name+".pid")))
}

// exampleConf returns the file of examples/fleet with the replacements
// (old, new pairs) made.
func exampleConf(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples/fleet", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("%s has no %q", name, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	return s
}

// startCollector starts a collector rsyslogd with the walkthrough's
// configuration (examples/fleet/rsyslog-collector.conf), listening on a
// loopback port and writing one file per host into dir/collected, and
// returns the port and that directory.
func startCollector(t *testing.T, dir string) (int, string) {
	t.Helper()
	port := freeLoopbackPort(t)
	out := filepath.Join(dir, "collected")
	os.MkdirAll(out, 0o755)
	startRsyslogd(t, dir, "collector", exampleConf(t, "rsyslog-collector.conf",
		`input(type="imtcp" port="6514")`, fmt.Sprintf(`input(type="imtcp" address="127.0.0.1" port="%d")`, port),
		"/var/log/sockwarden/", out+"/"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port, out
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector does not listen")
		}
	}
}

// waitCollected waits until the collector has written a host's file
// (in dir) holding n records, and returns its path and lines.
func waitCollected(t *testing.T, dir string, n int) (string, []string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		var b []byte
		if len(files) == 1 {
			b, _ = os.ReadFile(files[0])
			if strings.Count(string(b), `{"@timestamp":`) >= n {
				return files[0], strings.SplitAfter(string(b), "\n")
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector wrote %v; want one file of %d records:\n%s", files, n, b)
		}
	}
}

// verifyLastHash runs audit verify -json (with args) and returns the
// exit status and "HASH (N records)".
func verifyLastHash(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, _, code := runExit(t, exec.Command(binary(t), append([]string{"audit", "verify", "-json"}, args...)...))
	var r struct {
		LastHash string `json:"last_hash"`
		Records  int    `json:"records"`
	}
	json.Unmarshal([]byte(out), &r)
	return fmt.Sprintf("%s (%d records)", r.LastHash, r.Records), code
}

// TestAuditToCollectorOverTCP: the syslog sink sends straight to a
// collector rsyslogd over TCP (octet counting): its file verifies with
// audit verify -syslog, ending where the local file does.
func TestAuditToCollectorOverTCP(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	port, collectedDir := startCollector(t, dir)
	local := filepath.Join(dir, "audit.jsonl")
	cfg := filepath.Join(dir, "c.toml")
	mustWrite(t, cfg, fmt.Sprintf("[audit]\nsink = \"file\"\npath = %q\n\n[[audit.sinks]]\ntype = \"syslog\"\nsyslog_address = \"tcp://127.0.0.1:%d\"\n", local, port))
	sock := filepath.Join(dir, "s.sock")
	ts := startServerCmd(t, sock, exec.Command(binary(t), "-c", cfg, "-p", "testdata/policy/basic.rego", sock))
	for range 2 {
		decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "direct"}, nil, true)))
	}
	collected, _ := waitCollected(t, collectedDir, 1+2*3)
	got, code := verifyLastHash(t, "-syslog", collected)
	want, _ := verifyLastHash(t, local)
	if code != 0 || got != want {
		t.Errorf("collector: exit %d, %s; local file: %s", code, got, want)
	}
}

// TestAuditThroughRsyslog: sockwarden writes its trail to a file and, as
// a second sink, to a local rsyslogd's socket; that rsyslogd forwards
// over TCP (octet-counted framing) to a collector rsyslogd, which writes
// a file. audit verify --syslog passes on the collector's file, whose
// chain ends where the local file's does, and fails once a line is
// removed from it.
func TestAuditThroughRsyslog(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	port, collectedDir := startCollector(t, dir)
	logSock := filepath.Join(dir, "log")
	// The host's own rsyslog reads /dev/log; this one reads a socket of
	// the test's, and forwards with the walkthrough's rule.
	startRsyslogd(t, dir, "relay", fmt.Sprintf(`module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket=%q CreatePath="on")
`, logSock)+exampleConf(t, "rsyslog-forward.conf", `target="COLLECTOR" port="6514"`, fmt.Sprintf(`target="127.0.0.1" port="%d"`, port)))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(logSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay has no socket")
		}
	}

	local := filepath.Join(dir, "audit.jsonl")
	cfg := filepath.Join(dir, "c.toml")
	mustWrite(t, cfg, fmt.Sprintf(`[audit]
sink = "file"
path = %q

[[audit.sinks]]
type = "syslog"
syslog_socket = %q
syslog_format = "rfc3164"
syslog_facility = "local3"
`, local, logSock))
	sock := filepath.Join(dir, "s.sock")
	ts := startServerCmd(t, sock, exec.Command(binary(t), "-c", cfg, "-p", "testdata/policy/basic.rego", sock))
	for range 3 {
		if r := decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "shipped"}, nil, true))); r.Final[1] != "0" {
			t.Fatalf("echo: %v", r.Final)
		}
	}
	denyReply(t, exchange(t, ts.Socket, request([]string{"date"}, nil, true)), "not on the list")
	const want = 1 + 3*3 + 1 // server.start, 3 x (decision, start, exit), a denied decision
	collected, lines := waitCollected(t, collectedDir, want)
	got, code := verifyLastHash(t, "-syslog", collected)
	local2, _ := verifyLastHash(t, local)
	if code != 0 || got != local2 {
		t.Fatalf("verify -syslog: exit %d, %s; the local file: %s", code, got, local2)
	}
	verify := func(args ...string) (string, int) {
		out, errOut, code := runExit(t, exec.Command(binary(t), append([]string{"audit", "verify"}, args...)...))
		return out + errOut, code
	}
	// Plain verify does not read a collector's lines as records.
	if _, code := verify(collected); code == 0 {
		t.Error("plain verify passes on the collector's file")
	}

	// One record removed on the way: the chain says so.
	var cut []string
	removed := false
	for _, l := range lines {
		if !removed && strings.Contains(l, `"action":"exec.start"`) {
			removed = true
			continue
		}
		cut = append(cut, l)
	}
	tampered := filepath.Join(dir, "tampered.log")
	mustWrite(t, tampered, strings.Join(cut, ""))
	if out, code := verify("-syslog", tampered); code != 1 || !strings.Contains(out, "deleted") {
		t.Errorf("verify -syslog after a line was removed: exit %d\n%s", code, out)
	}
}
