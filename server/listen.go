package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenConfig says how to create the listening socket.
type ListenConfig struct {
	// Path is the socket's path.
	Path string
	// Mode is the socket file's permission bits (sockexec: 0660).
	Mode os.FileMode
	// UID and GID own the socket file; -1 leaves the server's.
	UID, GID int
	// Backlog is passed to listen(2) (sockexec's -q, default 100).
	Backlog int
}

// ErrInUse is returned by [Listen] when another server answers on the
// socket path.
var ErrInUse = errors.New("another server is listening on the socket")

// Listen creates the UNIX socket described by lc and listens on it.
//
// The socket is bound under a temporary name in the same directory, given
// its mode and owner, and only then renamed into place, so there is no
// moment at which the path accepts connections with wider permissions. A
// file already at the path is replaced only if it is a socket on which no
// server answers; a live socket, a symlink or any other kind of file is an
// error.
func Listen(lc ListenConfig) (*net.UnixListener, error) {
	if lc.Path == "" {
		return nil, errors.New("listen: no socket path")
	}
	if lc.Backlog <= 0 {
		lc.Backlog = 100
	}
	if err := checkExisting(lc.Path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(lc.Path)
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	tmp := filepath.Join(dir, ".sockwarden-"+hex.EncodeToString(rnd[:]))
	if len(tmp) >= len(unix.RawSockaddrUnix{}.Path) || len(lc.Path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("listen: socket path %q is too long", lc.Path)
	}

	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen: socket: %w", err)
	}
	// Bind with a umask that leaves at most the wanted bits, so even the
	// temporary name never has wider permissions.
	old := unix.Umask(int(0o777 &^ lc.Mode.Perm()))
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: tmp})
	unix.Umask(old)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen: bind %s: %w", dir, err)
	}
	fail := func(step string, err error) (*net.UnixListener, error) {
		unix.Close(fd)
		os.Remove(tmp)
		return nil, fmt.Errorf("listen: %s %s: %w", step, lc.Path, err)
	}
	if err := os.Chmod(tmp, lc.Mode.Perm()); err != nil {
		return fail("chmod", err)
	}
	if lc.UID != -1 || lc.GID != -1 {
		if err := os.Lchown(tmp, lc.UID, lc.GID); err != nil {
			return fail("chown", err)
		}
	}
	if err := unix.Listen(fd, lc.Backlog); err != nil {
		return fail("listen", err)
	}
	if err := os.Rename(tmp, lc.Path); err != nil {
		return fail("rename", err)
	}
	f := os.NewFile(uintptr(fd), lc.Path)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(lc.Path)
		return nil, fmt.Errorf("listen: %s: %w", lc.Path, err)
	}
	ul := l.(*net.UnixListener)
	// The file was renamed into place, so the listener must not unlink
	// the temporary name it never had; the server removes lc.Path itself.
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// checkExisting returns nil when path does not exist or is a stale socket.
func checkExisting(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("listen: %s is a symlink; refusing to replace it", path)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("listen: %s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen: %s: %w", path, ErrInUse)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return nil // stale: nobody listens; the rename replaces it
	}
	return fmt.Errorf("listen: probing existing socket %s: %w", path, err)
}
