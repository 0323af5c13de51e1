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
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
)

// TestConformance checks byte-exact replies of the sockexec protocol,
// from raw bytes on the socket to a server run from the built binary.
func TestConformance(t *testing.T) {
	ts := startServer(t)
	uname, err := exec.Command("uname").Output()
	if err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(shortTempDir(t), "data")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		send []byte
		want []byte
	}{
		{"uname", []byte("1:1,5:uname,0:,"), pairs("stdout", string(uname), "exitcode", "0")},
		{"uname without stdin close", []byte("1:1,5:uname,"), pairs("stdout", string(uname), "exitcode", "0")},
		{"exit status 42", request([]string{"sh", "-c", "exit 42"}, nil, true), pairs("exitcode", "42")},
		{"stderr", request([]string{"sh", "-c", "echo oops >&2"}, nil, true), pairs("stderr", "oops\n", "exitcode", "0")},
		{"stdout then stderr in order", request([]string{"sh", "-c", "echo out; sleep 0.1; echo err >&2; sleep 0.1; echo out2"}, nil, true),
			pairs("stdout", "out\n", "stderr", "err\n", "stdout", "out2\n", "exitcode", "0")},
		{"death by TERM", request([]string{"sh", "-c", "kill -TERM $$"}, nil, true), pairs("termsig", "TERM")},
		{"death by KILL", request([]string{"sh", "-c", "kill -KILL $$"}, nil, true), pairs("termsig", "KILL")},
		{"stdin before start", request([]string{"cat"}, []string{"hello"}, true), pairs("stdout", "hello", "exitcode", "0")},
		{"missing program", request([]string{"no-such-program-xyz"}, nil, true),
			pairs("stderr", "sockwarden: \"no-such-program-xyz\": command not found\n", "exitcode", "127")},
		{"missing absolute program", request([]string{"/nonexistent/prog"}, nil, true),
			pairs("stderr", "sockwarden: \"/nonexistent/prog\": no such file or directory\n", "exitcode", "127")},
		{"not executable", request([]string{notExec}, nil, true),
			pairs("stderr", fmt.Sprintf("sockwarden: %q: permission denied\n", notExec), "exitcode", "126")},
		{"relative program", request([]string{"./cat"}, nil, true),
			pairs("stderr", "sockwarden: \"./cat\": relative program paths are not allowed\n", "exitcode", "127")},
		// Malformed requests: the connection is closed with no reply.
		{"argc 0", []byte("1:0,"), nil},
		{"non-numeric argc", []byte("3:abc,5:uname,"), nil},
		{"negative argc", []byte("2:-1,"), nil},
		{"argc too large", []byte("10:1000000000,"), nil},
		{"non-digit length", []byte("x:1,"), nil},
		{"missing comma", []byte("1:1;5:uname,"), nil},
		{"empty argv[0]", []byte("1:1,0:,"), nil},
		{"NUL in argv", request([]string{"echo", "a\x00b"}, nil, true), nil},
		{"malformed stdin", append(request([]string{"sh", "-c", "cat >/dev/null"}, nil, false), "3:abc;"...), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exchange(t, ts.Socket, tt.send)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("reply:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
	ts.assertAlive(t)
}

func TestTruncatedRequest(t *testing.T) {
	ts := startServer(t)
	for _, partial := range []string{"1:", "1:2,5:un", "1:2,5:uname,2:-"} {
		c := dial(t, ts.Socket)
		c.Write([]byte(partial))
		c.CloseWrite() // the rest never comes
		got, err := io.ReadAll(c)
		if err != nil || len(got) != 0 {
			t.Errorf("%q: got %q, %v; want a plain close", partial, got, err)
		}
	}
	ts.assertAlive(t)
	if !ts.logHas("malformed request") {
		t.Errorf("truncated request not logged")
	}
}

// A stdin netstring sent after the child started reaches it, and the
// reply interleaves as the exchange happens.
func TestDuplex(t *testing.T) {
	ts := startServer(t)
	c := dial(t, ts.Socket)
	d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
	script := `while read line; do echo "got $line"; done; exit 7`
	c.Write(request([]string{"sh", "-c", script}, []string{"one\n"}, false))
	if typ, data := readPair(t, d); typ != "stdout" || data != "got one\n" {
		t.Fatalf("first echo: %q %q", typ, data)
	}
	c.Write(pairs("two\n"))
	if typ, data := readPair(t, d); typ != "stdout" || data != "got two\n" {
		t.Fatalf("second echo: %q %q", typ, data)
	}
	c.Write([]byte("0:,"))
	if typ, data := readPair(t, d); typ != "exitcode" || data != "7" {
		t.Fatalf("final: %q %q", typ, data)
	}
	if _, err := d.Decode(nil); err != io.EOF {
		t.Fatalf("after the final pair: %v, want EOF", err)
	}
}

// cat with stdin sent both before and after it started.
func TestCatStdinBeforeAndAfterStart(t *testing.T) {
	ts := startServer(t)
	c := dial(t, ts.Socket)
	c.Write(request([]string{"cat"}, []string{"before "}, false))
	d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
	if typ, data := readPair(t, d); typ != "stdout" || data != "before " {
		t.Fatalf("got %q %q", typ, data)
	}
	c.Write(pairs("after"))
	c.Write([]byte("0:,"))
	if typ, data := readPair(t, d); typ != "stdout" || data != "after" {
		t.Fatalf("got %q %q", typ, data)
	}
	if typ, data := readPair(t, d); typ != "exitcode" || data != "0" {
		t.Fatalf("got %q %q", typ, data)
	}
	if _, err := d.Decode(nil); err != io.EOF {
		t.Fatalf("after the final pair: %v", err)
	}
}

func TestBinaryThroughCat(t *testing.T) {
	ts := startServer(t)
	var in bytes.Buffer
	for i := 0; i < 4096; i++ {
		in.WriteByte(byte(i))
	}
	in.WriteString("\x00\x00,:0:,")
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"cat"}, []string{in.String(), in.String()}, true)))
	if want := in.String() + in.String(); r.Stdout.String() != want {
		t.Fatalf("stdout differs: %d bytes, want %d", r.Stdout.Len(), len(want))
	}
	if r.Final[0] != "exitcode" || r.Final[1] != "0" || r.Stderr.Len() != 0 {
		t.Fatalf("final %v stderr %q", r.Final, r.Stderr.String())
	}
}

func TestLargeOutput(t *testing.T) {
	ts := startServer(t)
	const size = 10 << 20
	script := fmt.Sprintf("yes 0123456789abcdef | head -c %d; yes fedcba9876543210 | head -c %d >&2", size, size/2)
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"sh", "-c", script}, nil, true)))
	want := bytes.Repeat([]byte("0123456789abcdef\n"), size/17+1)[:size]
	if r.Stdout.Len() != size || !bytes.Equal(r.Stdout.Bytes(), want) {
		t.Fatalf("stdout: %d bytes, want %d, equal %v", r.Stdout.Len(), size, bytes.Equal(r.Stdout.Bytes(), want))
	}
	wantErr := bytes.Repeat([]byte("fedcba9876543210\n"), size/2/17+1)[:size/2]
	if !bytes.Equal(r.Stderr.Bytes(), wantErr) {
		t.Fatalf("stderr: %d bytes, want %d", r.Stderr.Len(), size/2)
	}
	if r.Final[0] != "exitcode" || r.Final[1] != "0" {
		t.Fatalf("final %v", r.Final)
	}
}

func TestThousandArguments(t *testing.T) {
	ts := startServer(t)
	argv := []string{"echo"}
	for i := range 1000 {
		argv = append(argv, "arg"+strconv.Itoa(i))
	}
	r := decodeReply(t, exchange(t, ts.Socket, request(argv, nil, true)))
	if want := strings.Join(argv[1:], " ") + "\n"; r.Stdout.String() != want || r.Final[1] != "0" {
		t.Fatalf("got %d bytes of stdout and %v, want %d bytes and exit 0", r.Stdout.Len(), r.Final, len(want))
	}
}

// After the final pair, a late "0:," must not turn the close into a reset.
func TestLateStdinAfterExit(t *testing.T) {
	ts := startServer(t)
	for i := 0; i < 20; i++ {
		c := dial(t, ts.Socket)
		c.Write(request([]string{"true"}, nil, false))
		d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
		if typ, data := readPair(t, d); typ != "exitcode" || data != "0" {
			t.Fatalf("got %q %q", typ, data)
		}
		if _, err := c.Write([]byte("5:late!,0:,")); err != nil {
			t.Fatalf("late write: %v", err)
		}
		if _, err := d.Decode(nil); err != io.EOF {
			t.Fatalf("after the final pair: %v, want a clean EOF", err)
		}
		c.Close()
	}
}

// A client that does not read slows the child down instead of making the
// server buffer its output.
func TestBackpressure(t *testing.T) {
	ts := startServer(t)
	before := rssKiB(t, ts.Cmd.Process.Pid)
	c := dial(t, ts.Socket)
	c.Write(request([]string{"sh", "-c", "echo $$; exec cat /dev/zero"}, nil, true))
	d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
	_, data := readPair(t, d)
	pid, _ := strconv.Atoi(strings.Fields(data)[0])
	time.Sleep(time.Second) // cat would write gigabytes in this time
	after := rssKiB(t, ts.Cmd.Process.Pid)
	if after-before > 8<<10 {
		t.Errorf("server RSS grew from %d KiB to %d KiB with an unread stream", before, after)
	}
	if gone(pid) {
		t.Fatalf("child %d exited", pid)
	}
	// Reading now drains the stream: the child was blocked, not killed.
	n, _ := io.CopyN(io.Discard, c, 64<<20)
	if n != 64<<20 {
		t.Fatalf("read %d bytes after unblocking", n)
	}
	c.Close()
	waitGone(t, 15*time.Second, pid)
}

func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	out, err := exec.Command("sh", "-c", fmt.Sprintf("grep VmRSS /proc/%d/status", pid)).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	n, _ := strconv.Atoi(f[1])
	return n
}

// Over the connection limit, an extra connection is closed at once and
// the others keep working.
func TestConnectionLimit(t *testing.T) {
	// sockexec's -m: the global limit (one uid here: no caller quota).
	cfg, _ := auditConfig(t, shortTempDir(t), noCallerQuota)
	ts := startServer(t, "-c", cfg, "-m", "2")
	// Hold both slots; the start-up probe may still hold one for a moment.
	var held []net.Conn
	var decs []*netstring.Decoder
	for len(held) < 2 {
		c := dial(t, ts.Socket)
		c.Write(request([]string{"sh", "-c", "echo ready; read x; echo $x"}, nil, false))
		d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
		if typ, err := d.Decode(nil); err != nil || string(typ) != "stdout" {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		d.Decode(nil)
		held = append(held, c)
		decs = append(decs, d)
	}
	extra := dial(t, ts.Socket)
	extra.Write(request([]string{"true"}, nil, true))
	// Closed at once, unread request and all: an EOF or a reset.
	got, err := io.ReadAll(extra)
	if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("extra connection got %q, %v; want a close", got, err)
	}
	for i, c := range held {
		c.Write(pairs(fmt.Sprintf("c%d\n", i), ""))
		if typ, data := readPair(t, decs[i]); typ != "stdout" || data != fmt.Sprintf("c%d\n", i) {
			t.Fatalf("held connection %d: %q %q", i, typ, data)
		}
		if typ, data := readPair(t, decs[i]); typ != "exitcode" || data != "0" {
			t.Fatalf("held connection %d: %q %q", i, typ, data)
		}
	}
	if !ts.logHas("connection limit reached") {
		t.Error("rejection not logged")
	}
	// Once the held clients hang up, their slots are free again.
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := dial(t, ts.Socket)
		c.Write(request([]string{"echo", "alive"}, nil, true))
		got, _ := io.ReadAll(c)
		if bytes.Equal(got, pairs("stdout", "alive\n", "exitcode", "0")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not freed after the held clients closed: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The program's environment is exactly the configured one (by default
// only PATH): nothing of the server's own environment leaks through, and
// argv[0] is resolved with the configured PATH, not the server's PATH
// variable.
func TestEnvironmentAndPath(t *testing.T) {
	evil := shortTempDir(t)
	if err := os.WriteFile(filepath.Join(evil, "uname"), []byte("#!/bin/sh\necho hijacked\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOCKWARDEN_TEST_SECRET", "leaked")
	t.Setenv("PATH", evil+":"+os.Getenv("PATH"))
	ts := startServer(t)
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"env"}, nil, true)))
	if got := r.Stdout.String(); got != "PATH=/usr/local/bin:/usr/bin:/bin\n" {
		t.Errorf("child environment:\n%s", got)
	}
	r = decodeReply(t, exchange(t, ts.Socket, request([]string{"uname"}, nil, true)))
	if strings.Contains(r.Stdout.String(), "hijacked") {
		t.Error("argv[0] was resolved with the server's PATH variable")
	}
}
