package server

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"

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
