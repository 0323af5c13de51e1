package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/sandbox"
)

// Bulk output is moved with splice(2): the kernel hands the child's pipe
// pages on to the client's socket, and the server copies none of them.
//
// A frame's length comes before its data, so the pump asks the child's
// pipe how much it holds (FIONREAD) and sends exactly that much, 64 KiB
// at most (nobody else reads the pipe, so it stays there). Each frame is assembled in a
// pipe of the pump's own (framePipe): the header written into it, the
// child's pages spliced after it, the trailer written after them; then
// the whole frame is spliced to the socket in one call, so the client
// wakes once per frame, not three times.
//
// A pump takes this path only once a read has filled its whole buffer (a
// program streaming output) and while the pipe holds at least spliceMin:
// small outputs keep the plain read path and its two system calls.
//
// The calls of this path never block (both pipes and the socket are
// non-blocking), and are made as raw system calls: the Go scheduler does
// not hand the thread's P over during them, which on a small machine
// costs more than the calls.

// spliceMin is the least a pipe must hold for its data to be spliced.
const spliceMin = 16 << 10

// spliceMax bounds a spliced frame: what a default-sized pipe holds. A
// program that enlarges its pipe does not make the client take bigger
// pairs.
const spliceMax = 64 << 10

// framePipeSize is the size asked for a frame pipe: room for a full
// default-sized child pipe (16 pages) with the header and the trailer in
// pages of their own. A smaller pipe works too, in more steps.
const framePipeSize = 128 << 10

// errNoSplice says the frame must take the read path: output is spooled
// ahead of it (the spool is a copy, and the frame must not pass it).
var errNoSplice = errors.New("output must follow the spool")

// framePipe is a pump's pipe for assembling frames; empty between frames.
type framePipe struct {
	r, w int
	held int // bytes in it
}

func newFramePipe() (*framePipe, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// Best effort: without it a frame takes more splices.
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, framePipeSize)
	return &framePipe{r: p[0], w: p[1]}, nil
}

func (fp *framePipe) close() {
	unix.Close(fp.r)
	unix.Close(fp.w)
}

// queued returns how many bytes the pipe or stream socket fd holds to be
// read (FIONREAD; SIOCINQ, its socket name, is the same request).
func queued(fd int) (int, error) {
	var n int32
	_, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return 0, os.NewSyscallError("ioctl FIONREAD", e)
	}
	return int(n), nil
}

// rawSplice is splice(2) between two non-blocking descriptors, without
// the scheduler's system call hooks.
func rawSplice(in, out, n int) (int, syscall.Errno) {
	m, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return int(m), e
}

// spliceFrame sends n bytes of the child's pipe cfd, which holds at least
// that many, to the client as one "typ, data" pair, assembled in fp.
// While the client still sends its stdin, what the socket does not take
// at once goes to the spool (spool.go), as in writeOutput.
//
// It returns errNoSplice, having sent nothing, when output is spooled;
// else, once the frame has begun, nil or why it failed (the pipe may
// then still hold part of the n bytes, and fp must not be used again).
func (cn *conn) spliceFrame(fp *framePipe, typ string, cfd int, n int) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	for {
		if cn.werr != nil {
			return cn.werr
		}
		if !cn.out.flushing {
			break
		}
		if cn.clientSending.Load() {
			return errNoSplice
		}
		cn.out.empty.Wait() // behind the spool: in order
	}
	var tmp [frameHead]byte
	err := cn.frameToPipe(fp, netstring.AppendHeader(append(tmp[:0], typ...), n), cfd, n)
	if err == nil {
		err = cn.sendFramePipe(fp)
	}
	if err != nil && cn.werr == nil && !errors.Is(err, errSpoolFull) {
		cn.werr = err
	}
	return err
}

// frameToPipe puts the header h, n bytes of cfd and the trailer in fp,
// sending what is in fp whenever fp is full. Once the spool has begun,
// the rest of the frame goes there instead. Called with wmu held.
func (cn *conn) frameToPipe(fp *framePipe, h []byte, cfd int, n int) error {
	if err := cn.bytesToPipe(fp, h); err != nil {
		return err
	}
	for n > 0 {
		if cn.out.flushing { // spooling: the socket is full
			if err := cn.spoolPipe(cfd, n); err != nil {
				return err
			}
			break
		}
		m, e := rawSplice(cfd, fp.w, n)
		switch {
		case e == 0 && m == 0:
			return fmt.Errorf("splice: the pipe ended with %d bytes of the frame to go", n)
		case e == 0:
			n -= m
			fp.held += m
		case e == unix.EINTR:
		case e == unix.EAGAIN: // cfd holds the rest, so fp is full
			if err := cn.sendFramePipe(fp); err != nil {
				return err
			}
		default:
			return os.NewSyscallError("splice", e)
		}
	}
	return cn.bytesToPipe(fp, []byte{','})
}

// bytesToPipe puts b in fp, or in the spool once it has begun. Called
// with wmu held.
func (cn *conn) bytesToPipe(fp *framePipe, b []byte) error {
	for len(b) > 0 {
		if cn.out.flushing {
			return cn.spoolLocked(b)
		}
		m, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fp.w), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			b = b[m:]
			fp.held += int(m)
		case unix.EINTR:
		case unix.EAGAIN: // full
			if err := cn.sendFramePipe(fp); err != nil {
				return err
			}
		default:
			return os.NewSyscallError("write", e)
		}
	}
	return nil
}

// sendFramePipe splices what fp holds to the client's socket. While the
// client still sends its stdin, what the socket does not take at once is
// read from fp into the spool; otherwise it waits for the client to read.
// Called with wmu held.
func (cn *conn) sendFramePipe(fp *framePipe) error {
	if fp.held == 0 {
		return nil
	}
	if cn.out.flushing {
		return cn.spoolFramePipe(fp)
	}
	raw, err := cn.c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	spoolRest := false
	err = raw.Write(func(sfd uintptr) bool {
		for fp.held > 0 {
			m, e := rawSplice(fp.r, int(sfd), fp.held)
			switch {
			case e == 0 && m == 0:
				serr = fmt.Errorf("splice: the frame pipe ended with %d bytes to go", fp.held)
				return true
			case e == 0:
				fp.held -= m
			case e == unix.EINTR:
			case e == unix.EAGAIN: // fp holds the rest, so the socket is full
				if cn.clientSending.Load() {
					spoolRest = true
					return true
				}
				return false // wait until the client reads
			default:
				serr = os.NewSyscallError("splice", e)
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case serr != nil:
		return serr
	case spoolRest:
		return cn.spoolFramePipe(fp)
	}
	return nil
}

// spoolFramePipe moves what fp holds to the spool. Called with wmu held.
func (cn *conn) spoolFramePipe(fp *framePipe) error {
	if err := cn.spoolPipe(fp.r, fp.held); err != nil {
		return err
	}
	fp.held = 0
	return nil
}

// spoolPipe reads n bytes of the pipe pfd (which holds them) into the
// spool. Called with wmu held.
func (cn *conn) spoolPipe(pfd int, n int) error {
	bp := outBufs.Get().(*[]byte)
	defer outBufs.Put(bp)
	for n > 0 {
		m, err := unix.Read(pfd, (*bp)[:min(n, len(*bp))])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("reading output into the spool: %w", os.NewSyscallError("read", err))
		case m == 0:
			return fmt.Errorf("reading output into the spool: the pipe ended with %d bytes of the frame to go", n)
		}
		if err := cn.spoolLocked((*bp)[:m]); err != nil {
			return err
		}
		n -= m
	}
	return nil
}

// Bulk stdin is spliced too: once the connection's read buffer holds none
// of a long stdin netstring's body, what the socket holds of it is moved
// to the child's stdin pipe by the kernel (splice from the socket to the
// pipe), not read into the server and written out again.

// stdinSpliceMin is the least a stdin netstring's body must have left,
// past the read buffer, for it to be spliced.
const stdinSpliceMin = 16 << 10

// spliceStdin moves n bytes of the current stdin netstring's body from the
// client's socket to the child's stdin pipe w. The connection's read
// buffer must hold none of them. It waits for the client's data (bounded
// by the connection's read deadline) and for room in the pipe (looking
// every hangupCheck whether the client is still there, as stdinWriter
// does). It returns how many bytes it moved and, if not all, why: the
// end of the client's stream (io.ErrUnexpectedEOF), a read error or
// deadline of the socket, errHangup, or a write-side error (EPIPE: the
// child no longer reads).
func (cn *conn) spliceStdin(w *sandbox.Pipe, n int64) (int64, error) {
	sraw, err := cn.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	praw, err := w.SyscallConn()
	if err != nil {
		return 0, err
	}
	defer w.SetWriteDeadline(time.Time{})
	var moved int64
	for moved < n {
		// Wait until the socket holds some of it.
		var inq int
		var rerr error
		err := sraw.Read(func(sfd uintptr) bool {
			inq, rerr = queued(int(sfd))
			if rerr != nil || inq > 0 {
				return true
			}
			// Readable with nothing queued is the end of the stream.
			eof, perr := atEOF(int(sfd))
			switch {
			case perr != nil:
				rerr = perr
			case eof:
				rerr = io.ErrUnexpectedEOF
			default:
				return false // nothing yet: wait
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return moved, err
		}
		m, err := cn.spliceToPipe(sraw, praw, w, int(min(int64(inq), n-moved)))
		moved += int64(m)
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// spliceToPipe splices want bytes, which the socket holds, to the pipe,
// waiting for room in it. It returns how many it moved.
func (cn *conn) spliceToPipe(sraw, praw syscall.RawConn, w *sandbox.Pipe, want int) (int, error) {
	moved := 0
	for moved < want {
		if err := w.SetWriteDeadline(time.Now().Add(hangupCheck)); err != nil {
			return moved, err
		}
		var e syscall.Errno
		err := praw.Write(func(pfd uintptr) bool {
			cerr := sraw.Control(func(sfd uintptr) {
				for moved < want {
					var m int
					m, e = rawSplice(int(sfd), int(pfd), want-moved)
					switch {
					case e == unix.EINTR:
						continue
					case e != 0:
						return
					case m == 0: // cannot be: the socket holds them
						e = unix.EIO
						return
					}
					moved += m
					cn.stdinBytes.Add(int64(m))
				}
			})
			if cerr != nil {
				e = unix.EBADF
			}
			// The socket holds the rest (only this pump reads it), so
			// EAGAIN says the pipe is full: wait for room.
			return e != unix.EAGAIN
		})
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if cn.hungUp() {
				return moved, errHangup
			}
		case err != nil:
			return moved, err
		case e != 0:
			return moved, os.NewSyscallError("splice", e)
		}
	}
	return moved, nil
}

// atEOF reports whether the stream socket fd, which has nothing queued, has
// reached its end: a one-byte peek returns 0 then, EAGAIN while the
// stream is open.
func atEOF(fd int) (bool, error) {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, os.NewSyscallError("recvfrom", err)
		}
		return n == 0, nil
	}
}
