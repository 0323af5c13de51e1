package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/testutil"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/sandbox"
)

// binary is the sockwarden command, built once per test run.
func binary(t testing.TB) string { return testutil.Binary(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinary()
	os.Exit(code)
}

// testServer is a sockwarden process serving on a temporary socket.
type testServer struct {
	t      testing.TB
	Socket string
	Cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts the built binary with args followed by a fresh
// socket path, and waits until it accepts connections.
func startServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "s.sock")
	return startServerAt(t, sock, args...)
}

func startServerAt(t testing.TB, sock string, args ...string) *testServer {
	t.Helper()
	return startServerCmd(t, sock, exec.Command(binary(t), append(append([]string{"-d"}, args...), sock)...))
}

// startServerCmd starts cmd, a server that will listen on sock, and
// waits until it accepts connections.
func startServerCmd(t testing.TB, sock string, cmd *exec.Cmd) *testServer {
	t.Helper()
	ts := &testServer{t: t, Socket: sock, Cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = ts.logs
	cmd.Stderr = ts.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(ts.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ts.exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-ts.exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return ts
		}
		select {
		case <-ts.exited:
			t.Fatalf("server exited at start-up: %v\n%s", cmd.ProcessState, ts.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start listening: %v\n%s", err, ts.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shortTempDir returns a temporary directory with a short path: socket
// paths are limited to 107 bytes.
func shortTempDir(t testing.TB) string { return testutil.ShortDir(t) }

// request encodes argv and stdin chunks as a client would; closeStdin
// appends "0:,".
func request(argv []string, stdin []string, closeStdin bool) []byte {
	b := netstring.AppendString(nil, strconv.Itoa(len(argv)))
	for _, a := range argv {
		b = netstring.AppendString(b, a)
	}
	for _, s := range stdin {
		b = netstring.AppendString(b, s)
	}
	if closeStdin {
		b = append(b, "0:,"...)
	}
	return b
}

// pairs encodes a reply: type, data, type, data...
func pairs(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = netstring.AppendString(b, s)
	}
	return b
}

func dial(t testing.TB, sock string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.UnixConn)
}

// exchange sends raw bytes and returns everything the server sends until
// it closes the connection. It never half-closes.
func exchange(t testing.TB, sock string, send []byte) []byte {
	t.Helper()
	c := dial(t, sock)
	if _, err := c.Write(send); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading reply: %v (got %q so far)", err, got)
	}
	return got
}

// reply is a decoded server reply.
type reply struct {
	Stdout, Stderr bytes.Buffer
	Final          []string // type, value of the final pair
	Order          []string // types in arrival order
}

// decodeReply parses a full reply strictly: pairs of netstrings, only the
// four protocol types, exactly one final pair, and nothing after it.
func decodeReply(t testing.TB, raw []byte) *reply {
	t.Helper()
	r := &reply{}
	d := netstring.NewDecoder(bufio.NewReader(bytes.NewReader(raw)), 1<<30)
	for {
		typ, err := d.Decode(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reply is not netstrings: %v", err)
		}
		data, err := d.Decode(nil)
		if err != nil {
			t.Fatalf("reply %q without data: %v", typ, err)
		}
		if r.Final != nil {
			t.Fatalf("pair %q after the final pair %v", typ, r.Final)
		}
		r.Order = append(r.Order, string(typ))
		switch string(typ) {
		case "stdout":
			r.Stdout.Write(data)
		case "stderr":
			r.Stderr.Write(data)
		case "exitcode", "termsig":
			r.Final = []string{string(typ), string(data)}
		default:
			t.Fatalf("unknown reply type %q", typ)
		}
	}
	if r.Final == nil {
		t.Fatalf("reply has no final pair: %q", raw)
	}
	return r
}

// readPair reads one type/data pair from c.
func readPair(t testing.TB, d *netstring.Decoder) (string, string) {
	t.Helper()
	typ, err := d.Decode(nil)
	if err != nil {
		t.Fatalf("reading type: %v", err)
	}
	data, err := d.Decode(nil)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	return string(typ), string(data)
}

// gone reports whether pid no longer runs (absent, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// waitGone waits up to d for every pid to be gone.
func waitGone(t testing.TB, d time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still running %v later", pid, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// assertAlive checks that the server still answers a normal request.
func (ts *testServer) assertAlive(t testing.TB) {
	t.Helper()
	ts.assertAliveWith(t, []string{"echo", "alive"})
}

// assertAliveWith checks that argv, an echo, is answered correctly.
func (ts *testServer) assertAliveWith(t testing.TB, argv []string) {
	t.Helper()
	got := exchange(t, ts.Socket, request(argv, nil, true))
	if want := pairs("stdout", strings.Join(argv[1:], " ")+"\n", "exitcode", "0"); !bytes.Equal(got, want) {
		t.Fatalf("liveness check: got %q, want %q", got, want)
	}
}

// isDynamicUID reports whether s is a uid of the default dynamic range,
// which the default policy gives each request of a root server.
func isDynamicUID(s string) bool {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	r := sandbox.DefaultUIDRange
	return err == nil && uint32(n) >= r.First && uint32(n) <= r.Last
}

// logHas reports whether the server's log has s, waiting up to 10 s for
// it: the log reaches the test through a pipe, after the reply.
func (ts *testServer) logHas(s string) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if strings.Contains(ts.logs.String(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
