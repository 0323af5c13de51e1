package sandbox

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Pipe is the server's end of one of a child's standard streams: the
// write end of its stdin, or the read end of its stdout or stderr. It is
// non-blocking and close-on-exec.
//
// Its *os.File, which adds the descriptor to the Go runtime's poller
// (two system calls, and one more to leave it), is made only when the
// pipe is first read, written, given a deadline or asked for its
// syscall.RawConn. A caller that only waits for the descriptor to become
// ready with a poller of its own, and reads a program's end of output
// with [Pipe.Control], never makes it: a program that writes nothing, or
// a client that sends no stdin, costs no registration with the runtime.
type Pipe struct {
	name string

	mu     sync.Mutex
	fd     int
	f      *os.File // nil until first needed
	closed bool
}

func newPipe(fd int, name string) *Pipe {
	return &Pipe{fd: fd, name: name}
}

// File returns the pipe's *os.File, making it on the first call.
func (p *Pipe) File() (*os.File, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, os.ErrClosed
	}
	if p.f == nil {
		p.f = os.NewFile(uintptr(p.fd), p.name)
	}
	return p.f, nil
}

// Read reads from the pipe (see [os.File.Read]).
func (p *Pipe) Read(b []byte) (int, error) {
	f, err := p.File()
	if err != nil {
		return 0, err
	}
	return f.Read(b)
}

// Write writes to the pipe (see [os.File.Write]).
func (p *Pipe) Write(b []byte) (int, error) {
	f, err := p.File()
	if err != nil {
		return 0, err
	}
	return f.Write(b)
}

// SetReadDeadline sets the deadline of reads (see [os.File.SetReadDeadline]).
func (p *Pipe) SetReadDeadline(t time.Time) error {
	f, err := p.File()
	if err != nil {
		return err
	}
	return f.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline of writes (see [os.File.SetWriteDeadline]).
func (p *Pipe) SetWriteDeadline(t time.Time) error {
	f, err := p.File()
	if err != nil {
		return err
	}
	return f.SetWriteDeadline(t)
}

// SyscallConn returns the raw connection of the pipe's file.
func (p *Pipe) SyscallConn() (syscall.RawConn, error) {
	f, err := p.File()
	if err != nil {
		return nil, err
	}
	return f.SyscallConn()
}

// Control calls fn with the descriptor, which stays open meanwhile,
// without making the file; once the pipe is closed, it returns
// os.ErrClosed and does not call fn. fn must not block: the descriptor is
// non-blocking, and Close waits for fn to return.
func (p *Pipe) Control(fn func(fd uintptr)) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return os.ErrClosed
	}
	if f := p.f; f != nil {
		p.mu.Unlock()
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		return rc.Control(fn)
	}
	defer p.mu.Unlock()
	fn(uintptr(p.fd))
	return nil
}

// Close closes the pipe. A read or write blocked in the file returns.
func (p *Pipe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return os.ErrClosed
	}
	p.closed = true
	if p.f != nil {
		return p.f.Close()
	}
	if err := unix.Close(p.fd); err != nil {
		return fmt.Errorf("close %s: %w", p.name, err)
	}
	return nil
}
