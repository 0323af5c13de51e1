package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/netstring"
)

// outputHelper is the first argument that makes the test binary the
// program a request runs (TestMain): it writes test output as
// outputHelperMain says.
const outputHelper = "-sockwarden-output-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == outputHelper {
		if err := outputHelperMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testPattern is n bytes that differ from any of their shifts, so that
// bytes lost, repeated or out of order change the content.
func testPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ byte(i>>8)*31 ^ byte(i>>16)*7
	}
	return b
}

// outputHelperMain: MODE SIZE, where MODE is
//
//	stdout  SIZE bytes of testPattern to stdout, in 64 KiB writes
//	both    the same to stdout and, at the same time, to stderr
//	pieces  the same to stdout as 600-byte pipe buffers of their own
//	        (spliced from a file into a stdout pipe enlarged to 1 MiB),
//	        so that what the pipe holds spans more buffers than a frame
//	        pipe has
func outputHelperMain(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: %s stdout|both|pieces SIZE", outputHelper)
	}
	size, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	data := testPattern(size)
	write := func(f *os.File) error {
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := f.Write(data[off:min(off+64<<10, len(data))]); err != nil {
				return err
			}
		}
		return nil
	}
	switch args[0] {
	case "stdout":
		return write(os.Stdout)
	case "both":
		var wg sync.WaitGroup
		var errOut error
		wg.Go(func() { errOut = write(os.Stdout) })
		errErr := write(os.Stderr)
		wg.Wait()
		if errOut != nil {
			return errOut
		}
		return errErr
	case "pieces":
		if _, err := unix.FcntlInt(1, unix.F_SETPIPE_SZ, 1<<20); err != nil {
			return fmt.Errorf("F_SETPIPE_SZ: %w", err)
		}
		f, err := os.CreateTemp("", "sockwarden-pieces-")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.Write(data); err != nil {
			return err
		}
		for off := int64(0); off < int64(size); {
			n, err := unix.Splice(int(f.Fd()), &off, 1, nil, min(600, size-int(off)), 0)
			if err != nil {
				return fmt.Errorf("splice: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("splice: end of file at %d", off)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// Streamed output goes to the client through splice (splice.go),
// byte-exact and in order, with stdout and stderr frames from two pumps
// on one connection, and when what a pipe holds spans more buffers than
// the frame pipe. The server's count of spliced frames shows the path was
// taken.
func TestSplicedOutput(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const size = 16 << 20
	want := string(testPattern(size))
	tests := []struct {
		mode       string
		wantStderr bool
	}{
		{"stdout", false},
		{"both", true},
		{"pieces", false},
	}
	s, sock := startServer(t, Config{})
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			before := s.spliced.Load()
			raw := roundTrip(t, sock, encode("4", self, outputHelper, tt.mode, strconv.Itoa(size), ""))
			got := decodeTest(t, raw)
			if got.final != "exitcode:0" {
				t.Fatalf("final %q, stderr %.200q", got.final, got.stderr)
			}
			if got.stdout != want {
				t.Errorf("stdout: %d bytes, equal %v; want the %d bytes written", len(got.stdout), got.stdout == want, size)
			}
			if tt.wantStderr && got.stderr != want {
				t.Errorf("stderr: %d bytes, equal %v; want the %d bytes written", len(got.stderr), got.stderr == want, size)
			}
			if !tt.wantStderr && got.stderr != "" {
				t.Errorf("stderr %.200q", got.stderr)
			}
			// The pieces mode's pipe holds up to 1 MiB: pairs stay at
			// the documented bound all the same.
			if m := maxPair(t, raw); m > spliceMax {
				t.Errorf("a pair of %d bytes, more than %d", m, spliceMax)
			}
			if n := s.spliced.Load() - before; n == 0 {
				t.Errorf("no frame was spliced")
			} else {
				t.Logf("%d frames spliced", n)
			}
		})
	}
}

// maxPair returns the size of the largest data netstring of a reply.
func maxPair(t *testing.T, raw []byte) int {
	t.Helper()
	d := netstring.NewDecoder(bytes.NewReader(raw), 1<<30)
	m := 0
	for {
		if _, err := d.Decode(nil); err != nil {
			return m
		}
		data, err := d.Decode(nil)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		m = max(m, len(data))
	}
}

// The output cap holds exactly on the splice path: frames are spliced
// only while all of them fits under the cap, and the read path cuts at it.
func TestSplicedOutputCap(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const limit = 1<<20 + 12345
	s, sock := startServer(t, Config{Authorizer: capped{out: limit}})
	got := decodeTest(t, roundTrip(t, sock, encode("4", self, outputHelper, "stdout", strconv.Itoa(8<<20), "")))
	if want := string(testPattern(limit)); got.stdout != want {
		t.Errorf("stdout: %d bytes, equal to the first %d written: %v", len(got.stdout), limit, got.stdout == want)
	}
	if got.final != "termsig:TERM" {
		t.Errorf("final %q, want termsig:TERM", got.final)
	}
	t.Logf("%d frames spliced", s.spliced.Load())
}

// Long stdin netstrings are spliced from the socket to the child's pipe
// (splice.go), byte-exact, whether the client reads while it sends or
// only after; a child that stops reading ends the forwarding quietly;
// the stdin cap holds exactly. The server's count of spliced stdin bytes
// shows the path was taken.
func TestSplicedStdin(t *testing.T) {
	data := testPattern(8 << 20)
	tests := []struct {
		name   string
		auth   Authorizer
		argv   []string
		chunk  int
		duplex bool // read while sending
		check  func(t *testing.T, got testReply)
	}{
		{"cat duplex", nil, []string{"cat"}, 1 << 20, true, func(t *testing.T, got testReply) {
			if got.final != "exitcode:0" || got.stdout != string(data) {
				t.Errorf("final %q, %d bytes back (equal: %v)", got.final, len(got.stdout), got.stdout == string(data))
			}
		}},
		{"cat send then read", nil, []string{"cat"}, 256 << 10, false, func(t *testing.T, got testReply) {
			if got.final != "exitcode:0" || got.stdout != string(data) {
				t.Errorf("final %q, %d bytes back (equal: %v)", got.final, len(got.stdout), got.stdout == string(data))
			}
		}},
		{"child stops reading", nil, []string{"head", "-c", "1000"}, 1 << 20, false, func(t *testing.T, got testReply) {
			if got.final != "exitcode:0" || got.stdout != string(data[:1000]) || got.stderr != "" {
				t.Errorf("final %q, stdout %d bytes (equal: %v), stderr %q", got.final, len(got.stdout), got.stdout == string(data[:1000]), got.stderr)
			}
		}},
		{"stdin cap", capped{in: 300000}, []string{"sh", "-c", `trap "" TERM; wc -c`}, 1 << 20, false, func(t *testing.T, got testReply) {
			if got.stdout != "300000\n" {
				t.Errorf("the program got %q bytes, want exactly the cap 300000", got.stdout)
			}
			if !strings.Contains(got.stderr, "stdin over the limit of 300000 bytes") {
				t.Errorf("stderr %q, want the stdin limit line", got.stderr)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, sock := startServer(t, Config{Authorizer: tt.auth, KillTimeout: time.Second})
			req := encode(append([]string{strconv.Itoa(len(tt.argv))}, tt.argv...)...)
			for off := 0; off < len(data); off += tt.chunk {
				req = netstring.Append(req, data[off:min(off+tt.chunk, len(data))])
			}
			req = append(req, "0:,"...)
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			werr := make(chan error, 1)
			send := func() {
				_, err := c.Write(req)
				werr <- err
			}
			if tt.duplex {
				go send()
			} else {
				send()
			}
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil && tt.name != "child stops reading" && tt.name != "stdin cap" {
				t.Errorf("sending: %v", err)
			}
			tt.check(t, decodeTest(t, raw))
			if n := s.splicedIn.Load(); n == 0 {
				t.Errorf("no stdin was spliced")
			} else {
				t.Logf("%d stdin bytes spliced", n)
			}
		})
	}
}

// A client that ends its stream in the middle of a spliced stdin
// netstring is a client gone: the program is stopped, the connection
// closed, and the server goes on serving.
func TestSplicedStdinTruncated(t *testing.T) {
	s, sock := startServer(t, Config{KillTimeout: time.Second})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := encode("2", "sleep", "30")
	req = append(req, "1048576:"...)
	req = append(req, testPattern(300<<10)...)
	c.Write(req)
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Ended, with a reset for the stdin it did not read.
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the connection was not ended: %v", err)
	}
	if s.splicedIn.Load() == 0 {
		t.Errorf("no stdin was spliced")
	}
	// The server still serves.
	if got := decodeTest(t, roundTrip(t, sock, encode("2", "echo", "ok", ""))); got.stdout != "ok\n" {
		t.Errorf("after: %+v", got)
	}
}
