package server

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A held connection whose program runs quietly should cost next to
// nothing: no goroutine per descriptor waiting for something to happen.
// The poller is one epoll set per server in which a connection registers what it waits for (its client's socket, its
// child's output pipes, a pidfd for its exit); a goroutine is started
// only when one of them is ready. The epoll descriptor is itself waited
// on through the runtime's network poller, so no OS thread blocks in
// epoll_wait(2) either.
//
// Every registration is one-shot (EPOLLONESHOT): it reports once, then
// stays disabled until rearmed. Its callback runs on the poller's
// goroutine, with the poller's lock held, and must not block nor call
// the poller: it only starts a goroutine or sends on a buffered channel.
// Once remove has returned, a registration's callback is not running
// and will not run again.
type poller struct {
	epfd   int
	f      *os.File // epfd, in the runtime's poller
	closed atomic.Bool
	done   chan struct{}
	mu     sync.Mutex
	next   uint64
	regs   map[uint64]*pollReg
}

// pollReg is one descriptor registered with the poller.
type pollReg struct {
	p      *poller
	key    uint64
	fd     controller
	events uint32
	fn     func(*pollReg)
}

// controller runs f with a descriptor that stays open meanwhile: a
// syscall.RawConn (whose Control fails once its file is closed, so that
// a stale descriptor number, perhaps reused by another file, is never
// touched) or a rawFD.
type controller interface {
	Control(f func(fd uintptr)) error
}

// rawFD is a descriptor owned by the caller, who closes it only after
// removing its registration.
type rawFD int

func (fd rawFD) Control(f func(uintptr)) error {
	f(uintptr(fd))
	return nil
}

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking descriptor given to os.NewFile joins the runtime's
	// poller; an epoll descriptor is readable while events are ready.
	f := os.NewFile(uintptr(fd), "sockwarden-poller")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close() // not pollable
		return nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: fd, f: f, done: make(chan struct{}), regs: make(map[uint64]*pollReg)}
	go p.loop(raw)
	return p, nil
}

// close stops the poller once no connection uses it (the server's
// Shutdown).
func (p *poller) close() {
	p.closed.Store(true)
	p.f.Close()
	<-p.done
}

// loop dispatches ready events until the poller is closed.
func (p *poller) loop(raw syscall.RawConn) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 64)
	for {
		err := raw.Read(func(fd uintptr) bool {
			for {
				n, err := unix.EpollWait(int(fd), events, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return true
				}
				p.mu.Lock()
				for i := range n {
					if r := p.regs[eventKey(&events[i])]; r != nil {
						r.fn(r)
					}
				}
				p.mu.Unlock()
				if n < len(events) {
					return false // drained: wait until the set is readable again
				}
			}
		})
		if err != nil && p.closed.Load() {
			return
		}
		// Otherwise Read returns only if epoll_wait failed, which it does
		// not on a valid descriptor; giving up would strand every parked
		// connection, so try again.
		time.Sleep(10 * time.Millisecond)
	}
}

// register adds fd to the set, armed for events, with fn to call once
// they happen. The descriptor must be open.
func (p *poller) register(fd controller, events uint32, fn func(*pollReg)) (*pollReg, error) {
	r := &pollReg{p: p, fd: fd, events: events, fn: fn}
	p.mu.Lock()
	p.next++
	r.key = p.next
	// In the map before it is in the set, so that an event that is ready
	// at once finds it.
	p.regs[r.key] = r
	p.mu.Unlock()
	if err := r.ctl(unix.EPOLL_CTL_ADD); err != nil {
		p.mu.Lock()
		delete(p.regs, r.key)
		p.mu.Unlock()
		return nil, err
	}
	return r, nil
}

// arm enables a registration that has reported (or is still armed: then
// nothing changes). A removed registration cannot be armed again.
func (r *pollReg) arm() error {
	r.p.mu.Lock()
	live := r.p.regs[r.key] == r
	r.p.mu.Unlock()
	if !live {
		return errRemoved
	}
	return r.ctl(unix.EPOLL_CTL_MOD)
}

var errRemoved = errors.New("poller: registration removed")

// remove ends the registration: after it, as said, the callback is not
// called. Call it before closing the descriptor.
//
// It takes no epoll_ctl(2): the kernel drops the descriptor from the set
// when its file is closed, every caller closes it soon after, and until
// then an event it may still report (at most one: it is one-shot) has a
// key no registration has any more, which the loop ignores. Keys are
// never reused, so a later registration of the same descriptor number
// cannot be mistaken for it.
func (r *pollReg) remove() {
	r.p.mu.Lock()
	delete(r.p.regs, r.key)
	r.p.mu.Unlock()
}

var errClosedFD = errors.New("descriptor closed")

func (r *pollReg) ctl(op int) error {
	ev := unix.EpollEvent{Events: r.events | unix.EPOLLONESHOT}
	setEventKey(&ev, r.key)
	var cerr error
	err := r.fd.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(r.p.epfd, op, int(fd), &ev)
	})
	if err != nil {
		return errClosedFD
	}
	return cerr
}

func eventKey(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func setEventKey(ev *unix.EpollEvent, key uint64) {
	ev.Fd = int32(uint32(key))
	ev.Pad = int32(uint32(key >> 32))
}
