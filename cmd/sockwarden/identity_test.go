package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/audit"
)

// dialAs connects to sock from an OS thread whose real, effective and
// filesystem ids are uid/gid (the saved set-user-ID stays 0, so the
// thread can come back). It then runs send on that same thread, with
// the ids given by sendAs (the client may change identity after
// connecting). The thread is never handed back to the runtime: it ends
// with the goroutine, whatever ids it has.
func dialAs(t *testing.T, sock string, uid, sendAs int, send func(c *net.UnixConn) error) *net.UnixConn {
	t.Helper()
	type result struct {
		c   *net.UnixConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		setids := func(id int) error {
			// Raw system calls: per thread, unlike syscall.Setresuid.
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(id), uintptr(id), 0); e != 0 {
				return e
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(id), uintptr(id), 0); e != 0 {
				return e
			}
			return nil
		}
		if err := setids(uid); err != nil {
			ch <- result{nil, err}
			return
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		if err := setids(sendAs); err != nil {
			c.Close()
			ch <- result{nil, err}
			return
		}
		uc := c.(*net.UnixConn)
		ch <- result{uc, send(uc)}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	r.c.SetDeadline(time.Now().Add(30 * time.Second))
	return r.c
}

// The server's idea of the client's identity is SO_PEERCRED, taken by
// the kernel when the client connected: no bytes the client sends, no
// SCM_CREDENTIALS it attaches, no change of its ids after connecting can
// alter it. The audit record names the kernel's uid and pid.
func TestPeerCredCannotBeClaimed(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	ts, tr := startAuditServer(t, "-M", "0666")
	if err := os.Chmod(filepath.Dir(ts.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	// What a client might send to claim root: SCM_CREDENTIALS saying uid
	// 0 (the kernel accepts it from this thread, whose saved uid is 0, so
	// the server would see it if it listened for them), and argv and
	// stdin full of identity-looking data.
	claims := []string{"sh", "-c", "id -u", `{"peer":{"uid":0,"gid":0,"pid":1}}`, "uid=0", "SO_PEERCRED=0", "1:1,2:id,0:,"}
	send := func(claimUID int) func(c *net.UnixConn) error {
		return func(c *net.UnixConn) error {
			oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(claimUID), Gid: uint32(claimUID)})
			_, _, err := c.WriteMsgUnix(request(claims, []string{"peer.uid=0\n"}, true), oob, nil)
			return err
		}
	}
	denied := regexp.MustCompile(`^6:stderr,\d+:sockwarden: denied: this sockwarden runs its built-in default policy[^\n]*\n,8:exitcode,3:126,$`)
	ranAs := regexp.MustCompile(`^6:stdout,6:([0-9]{5})\n,8:exitcode,1:0,$`)

	for _, tt := range []struct {
		name                string
		connectAs, sendAs   int
		claim               int
		wantUID             string
		wantDenied, wantRan bool
	}{
		{"nobody claims root", nobody, nobody, 0, "65534", true, false},
		{"nobody connects, becomes root, then sends", nobody, 0, 0, "65534", true, false},
		{"root claims nobody", 0, 0, nobody, "0", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mark := tr.count(t)
			c := dialAs(t, ts.Socket, tt.connectAs, tt.sendAs, send(tt.claim))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDenied && !denied.Match(got) {
				t.Errorf("reply %q, want the default policy's deny", got)
			}
			if m := ranAs.FindSubmatch(got); tt.wantRan && (m == nil || !isDynamicUID(string(m[1]))) {
				t.Errorf("reply %q, want the program run (as a dynamic uid, the default policy's sandbox)", got)
			}
			d := withAction(tr.since(t, mark), audit.ActionDecision)
			if len(d) != 1 {
				t.Fatalf("%d decision records", len(d))
			}
			if d[0].Str("client.user.id") != tt.wantUID || d[0].Str("client.user.group.id") != tt.wantUID ||
				d[0].Num("sockwarden.peer.pid") != int64(os.Getpid()) {
				t.Errorf("decision names uid %q gid %q pid %d; want uid and gid %s, pid %d (the kernel's)",
					d[0].Str("client.user.id"), d[0].Str("client.user.group.id"), d[0].Num("sockwarden.peer.pid"), tt.wantUID, os.Getpid())
			}
			if d[0].Get("sockwarden.decision.allow") != tt.wantRan {
				t.Errorf("decision %v", d[0])
			}
		})
	}
	ts.assertAlive(t)
}

// The client's environment never reaches the program: not its variables,
// not its PATH (argv[0] is resolved with the server's configured PATH).
func TestClientEnvironmentNeverReachesChild(t *testing.T) {
	ts := startServer(t)
	evil := shortTempDir(t)
	if err := os.WriteFile(filepath.Join(evil, "uname"), []byte("#!/bin/sh\necho hijacked\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(argv ...string) string {
		cmd := exec.Command(binary(t), append([]string{"run", ts.Socket, "--"}, argv...)...)
		cmd.Env = []string{"PATH=" + evil + ":/usr/bin:/bin", "SOCKWARDEN_CLIENT_SECRET=leaked", "BASH_ENV=/tmp/evil", "ENV=/tmp/evil", "HOME=/root"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out.String())
		}
		return out.String()
	}
	if got := run("env"); got != "PATH=/usr/local/bin:/usr/bin:/bin\n" {
		t.Errorf("the program's environment:\n%s", got)
	}
	if got := run("uname"); strings.Contains(got, "hijacked") {
		t.Error("argv[0] was resolved with the client's PATH")
	}
}

// The socket file never exists with wider permissions than -M, across
// server start-ups: a watcher stats the path while servers start and stop
// in a loop.
func TestSocketModeWhileStarting(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "s.sock")
	var stop atomic.Bool
	var seen atomic.Int64
	var mu sync.Mutex
	var bad []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				var st syscall.Stat_t
				if syscall.Lstat(filepath.Join(dir, e.Name()), &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
					continue
				}
				seen.Add(1)
				if st.Mode&0o777&^0o600 != 0 || (e.Name() == "s.sock" && st.Mode&0o777 != 0o600) {
					mu.Lock()
					bad = append(bad, e.Name()+": "+os.FileMode(st.Mode&0o777).String())
					mu.Unlock()
				}
			}
		}
	}()
	for range 8 {
		ts := startServerAt(t, sock, "-M", "0600") // returns once it accepts
		ts.Cmd.Process.Signal(syscall.SIGTERM)
		<-ts.exited
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket left after shutdown: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("socket seen with wider permissions than 0600: %v", bad)
	}
	if seen.Load() == 0 {
		t.Fatal("the watcher never saw the socket")
	}
}
