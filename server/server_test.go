package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/testutil/fdcount"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/policy"
)

func TestParseCount(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1, true}, {"1000", 1000, true}, {"0", 0, true},
		{"", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {"1e9", 0, false},
		{" 1", 0, false}, {"99999999999999999999999999999", 0, false},
	} {
		got, err := parseCount([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseCount(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestSignalName(t *testing.T) {
	for sig, want := range map[syscall.Signal]string{
		syscall.SIGTERM: "TERM", syscall.SIGKILL: "KILL", syscall.SIGXFSZ: "XFSZ",
		syscall.SIGXCPU: "XCPU", syscall.SIGSEGV: "SEGV", 0: "",
	} {
		if got := signalName(sig); got != want {
			t.Errorf("signalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestRequestID(t *testing.T) {
	seen := map[string]bool{}
	var ids []string
	for i := 0; i < 1000; i++ {
		id := newRequestID()
		if len(id) != 26 || strings.Trim(id, crockford) != "" {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		ids = append(ids, id)
		if i%100 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	// IDs sort by time at millisecond granularity.
	first, last := ids[0], ids[len(ids)-1]
	if !sort.StringsAreSorted([]string{first[:10], last[:10]}) || first[:10] == last[:10] {
		t.Errorf("ids do not sort by time: %s .. %s", first, last)
	}
}

func sockPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "swt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

func TestListenModeAndReplace(t *testing.T) {
	sock := sockPath(t)
	l, err := Listen(ListenConfig{Path: sock, Mode: 0o640, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Lstat(sock)
	if fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("mode %v", fi.Mode())
	}
	if _, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1}); !errors.Is(err, ErrInUse) {
		t.Errorf("second Listen on a live socket: %v, want ErrInUse", err)
	}
	l.Close() // leaves the file behind, as a crashed server would
	l2, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	entries, _ := os.ReadDir(filepath.Dir(sock))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestListenRefusesNonSockets(t *testing.T) {
	dir := filepath.Dir(sockPath(t))
	reg := filepath.Join(dir, "file")
	os.WriteFile(reg, []byte("precious"), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(reg, link)
	for _, p := range []string{reg, link} {
		if _, err := Listen(ListenConfig{Path: p, Mode: 0o600, UID: -1, GID: -1}); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("Listen(%s) = %v, want a refusal", p, err)
		}
	}
	if b, _ := os.ReadFile(reg); string(b) != "precious" {
		t.Error("regular file was touched")
	}
}

// The backlog really reaches listen(2): with nobody accepting, only about
// backlog+1 connections complete.
func TestListenBacklog(t *testing.T) {
	sock := sockPath(t)
	l, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1, Backlog: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ok := 0
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("unix", sock, 100*time.Millisecond)
		if err != nil {
			continue
		}
		defer c.Close()
		ok++
	}
	if ok < 3 || ok > 5 {
		t.Errorf("%d connections completed with backlog 3 and no accept", ok)
	}
}

// startServer serves cfg on a fresh socket in-process.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	sock := sockPath(t)
	l, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, sock
}

// newTestServer is New for tests: a discarding logger unless one is
// given, and programs allowed to run as the tests' user, root.
func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.Defaults.AllowRoot = true
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func roundTrip(t *testing.T, sock string, req []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(req)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func encode(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		b = netstring.AppendString(b, p)
	}
	return b
}

type denyAll struct{}

func (denyAll) Authorize(context.Context, *Request) (*policy.Decision, error) {
	return &policy.Decision{Message: "no\nway", Reasons: []string{"test"}}, nil
}

type failing struct{}

func (failing) Authorize(context.Context, *Request) (*policy.Decision, error) {
	return nil, errors.New("engine exploded")
}

type capped struct{ out, in int64 }

func (c capped) Authorize(context.Context, *Request) (*policy.Decision, error) {
	return &policy.Decision{Allow: true, MaxOutputBytes: c.out, MaxStdinBytes: c.in}, nil
}

func TestAuthorizerVerdicts(t *testing.T) {
	tests := []struct {
		name string
		auth Authorizer
		req  []byte
		want string // regexp-free: prefix and suffix around the request id
		end  string
	}{
		{"deny", denyAll{}, encode("1", "true", ""), "6:stderr,", "8:exitcode,3:126,"},
		{"error denies", failing{}, encode("1", "true", ""), "6:stderr,", "8:exitcode,3:126,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, sock := startServer(t, Config{Authorizer: tt.auth})
			got := string(roundTrip(t, sock, tt.req))
			if !strings.HasPrefix(got, tt.want) || !strings.HasSuffix(got, tt.end) || !strings.Contains(got, "sockwarden: denied: ") {
				t.Fatalf("reply %q", got)
			}
			if strings.Count(got, "\n") != 1 {
				t.Errorf("deny message is not one line: %q", got)
			}
		})
	}
}

func TestOutputCap(t *testing.T) {
	_, sock := startServer(t, Config{Authorizer: capped{out: 100000}})
	got := roundTrip(t, sock, encode("3", "sh", "-c", "cat /dev/zero", ""))
	d := netstring.NewDecoder(bytes.NewReader(got), 1<<20)
	var out int
	var final []string
	for {
		typ, err := d.Decode(nil)
		if err != nil {
			break
		}
		data, _ := d.Decode(nil)
		if string(typ) == "stdout" {
			out += len(data)
		} else {
			final = []string{string(typ), string(data)}
		}
	}
	if out != 100000 {
		t.Errorf("forwarded %d bytes, want exactly the cap 100000", out)
	}
	if len(final) != 2 || final[0] != "termsig" || final[1] != "TERM" {
		t.Errorf("final %v, want termsig TERM", final)
	}
}

// Stdin over the request's cap ends the request in a clear way: the
// program gets what fits, is stopped, and the client gets a stderr line
// saying why before the final pair; exactly the cap is fine.
func TestStdinCap(t *testing.T) {
	_, sock := startServer(t, Config{Authorizer: capped{in: 10}})
	got := decodeTest(t, roundTrip(t, sock, encode("3", "sh", "-c", "wc -c; sleep 5", "0123456789abcdef", "more", "")))
	if !strings.Contains(got.stderr, "sockwarden: stdin over the limit of 10 bytes; the program was stopped (request ") {
		t.Errorf("stderr %q, want the stdin limit line", got.stderr)
	}
	if got.final != "termsig:TERM" {
		t.Errorf("final pair %q, want termsig TERM (stdout %q stderr %q)", got.final, got.stdout, got.stderr)
	}
	// Control: exactly the cap runs to its end.
	got = decodeTest(t, roundTrip(t, sock, encode("2", "wc", "-c", "0123456789", "")))
	if got.stdout != "10\n" || got.stderr != "" || got.final != "exitcode:0" {
		t.Errorf("at the cap: %+v", got)
	}
}

// testReply is a decoded reply: stdout, stderr and the final pair as
// "type:data".
type testReply struct{ stdout, stderr, final string }

func decodeTest(t *testing.T, raw []byte) testReply {
	t.Helper()
	var r testReply
	var stdout, stderr strings.Builder
	d := netstring.NewDecoder(bytes.NewReader(raw), 1<<20)
	for {
		typ, err := d.Decode(nil)
		if err != nil {
			r.stdout, r.stderr = stdout.String(), stderr.String()
			return r
		}
		data, err := d.Decode(nil)
		if err != nil {
			t.Fatalf("reply %.200q: %v", raw, err)
		}
		switch string(typ) {
		case "stdout":
			stdout.Write(data)
		case "stderr":
			stderr.Write(data)
		default:
			r.final = string(typ) + ":" + string(data)
		}
	}
}

func TestShutdownInterruptsRequestRead(t *testing.T) {
	s, sock := startServer(t, Config{})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("1:2,"))
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown waited on a half-sent request: %v", err)
	}
}

// countFDs counts this process's descriptors, those the cgroup pool
// keeps aside (see fdcount).
func countFDs(t *testing.T) int {
	n, _, err := fdcount.Count(0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Every kind of request ends with no goroutine and no descriptor left.
func TestNoLeaks(t *testing.T) {
	workload := func() {
		s := newTestServer(t, Config{KillTimeout: 200 * time.Millisecond})
		sock := sockPath(t)
		l, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		requests := [][]byte{
			encode("1", "true", ""),
			encode("2", "cat", "-", "stdin data", ""),
			encode("1", "no-such-program"),
			[]byte("x:garbage"),
			encode("3", "sh", "-c", "echo out; echo err >&2; exit 3", ""),
		}
		for i := 0; i < 40; i++ {
			for _, r := range requests {
				roundTrip(t, sock, r)
			}
		}
		// Disconnect while running.
		for i := 0; i < 10; i++ {
			c, _ := net.Dial("unix", sock)
			c.Write(encode("2", "sleep", "10"))
			time.Sleep(5 * time.Millisecond)
			c.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A first round brings the process-wide helpers that persist by design
	// (the sandbox's idle spawning threads, os/signal's loop) to their
	// steady state; the second round must then leave nothing behind.
	workload()
	settle := func() (int, int) {
		time.Sleep(200 * time.Millisecond)
		return countFDs(t), runtime.NumGoroutine()
	}
	fds, gs := settle()
	workload()
	// 250 requests: a per-request leak would show hundreds; a pool
	// resizing itself shows at most a couple.
	const slack = 2
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, g := countFDs(t), runtime.NumGoroutine()
		if f <= fds && g <= gs+slack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak: fds %d -> %d, goroutines %d -> %d", fds, f, gs, g)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A client that hangs up while the program is not reading its stdin (the
// pipe full) is noticed, and the program killed, without waiting for the
// program to read.
func TestHangupWhileStdinBlocked(t *testing.T) {
	s, sock := startServer(t, Config{KillTimeout: time.Second})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(encode("2", "sleep", "30"))
	var pid int
	for deadline := time.Now().Add(5 * time.Second); pid == 0; time.Sleep(5 * time.Millisecond) {
		if conns := s.Conns(); len(conns) == 1 {
			pid = conns[0].ChildPid
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not start")
		}
	}
	// More than the pipe holds; the writes block once the socket buffer
	// is full too, hence the deadline.
	c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	chunk := netstring.Append(nil, bytes.Repeat([]byte("x"), 64<<10))
	for i := 0; i < 16; i++ {
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	c.Close()
	start := time.Now()
	for !childGone(pid) {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("child %d still running %v after the client hung up", pid, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func childGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// The final pair's real-time priority is for two system calls only: after
// requests, no thread of the process is left with a real-time policy.
func TestNoThreadLeftRealtime(t *testing.T) {
	_, sock := startServer(t, Config{})
	for range 20 {
		roundTrip(t, sock, encode("1", "true", ""))
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		// Fields after the command's closing parenthesis; policy is
		// field 41 of stat(5), the 39th after it.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 38 && f[38] != "0" {
			t.Errorf("thread %s has scheduling policy %s", task.Name(), f[38])
		}
	}
}

// sendAllThenRead sends argv, stdin in 64 KiB netstrings and "0:," before
// reading anything, as lua-resty-exec does, then reads the whole reply.
// The send must complete within 60 s: a server that stops taking stdin
// because nobody reads the output would hang it.
func sendAllThenRead(t *testing.T, sock string, argv []string, stdin []byte) testReply {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := encode(append([]string{strconv.Itoa(len(argv))}, argv...)...)
	for off := 0; off < len(stdin); off += 64 << 10 {
		req = netstring.Append(req, stdin[off:min(off+64<<10, len(stdin))])
	}
	req = append(req, "0:,"...)
	c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatalf("sending %d bytes of stdin before reading: %v", len(stdin), err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return decodeTest(t, raw)
}

// A client that sends 32 MiB of stdin before reading anything gets all of
// it back through cat, byte-exact: the output waits in the spool (memory,
// then a temporary file) meanwhile.
func TestLargeStdinBeforeReading(t *testing.T) {
	_, sock := startServer(t, Config{})
	data := make([]byte, 32<<20)
	rand.Read(data)
	got := sendAllThenRead(t, sock, []string{"cat"}, data)
	if got.final != "exitcode:0" || got.stdout != string(data) || got.stderr != "" {
		t.Errorf("final %q, %d bytes back (equal: %v), stderr %q; want exit 0 and the %d bytes sent",
			got.final, len(got.stdout), got.stdout == string(data), got.stderr, len(data))
	}
}

// Past Config.OutputBuffer, the request ends clearly: the program is
// stopped and the client is told why before the final pair.
func TestLargeStdinPastTheBuffer(t *testing.T) {
	_, sock := startServer(t, Config{OutputBuffer: 1 << 20, KillTimeout: time.Second})
	got := sendAllThenRead(t, sock, []string{"cat"}, make([]byte, 8<<20))
	if !strings.Contains(got.stderr, "sockwarden: more than 1048576 bytes of output waited for a client that was still sending stdin; the program was stopped") {
		t.Errorf("stderr %q, want the output buffer line", got.stderr)
	}
	if !strings.HasPrefix(got.final, "termsig:") {
		t.Errorf("final %q, want a termsig", got.final)
	}
	// The buffer, plus what the socket's own buffers took before output
	// started to wait.
	if len(got.stdout) > 1<<20+512<<10 {
		t.Errorf("%d bytes of stdout, more than the buffer lets through", len(got.stdout))
	}
}

// A client that reads while it sends (duplex, as an echo) gets its data
// back byte-exact too, whether its output waits in the spool or not.
func TestDuplexStdinWhileReading(t *testing.T) {
	_, sock := startServer(t, Config{})
	for range 5 {
		data := make([]byte, 8<<20)
		rand.Read(data)
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		req := encode("1", "cat")
		for off := 0; off < len(data); off += 64 << 10 {
			req = netstring.Append(req, data[off:min(off+64<<10, len(data))])
		}
		req = append(req, "0:,"...)
		go c.Write(req)
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		raw, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := decodeTest(t, raw)
		if got.final != "exitcode:0" || got.stdout != string(data) {
			t.Fatalf("final %q, %d bytes back (equal: %v), stderr %q", got.final, len(got.stdout), got.stdout == string(data), got.stderr)
		}
	}
}
