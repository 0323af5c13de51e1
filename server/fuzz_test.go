package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/policy"
)

// harmless admits only programs that cannot hurt the machine whatever
// argv the fuzzer invents; everything else is denied.
type harmless struct{}

func (harmless) Authorize(_ context.Context, req *Request) (*policy.Decision, error) {
	switch req.Exe {
	case "/usr/bin/true", "/usr/bin/cat", "/usr/bin/echo", "/usr/bin/false":
		return &policy.Decision{Allow: true, Env: map[string]string{"PATH": "/usr/bin"}, MaxOutputBytes: 1 << 20}, nil
	}
	return &policy.Decision{Message: "fuzzing"}, nil
}

var (
	fuzzOnce sync.Once
	fuzzSock string
	fuzzSrv  *Server
	// fuzzStates is the last state of each connection of the shared
	// server (request id -> ConnState).
	fuzzStates sync.Map
	// fuzzBase is what the process holds once the shared server has
	// served its first input: the descriptors and goroutines that every
	// later input must give back.
	fuzzBase struct {
		set            bool
		fds, routines  int
		maxFDs, maxGRs int
	}
)

// Slack over the baseline: the sandbox keeps a few spawning threads
// (each a parked goroutine) ready, and the runtime's own goroutines come
// and go.
const (
	fuzzFDSlack = 4
	fuzzGRSlack = 10
)

// fuzzServer is one server shared by all fuzz iterations of the process,
// so that a leak or a wedged state shows up as later failures.
func fuzzServer(t testing.TB) string {
	fuzzOnce.Do(func() {
		dir, err := os.MkdirTemp("", "swf")
		if err != nil {
			t.Fatal(err)
		}
		fuzzSock = filepath.Join(dir, "s.sock")
		l, err := Listen(ListenConfig{Path: fuzzSock, Mode: 0o600, UID: -1, GID: -1})
		if err != nil {
			t.Fatal(err)
		}
		s := newTestServer(t, Config{
			Authorizer:  harmless{},
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			KillTimeout: 100 * time.Millisecond,
			MaxConns:    1000,
			ConnState:   func(id string, st ConnState) { fuzzStates.Store(id, st) },
		})
		fuzzSrv = s
		go s.Serve(l)
	})
	return fuzzSock
}

// assertNoLeak waits until the shared server has finished every
// connection and the process is back to its baseline of descriptors and
// goroutines (within a small slack), and fails if that does not happen:
// whatever the input, a finished connection must leave nothing behind.
func assertNoLeak(t *testing.T, in []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fds, grs := countFDs(t), runtime.NumGoroutine()
		active := fuzzSrv.Stats().Active
		if active == 0 && !fuzzBase.set {
			fuzzBase.set, fuzzBase.fds, fuzzBase.routines = true, fds, grs
		}
		if active == 0 && fds <= fuzzBase.fds+fuzzFDSlack && grs <= fuzzBase.routines+fuzzGRSlack && allClosed() {
			fuzzBase.maxFDs = max(fuzzBase.maxFDs, fds)
			fuzzBase.maxGRs = max(fuzzBase.maxGRs, grs)
			fuzzStates.Clear()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak after %q: %d connections still active, %d fds (baseline %d), %d goroutines (baseline %d), states %v",
				in, active, fds, fuzzBase.fds, grs, fuzzBase.routines, notClosed())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// FuzzConn sends arbitrary bytes as a client and then hangs up: whatever
// they are, the server must answer or close promptly, and keep serving.
func FuzzConn(f *testing.F) {
	for _, s := range []string{
		"1:1,4:true,0:,",
		"1:2,4:echo,2:hi,0:,",
		"1:1,3:cat,5:hello,0:,",
		"1:1,3:cat,5:hello,",
		"1:1,2:sh,",
		"1:0,",
		"2:-1,",
		"10:1000000000,",
		"4294967296:",
		"1:1,0:,",
		"1:2,4:echo,3:a\x00b,",
		"1:1,3:cat,3:abc;",
		"x",
		"",
		"123456789012345678901234567890:",
		"1:2,4:echo,4294967296:",
		"1:1,3:cat,4294967296:abc",
		"1:2,4:echo,4:\xff\xfe\n\x00,0:,",
		"1:1,6:./true,0:,",
		"1:1,3:1e9,",
		"1:2,4:echo,",
		"1:3,3:cat,1:-,",
		"1:1,3:cat,2:ab,2:cd,0:,2:ef,",
		"01:1,",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sock := fuzzServer(t)
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(in)
		// Hang up (a half-close is a disconnect for the protocol), then
		// the server must finish with this connection promptly.
		c.(*net.UnixConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
			t.Fatalf("connection not closed promptly: %v", err)
		}
		// Still serving.
		got := roundTrip(t, sock, encode("2", "echo", "ok", ""))
		if string(got) != string(encode("stdout", "ok\n", "exitcode", "0")) {
			t.Fatalf("liveness after %q: %q", in, got)
		}
		// Nothing left behind: descriptors and goroutines stay bounded
		// across iterations.
		assertNoLeak(t, in)
	})
}

// notClosed lists the connections of the shared server whose last state
// is not closed.
func notClosed() map[string]ConnState {
	m := map[string]ConnState{}
	fuzzStates.Range(func(k, v any) bool {
		if v.(ConnState) != StateClosed {
			m[k.(string)] = v.(ConnState)
		}
		return true
	})
	return m
}

// allClosed reports whether every connection the shared server has seen
// (at least the fuzz input's and the liveness check's) ended in
// StateClosed.
func allClosed() bool {
	n := 0
	fuzzStates.Range(func(any, any) bool { n++; return true })
	return n >= 2 && len(notClosed()) == 0
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
