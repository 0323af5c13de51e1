package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
)

// groupScript prints its own pid and a grandchild's, then waits; with
// ignoreTerm both ignore SIGTERM.
func groupScript(ignoreTerm bool) []string {
	s := `sleep 300 & echo "$$ $!"; wait`
	if ignoreTerm {
		s = `trap "" TERM; ` + s
	}
	return []string{"sh", "-c", s}
}

// startGroup sends the script and returns the connection, its decoder and
// the pids of the child and the grandchild.
func startGroup(t *testing.T, sock string, ignoreTerm bool) (*bufio.Reader, *netstring.Decoder, []int, func() error) {
	t.Helper()
	c := dial(t, sock)
	if _, err := c.Write(request(groupScript(ignoreTerm), nil, true)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	d := netstring.NewDecoder(br, 1<<20)
	typ, data := readPair(t, d)
	if typ != "stdout" {
		t.Fatalf("got %q %q", typ, data)
	}
	var pids []int
	for _, f := range strings.Fields(data) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("bad pid line %q", data)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("want 2 pids, got %q", data)
	}
	return br, d, pids, c.Close
}

func TestDeadlineKillsGroup(t *testing.T) {
	for _, tt := range []struct {
		name       string
		ignoreTerm bool
		want       string
		minWait    time.Duration
	}{
		{"TERM", false, "TERM", time.Second},
		{"ignores TERM", true, "KILL", 2 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "-t", "1", "-k", "1")
			start := time.Now()
			_, d, pids, _ := startGroup(t, ts.Socket, tt.ignoreTerm)
			typ, data := readPair(t, d)
			if typ != "termsig" || data != tt.want {
				t.Fatalf("final pair %q %q, want termsig %s", typ, data, tt.want)
			}
			if el := time.Since(start); el < tt.minWait {
				t.Errorf("reply after %v, before the deadline (+ kill timeout) %v", el, tt.minWait)
			}
			if _, err := d.Decode(nil); err != io.EOF {
				t.Errorf("after the final pair: %v, want EOF", err)
			}
			// The grandchild went with the group, well within the kill timeout.
			waitGone(t, time.Second, pids...)
		})
	}
}

func TestDisconnectKillsGroup(t *testing.T) {
	for _, tt := range []struct {
		name       string
		ignoreTerm bool
		halfClose  bool
	}{
		{"close", false, false},
		{"half-close", false, true},
		{"close, child ignores TERM", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "-k", "1")
			c := dial(t, ts.Socket)
			c.Write(request(groupScript(tt.ignoreTerm), nil, false))
			d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
			_, data := readPair(t, d)
			var pids []int
			for _, f := range strings.Fields(data) {
				pid, _ := strconv.Atoi(f)
				pids = append(pids, pid)
			}
			if tt.halfClose {
				c.CloseWrite()
			} else {
				c.Close()
			}
			start := time.Now()
			// Within the kill timeout (1 s), with slack for a loaded machine.
			waitGone(t, 3*time.Second, pids...)
			if tt.ignoreTerm && time.Since(start) < 900*time.Millisecond {
				t.Errorf("a child ignoring TERM was gone after %v, before the kill timeout", time.Since(start))
			}
			ts.assertAlive(t)
			if !ts.logHas(`"reason":"disconnect"`) {
				t.Error("kill not logged with reason disconnect")
			}
			if tt.ignoreTerm && !ts.logHas("escalating") {
				t.Error("escalation to KILL not logged")
			}
		})
	}
}

// SIGTERM to the server kills every child group, removes the socket and
// exits 0.
func TestShutdownKillsChildren(t *testing.T) {
	ts := startServer(t, "-k", "1")
	var pids []int
	for i := 0; i < 5; i++ {
		_, _, p, _ := startGroup(t, ts.Socket, i%2 == 0)
		pids = append(pids, p...)
	}
	start := time.Now()
	ts.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ts.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	if code := ts.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("shutdown took %v", el)
	}
	waitGone(t, time.Second, pids...)
	if _, err := os.Lstat(ts.Socket); !os.IsNotExist(err) {
		t.Errorf("socket still exists after shutdown: %v", err)
	}
}

// SIGKILL to the server: its children die with it (Pdeathsig).
func TestServerDeathKillsChildren(t *testing.T) {
	ts := startServer(t)
	_, _, pids, _ := startGroup(t, ts.Socket, false)
	ts.Cmd.Process.Kill()
	<-ts.exited
	// The grandchild is not the server's child: only the direct child gets
	// the parent-death signal; the grandchild lives on (documented).
	t.Cleanup(func() { syscall.Kill(pids[1], syscall.SIGKILL) })
	waitGone(t, 2*time.Second, pids[0])
}

func TestStaleSocket(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "s.sock")

	// A stale socket (its server died without removing it) is replaced.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	ts := startServerAt(t, sock)
	ts.assertAlive(t)

	// A live one makes a second server refuse to start.
	out, err := runBinary(t, sock)
	if err == nil || !strings.Contains(out, "another server is listening") {
		t.Fatalf("second server: %v\n%s", err, out)
	}
	ts.assertAlive(t)

	// A regular file or a symlink is never replaced.
	for _, mk := range []func(p string) error{
		func(p string) error { return os.WriteFile(p, []byte("data"), 0o600) },
		func(p string) error { return os.Symlink(sock, p) },
	} {
		p := filepath.Join(dir, "other")
		os.Remove(p)
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		out, err := runBinary(t, p)
		if err == nil || !strings.Contains(out, "refusing to replace it") {
			t.Fatalf("server on %s: %v\n%s", p, err, out)
		}
	}
}

func runBinary(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(binary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestSocketMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o660, 0o600, 0o666} {
		ts := startServer(t, "-M", strconv.FormatUint(uint64(mode), 8))
		fi, err := os.Lstat(ts.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("-M %o: socket mode %v", mode, fi.Mode())
		}
	}
}
