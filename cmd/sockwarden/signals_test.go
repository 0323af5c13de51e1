package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"bufio"
	"github.com/sockwarden/sockwarden/netstring"
)

// waitLog waits until the server's log has one more line containing s
// than it had (n).
func (ts *testServer) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(ts.logs.String(), s) <= n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no new %q in the log", s)
		}
	}
}

// SIGHUP applies what a running server can change (here the connection
// deadline, for the next connection) and names each changed key that
// needs a restart (here the listen backlog).
func TestConfigReloadReport(t *testing.T) {
	dir := shortTempDir(t)
	cfgFile := filepath.Join(dir, "config.toml")
	write := func(body string) {
		if err := os.WriteFile(cfgFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("[server]\ntimeout = \"30s\"\nkill_timeout = \"1s\"\n")
	ts := startServer(t, "-c", cfgFile)
	write("[server]\ntimeout = \"1s\"\nkill_timeout = \"1s\"\nbacklog = 7\n")
	n := strings.Count(ts.logs.String(), "configuration reloaded")
	ts.Cmd.Process.Signal(syscall.SIGHUP)
	ts.waitLog(t, "configuration reloaded", n)
	logs := ts.logs.String()
	if !strings.Contains(logs, `"restart to apply","key":"server.backlog"`) && !strings.Contains(logs, `restart to apply","key":"server.backlog"`) {
		t.Errorf("the reload does not name server.backlog as needing a restart:\n%s", logs)
	}
	if !strings.Contains(logs, `"applied":["server.timeout"]`) {
		t.Errorf("the reload does not say it applied server.timeout:\n%s", logs)
	}
	// The new deadline is in force: a long program is stopped after 1 s,
	// not 30.
	start := time.Now()
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"sleep", "20"}, nil, true)))
	if r.Final[0] != "termsig" || time.Since(start) > 10*time.Second {
		t.Errorf("sleep 20 after the reload: %v after %v; want killed at the new 1 s deadline", r.Final, time.Since(start))
	}
}

// SIGHUP re-reads the configuration file: the sandbox defaults take
// effect for the next request; a broken file keeps the running
// configuration.
func TestConfigReload(t *testing.T) {
	dir := shortTempDir(t)
	cfgFile := filepath.Join(dir, "config.toml")
	write := func(body string) {
		if err := os.WriteFile(cfgFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("[sandbox.env]\nPATH = \"/usr/bin:/bin\"\nSTAGE = \"one\"\n")
	ts := startServer(t, "-c", cfgFile)
	env := func() string {
		r := decodeReply(t, exchange(t, ts.Socket, request([]string{"printenv", "STAGE"}, nil, true)))
		return r.Stdout.String()
	}
	if got := env(); got != "one\n" {
		t.Fatalf("STAGE = %q, want one", got)
	}

	write("[sandbox.env]\nPATH = \"/usr/bin:/bin\"\nSTAGE = \"two\"\n")
	n := strings.Count(ts.logs.String(), "configuration reloaded")
	ts.Cmd.Process.Signal(syscall.SIGHUP)
	ts.waitLog(t, "configuration reloaded", n)
	if got := env(); got != "two\n" {
		t.Fatalf("after SIGHUP: STAGE = %q, want two", got)
	}

	write("[sandbox.env]\nPATH = \"/usr/bin:/bin\"\nSTAGE = \"three\"\nbogus_key = 1\n[nope]\n")
	n = strings.Count(ts.logs.String(), "configuration reload failed")
	ts.Cmd.Process.Signal(syscall.SIGHUP)
	ts.waitLog(t, "configuration reload failed", n)
	if got := env(); got != "two\n" {
		t.Fatalf("after a broken reload: STAGE = %q, want two (kept)", got)
	}
	if !strings.Contains(ts.logs.String(), "config.toml:4: sandbox.env.bogus_key") {
		t.Error("the reload error does not name the key and line")
	}
}

// SIGUSR1 logs every live connection with its child, as sockexec does.
func TestSIGUSR1Dump(t *testing.T) {
	ts := startServer(t)
	c := dial(t, ts.Socket)
	c.Write(request([]string{"sh", "-c", "echo $$; exec sleep 30"}, nil, false))
	_, pid := readPair(t, netstring.NewDecoder(bufio.NewReader(c), 1<<20))
	n := strings.Count(ts.logs.String(), `"msg":"connection"`)
	ts.Cmd.Process.Signal(syscall.SIGUSR1)
	ts.waitLog(t, `"msg":"connection"`, n)
	logs := ts.logs.String()
	if !strings.Contains(logs, `"child_pid":`+strings.TrimSpace(pid)) || !strings.Contains(logs, `"argv":"sh -c echo $$; exec sleep 30 (3 args)"`) {
		t.Errorf("dump does not show the connection's child %s:\n%s", strings.TrimSpace(pid), logs)
	}
	if !strings.Contains(logs, `"msg":"state"`) {
		t.Error("no state summary line")
	}
	// Each connection's state, and its age for a person ("1.234s"), not
	// raw nanoseconds.
	if !strings.Contains(logs, `"state":"running"`) {
		t.Errorf("dump does not show the connection's state:\n%s", logs)
	}
	if !regexp.MustCompile(`"age":"[0-9.]+(ms|s)"`).MatchString(logs) {
		t.Errorf("dump does not show a human-readable age:\n%s", logs)
	}
}
