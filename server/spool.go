package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Output that waits for a client that is still sending its stdin.
//
// A client such as lua-resty-exec sends the whole of a program's stdin
// before it reads anything. A program like cat writes its output as it
// reads its input; once the client's socket is full, a server that waits
// for the client to read stops reading the program's output, the program
// stops reading its input, and the request hangs until its deadline. So
// while the client has not yet ended its stdin ("0:,"), output the socket
// does not take at once waits in a spool: up to spoolMem bytes in memory,
// the rest in an unlinked temporary file, Config.OutputBuffer bytes in
// all; past that the program is stopped (kill reason output_buffer). A
// goroutine of the connection's own moves the spool to the client as the
// socket takes it. Once the client has ended its stdin (it reads now),
// output that finds the spool empty is written with backpressure, as
// before; output behind a spool waits for it. A connection whose output
// never waits allocates nothing.

// spoolMem is how much of a spool stays in memory.
const spoolMem = 256 << 10

// errSpoolFull is returned by spool.add past its bound.
var errSpoolFull = errors.New("output buffer full")

// spool is a byte queue: memory first, then a temporary file.
type spool struct {
	max  int64
	mem  []byte   // queued bytes not in the file, oldest first
	file *os.File // nil until memory is full; unlinked
	roff int64    // next byte of the file to send
	woff int64    // end of the file's data
	size int64    // bytes queued in all
}

// add queues b.
func (sp *spool) add(b []byte) error {
	if sp.size+int64(len(b)) > sp.max {
		return errSpoolFull
	}
	if sp.file == nil && len(sp.mem)+len(b) <= spoolMem {
		sp.mem = append(sp.mem, b...)
		sp.size += int64(len(b))
		return nil
	}
	if sp.file == nil {
		f, err := os.CreateTemp("", "sockwarden-spool-")
		if err != nil {
			return fmt.Errorf("output spool: %w", err)
		}
		os.Remove(f.Name()) // unlinked: gone with its descriptor
		sp.file = f
	}
	if _, err := sp.file.WriteAt(b, sp.woff); err != nil {
		return fmt.Errorf("output spool: %w", err)
	}
	sp.woff += int64(len(b))
	sp.size += int64(len(b))
	return nil
}

// next returns up to len(buf) of the oldest queued bytes (memory first,
// which is older than the file).
func (sp *spool) next(buf []byte) ([]byte, error) {
	if sp.size == 0 {
		return nil, nil
	}
	if len(sp.mem) > 0 {
		return sp.mem[:min(len(sp.mem), len(buf))], nil
	}
	n, err := sp.file.ReadAt(buf[:min(int64(len(buf)), sp.woff-sp.roff)], sp.roff)
	if err == io.EOF {
		err = nil
	}
	return buf[:n], err
}

// consume drops the n oldest bytes.
func (sp *spool) consume(n int) {
	sp.size -= int64(n)
	if len(sp.mem) > 0 {
		sp.mem = sp.mem[n:]
		if len(sp.mem) == 0 {
			sp.mem = nil
		}
		return
	}
	sp.roff += int64(n)
	if sp.roff == sp.woff { // drained: start the file over
		sp.roff, sp.woff = 0, 0
		sp.file.Truncate(0)
	}
}

// close releases the spool.
func (sp *spool) close() {
	sp.mem = nil
	if sp.file != nil {
		sp.file.Close()
		sp.file = nil
	}
}

// spooler is a connection's output spool and its state; guarded by the
// connection's wmu.
type spooler struct {
	sp       *spool
	flushing bool       // the flusher goroutine runs
	empty    *sync.Cond // signalled when the flusher has sent everything
}

// writeOutput sends an output frame to the client. While the client is
// still sending stdin, what the socket does not take at once is spooled
// (see above) and the call returns without waiting; otherwise it waits
// for the spool to drain, then writes with backpressure.
func (cn *conn) writeOutput(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	for {
		if cn.werr != nil {
			return cn.werr
		}
		if cn.out.flushing {
			if cn.clientSending.Load() {
				return cn.spoolLocked(b)
			}
			cn.out.empty.Wait() // behind the spool: in order
			continue
		}
		break
	}
	if !cn.clientSending.Load() {
		_, err := cn.c.Write(b)
		cn.werr = err
		return err
	}
	n, err := cn.tryWrite(b)
	if err != nil {
		cn.werr = err
		return err
	}
	if n == len(b) {
		return nil
	}
	return cn.spoolLocked(b[n:])
}

// spoolLocked queues b and starts the flusher if it is not running.
// Called with wmu held.
func (cn *conn) spoolLocked(b []byte) error {
	if cn.out.sp == nil {
		cn.out.sp = &spool{max: cn.s.cfg.OutputBuffer}
		cn.out.empty = sync.NewCond(&cn.wmu)
	}
	if err := cn.out.sp.add(b); err != nil {
		if errors.Is(err, errSpoolFull) {
			cn.bufferFull.Store(true)
			go cn.r.event(evOutBuffer) // not under wmu: the kill writes nothing, but takes r.mu
		}
		return err
	}
	if !cn.out.flushing {
		cn.out.flushing = true
		go cn.flush()
	}
	return nil
}

// flush sends the spool to the client, writing without wmu (it alone
// writes while it runs), until the spool is empty.
func (cn *conn) flush() {
	bp := outBufs.Get().(*[]byte)
	defer outBufs.Put(bp)
	for {
		cn.wmu.Lock()
		chunk, err := cn.out.sp.next(*bp)
		if err != nil || len(chunk) == 0 {
			if err != nil && cn.werr == nil {
				cn.werr = err
			}
			cn.out.flushing = false
			cn.out.empty.Broadcast()
			cn.wmu.Unlock()
			return
		}
		cn.wmu.Unlock()
		n, werr := cn.c.Write(chunk)
		cn.wmu.Lock()
		cn.out.sp.consume(n)
		if werr != nil {
			cn.werr = werr
			cn.out.flushing = false
			cn.out.empty.Broadcast()
			cn.wmu.Unlock()
			if cn.r != nil {
				cn.r.event(evWriteFail)
			}
			return
		}
		cn.wmu.Unlock()
	}
}

// waitSpool waits until the spool is sent (or the connection failed).
func (cn *conn) waitSpool() {
	cn.wmu.Lock()
	for cn.out.flushing {
		cn.out.empty.Wait()
	}
	cn.wmu.Unlock()
}

// closeSpool releases the spool once the connection is done.
func (cn *conn) closeSpool() {
	cn.wmu.Lock()
	if cn.out.sp != nil {
		cn.out.sp.close()
	}
	cn.wmu.Unlock()
}

// tryWrite writes what the socket takes now, without waiting.
func (cn *conn) tryWrite(b []byte) (int, error) {
	raw, err := cn.c.SyscallConn()
	if err != nil {
		return 0, err
	}
	off := 0
	var werr error
	cerr := raw.Control(func(fd uintptr) { _, werr = writeRaw(fd, b, &off) })
	if werr == nil {
		werr = cerr
	}
	return off, werr
}

// writeRaw writes b[*off:] to fd with raw write(2) calls (the Go
// scheduler does not see them), advancing *off. It stops when all is
// written, when the socket is full (full), or at an error.
func writeRaw(fd uintptr, b []byte, off *int) (full bool, err error) {
	for *off < len(b) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[*off])), uintptr(len(b)-*off))
		switch e {
		case 0:
			*off += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return true, nil
		default:
			return false, os.NewSyscallError("write", e)
		}
	}
	return false, nil
}
