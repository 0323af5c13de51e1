package main

import (
	"bytes"
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
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, name+".pid"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("rsyslogd %s:\n%s", name, logs.String())
		}
	})
}

// startCollector starts a collector rsyslogd listening on TCP on a
// loopback port, writing what it gets to a file, and returns both.
func startCollector(t *testing.T, dir string) (int, string) {
	t.Helper()
	port := freeLoopbackPort(t)
	collected := filepath.Join(dir, "collected.log")
	startRsyslogd(t, dir, "collector", fmt.Sprintf(`module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="%d")
template(name="line" type="string" string="%%TIMESTAMP:::date-rfc3339%% %%HOSTNAME%% %%syslogtag%%%%msg%%\n")
action(type="omfile" file=%q template="line")
`, port, collected))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return port, collected
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector does not listen")
		}
	}
}

// waitCollected waits until the collector's file holds n records and
// returns its lines.
func waitCollected(t *testing.T, collected string, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(collected)
		if strings.Count(string(b), `{"@timestamp":`) >= n {
			return strings.SplitAfter(string(b), "\n")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector has %d of %d records:\n%s", strings.Count(string(b), `{"@timestamp":`), n, b)
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
	port, collected := startCollector(t, dir)
	local := filepath.Join(dir, "audit.jsonl")
	cfg := filepath.Join(dir, "c.toml")
	mustWrite(t, cfg, fmt.Sprintf("[audit]\nsink = \"file\"\npath = %q\n\n[[audit.sinks]]\ntype = \"syslog\"\nsyslog_address = \"tcp://127.0.0.1:%d\"\n", local, port))
	sock := filepath.Join(dir, "s.sock")
	ts := startServerCmd(t, sock, exec.Command(binary(t), "-c", cfg, "-p", "testdata/policy/basic.rego", sock))
	for range 2 {
		decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "direct"}, nil, true)))
	}
	waitCollected(t, collected, 1+2*3)
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
	port, collected := startCollector(t, dir)
	logSock := filepath.Join(dir, "log")
	startRsyslogd(t, dir, "relay", fmt.Sprintf(`module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket=%q CreatePath="on")
action(type="omfwd" target="127.0.0.1" port="%d" protocol="tcp" TCP_Framing="octet-counted"
       template="RSYSLOG_SyslogProtocol23Format" action.resumeRetryCount="-1" queue.type="LinkedList")
`, logSock, port))
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
	lines := waitCollected(t, collected, want)
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
