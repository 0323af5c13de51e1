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

// TestAuditThroughRsyslog: sockwarden writes its trail to a file and, as
// a second sink, to a local rsyslogd's socket; that rsyslogd forwards
// over TCP (octet-counted framing) to a collector rsyslogd, which writes
// a file. audit verify --syslog passes on the collector's file, whose
// chain ends where the local file's does, and fails once a line is
// removed from it.
func TestAuditThroughRsyslog(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
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
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector does not listen")
		}
	}
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
	var lines []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(collected)
		lines = strings.SplitAfter(string(b), "\n")
		if n := strings.Count(string(b), `{"@timestamp":`); n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector has %d of %d records:\n%s", strings.Count(string(b), `{"@timestamp":`), want, b)
		}
	}
	verify := func(args ...string) (string, int) {
		out, errOut, code := runExit(t, exec.Command(binary(t), append([]string{"audit", "verify"}, args...)...))
		return out + errOut, code
	}
	out, code := verify("-syslog", "-json", collected)
	if code != 0 {
		t.Fatalf("verify -syslog: exit %d\n%s", code, out)
	}
	localOut, _ := verify("-json", local)
	lastHash := func(s string) string {
		var r struct {
			LastHash string `json:"last_hash"`
			Records  int    `json:"records"`
		}
		json.Unmarshal([]byte(s), &r)
		return fmt.Sprintf("%s (%d records)", r.LastHash, r.Records)
	}
	if h := lastHash(out); strings.HasPrefix(h, " ") || h != lastHash(localOut) {
		t.Errorf("the collector's chain ends at %q, the local file's at %q", h, lastHash(localOut))
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
