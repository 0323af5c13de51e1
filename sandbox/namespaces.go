package sandbox

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Namespaces.
//
// A child may get an IPC namespace of its own ([Spec].PrivateIPC): its
// System V shared memory, semaphores and message queues and its POSIX
// message queues are invisible to every other request and to the host,
// and die with it. And it may be cut off from every network
// ([Spec].NoNetwork): it joins an empty network namespace, made once per
// Spawner, where no interface is up, not even loopback, so no IP traffic
// and no abstract UNIX socket of the host is reachable. Both need
// CAP_SYS_ADMIN in the server ([Capabilities].Namespaces).
//
// Every child with a credential of its own also joins a fresh, anonymous
// session keyring, so that it does not possess the server's.

// emptyNetns is the Spawner's empty network namespace, made on first use.
type emptyNetns struct {
	once sync.Once
	fd   int
	err  error
}

// get returns a descriptor of the namespace, making it on first use.
func (n *emptyNetns) get() (int, error) {
	n.once.Do(func() { n.fd, n.err = makeEmptyNetns() })
	return n.fd, n.err
}

func (n *emptyNetns) close() {
	n.once.Do(func() { n.err = errClosed })
	if n.err == nil {
		unix.Close(n.fd)
		n.fd, n.err = -1, errClosed
	}
}

var errClosed = fmt.Errorf("sandbox: spawner closed")

// makeEmptyNetns makes a network namespace on a thread of its own and
// returns a descriptor of it. The thread goes back to the server's
// namespace; if it cannot, it is ended with its goroutine (it has
// started no child, so no parent-death signal depends on it).
func makeEmptyNetns() (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Errorf("sandbox: network namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Errorf("sandbox: network namespace: unshare: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("sandbox: network namespace: %w", err)
		}
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// hasSysAdmin reports whether the process has CAP_SYS_ADMIN in its
// effective set (needed to make and join namespaces).
func hasSysAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}
