package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The server takes its socket from systemd (LISTEN_FDS, LISTEN_PID, fd 3),
// reports readiness on NOTIFY_SOCKET, and leaves the socket file, which
// is systemd's, in place when it stops.
func TestSocketActivation(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "activated.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	notifyAddr := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyAddr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// systemd sets LISTEN_PID to the service's own pid: sh execs in place.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, binary(t), "-d")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "NOTIFY_SOCKET="+notifyAddr)
	cmd.ExtraFiles = []*os.File{f}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	}()

	buf := make([]byte, 64)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := nc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("readiness: %q, %v", buf[:n], err)
	}
	ts := &testServer{Socket: sock}
	ts.assertAlive(t)

	cmd.Process.Signal(syscall.SIGTERM)
	n, _, err = nc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("stopping: %q, %v", buf[:n], err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("systemd's socket was removed: %v", err)
	}
}
