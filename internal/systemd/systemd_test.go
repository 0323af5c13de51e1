package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	dir, _ := os.MkdirTemp("", "sd")
	defer os.RemoveAll(dir)
	addr := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", addr)
	if err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != ErrNoNotifySocket {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}

func TestFilesForAnotherProcess(t *testing.T) {
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
	files, err := Files()
	if files != nil || err != nil {
		t.Fatalf("got %v, %v for another pid", files, err)
	}
	if os.Getenv("LISTEN_FDS") != "" {
		t.Error("LISTEN_FDS not unset")
	}
}

func TestNoActivation(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	if l, err := UnixListener(); l != nil || err != nil {
		t.Fatalf("got %v, %v", l, err)
	}
}
