// Package testutil holds the test helpers that several packages' tests
// share: a short temporary directory for sockets, the sockwarden binary
// built once, an in-process server, and an accept loop for fake servers.
// It is imported by tests only.
package testutil

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/server"
)

// ShortDir returns a temporary directory with a short path (socket paths
// are limited to 107 bytes), removed at the end of the test.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Binary returns $SOCKWARDEN_BIN, or the sockwarden command built once
// per test process into a temporary directory. Call [RemoveBinary] from
// TestMain to remove it.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SOCKWARDEN_BIN"); p != "" {
		return p
	}
	bin.once.Do(func() {
		dir, err := os.MkdirTemp("", "sockwarden-bin-")
		if err != nil {
			bin.err = err
			return
		}
		// Tests run it as other users too (a non-root server).
		if err := os.Chmod(dir, 0o755); err != nil {
			bin.err = err
			return
		}
		bin.dir = dir
		bin.path = filepath.Join(dir, "sockwarden")
		out, err := exec.Command("go", "build", "-o", bin.path, "github.com/sockwarden/sockwarden/cmd/sockwarden").CombinedOutput()
		if err != nil {
			bin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// bin is the binary built by Binary: one per test process.
var bin struct {
	once      sync.Once
	dir, path string
	err       error
}

// RemoveBinary removes what Binary built.
func RemoveBinary() {
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
}

// StartServer serves cfg in-process with the real server package on a
// fresh socket and returns its path; the server stops at the end of the
// test. Unless cfg says otherwise, logs are discarded, and programs may
// run as the server's user even when that is root (the tests run as
// root).
func StartServer(t testing.TB, cfg server.Config) string {
	t.Helper()
	sock := filepath.Join(ShortDir(t), "s.sock")
	l, err := server.Listen(server.ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Socket = sock
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Authorizer == nil {
		cfg.Defaults = plan.Defaults{AllowRoot: true}
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return sock
}

// Serve accepts connections on a new UNIX socket at sock and calls
// handle for each on a goroutine of its own, the connection closed after
// it. At the end of the test it stops accepting and waits for the
// handlers.
func Serve(t testing.TB, sock string, handle func(c *net.UnixConn)) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}
