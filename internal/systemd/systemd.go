// Package systemd implements the two systemd protocols a daemon needs:
// socket activation (receiving listening sockets in LISTEN_FDS) and
// readiness notification (sd_notify over NOTIFY_SOCKET).
//
// Both work without libsystemd and do nothing when the service was not
// started by systemd.
package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// listenFDsStart is the first descriptor passed by systemd.
const listenFDsStart = 3

// Files returns the descriptors passed by socket activation, or nil when
// there are none for this process. It unsets the LISTEN_* variables so
// that children do not see them, and marks the descriptors close-on-exec.
func Files() ([]*os.File, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd: bad LISTEN_FDS %q", fds)
	}
	files := make([]*os.File, 0, n)
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		syscall.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i := fd - listenFDsStart; i < len(names) && names[i] != "" {
			name = names[i]
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, nil
}

// UnixListener returns the single UNIX stream listener passed by socket
// activation, or nil when there is none.
func UnixListener() (*net.UnixListener, error) {
	files, err := Files()
	if err != nil || files == nil {
		return nil, err
	}
	if len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("systemd: %d sockets passed, want exactly 1", len(files))
	}
	defer files[0].Close()
	l, err := net.FileListener(files[0])
	if err != nil {
		return nil, fmt.Errorf("systemd: passed descriptor: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("systemd: passed socket is %s, want a UNIX stream socket", l.Addr().Network())
	}
	return ul, nil
}

// ErrNoNotifySocket is returned by Notify when NOTIFY_SOCKET is unset.
var ErrNoNotifySocket = errors.New("systemd: NOTIFY_SOCKET not set")

// Notify sends a state such as "READY=1", "RELOADING=1" or "STOPPING=1"
// to the service manager.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return ErrNoNotifySocket
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}
