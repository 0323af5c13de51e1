package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/sandbox"
)

func needCgroups(t *testing.T) {
	t.Helper()
	if r := sandbox.Probe(sandbox.Options{}).Cgroups; !r.Available {
		t.Skipf("no per-request cgroups on this host: %s", r.Reason)
	}
}

// escapee starts a program that double-forks a setsid'd sleeper (out of
// the process group), prints the sleeper's pid and its own cgroup, and
// waits. It returns the sleeper's pid and the cgroup line.
func escapee(t *testing.T, sock string) (*netstring.Decoder, func() error, int, string) {
	t.Helper()
	c := dial(t, sock)
	// The subshell exits at once: the sleeper is nobody's child in the
	// request and in a session (and group) of its own.
	script := `(setsid sh -c 'echo $$; exec sleep 300' &); cat /proc/self/cgroup; exec sleep 300`
	c.Write(request([]string{"sh", "-c", script}, nil, false))
	d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
	var out string
	pid, cgLine := 0, ""
	for pid == 0 || cgLine == "" {
		typ, data := readPair(t, d)
		if typ != "stdout" {
			t.Fatalf("got %s %q (so far %q)", typ, data, out)
		}
		out += data
		for _, l := range strings.Split(out, "\n") {
			if n, err := strconv.Atoi(l); err == nil {
				pid = n
			} else if strings.HasPrefix(l, "0::") {
				cgLine = l
			}
		}
	}
	return d, c.Close, pid, cgLine
}

// A program that escapes its process group with setsid still dies with
// its request, on disconnect and at the deadline, because the request
// has its own cgroup; and that cgroup is the program's own.
func TestCgroupContainment(t *testing.T) {
	needCgroups(t)
	// No Landlock here: the program reads /proc/self/cgroup.
	dir := shortTempDir(t)
	os.WriteFile(filepath.Join(dir, "p.rego"), []byte(`package sockwarden

decision := {"allow": true, "run_as": {"user": "65534", "group": "65534"}}
`), 0o644)
	ts := startServer(t, "-p", dir, "-t", "2", "-k", "1")

	// Disconnect.
	_, hangup, pid, cg := escapee(t, ts.Socket)
	if !strings.Contains(cg, "/sockwarden/req-") {
		t.Errorf("the program is not in a request cgroup: %q", cg)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	hangup()
	waitGone(t, 3*time.Second, pid)

	// Timeout.
	d, _, pid2, cg2 := escapee(t, ts.Socket)
	t.Cleanup(func() { syscall.Kill(pid2, syscall.SIGKILL) })
	if cg2 == cg {
		t.Errorf("two requests share the cgroup %q", cg)
	}
	typ, data := readPair(t, d)
	if typ != "termsig" {
		t.Fatalf("final %s %q", typ, data)
	}
	waitGone(t, 3*time.Second, pid2)

	// The exit records count the processes the cgroup kill took.
	if !ts.logHas(`"cgroup":{"path":`) {
		t.Error("exec.exit has no cgroup statistics")
	}
	// While it runs the server keeps a few empty request cgroups for
	// reuse; once it has stopped, none of its request cgroups is left.
	r := sandbox.Probe(sandbox.Options{}).Cgroups
	mine := filepath.Join(r.Parent, fmt.Sprintf("req-%d-*", ts.Cmd.Process.Pid))
	if running, _ := filepath.Glob(mine); len(running) == 0 {
		t.Errorf("no request cgroup of the running server matches %s: wrong place?", mine)
	}
	ts.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ts.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	if left, _ := filepath.Glob(mine); len(left) != 0 {
		t.Errorf("request cgroups left behind: %v", left)
	}
}

// A decision asking for a cgroup controller this host lacks is refused
// with a clear message, never run without the limit.
func TestCgroupMissingControllerRefused(t *testing.T) {
	needCgroups(t)
	r := sandbox.Probe(sandbox.Options{}).Cgroups
	for _, c := range r.Controllers {
		if c == "memory" {
			t.Skip("this host has the memory controller; nothing to refuse")
		}
	}
	dir := shortTempDir(t)
	os.WriteFile(filepath.Join(dir, "p.rego"), []byte(`package sockwarden

decision := {"allow": true, "run_as": {"user": "65534", "group": "65534"}, "cgroup": {"memory_max": 268435456}}
`), 0o644)
	marker := filepath.Join(dir, "ran")
	ts := startServer(t, "-p", dir)
	got := string(exchange(t, ts.Socket, request([]string{"touch", marker}, nil, true)))
	if !strings.Contains(got, "memory.max") || !strings.HasSuffix(got, "8:exitcode,3:126,") {
		t.Errorf("reply %q", got)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program ran without its memory limit")
	}
}
