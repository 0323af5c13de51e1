package server

import (
	"bufio"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/sandbox"
)

// The pumps move a running child's data: the client's stdin netstrings to
// the child, the child's stdout and stderr to the client. Each has a
// goroutine only while data moves. An idle pump is parked: registered
// with the poller, which starts its goroutine again once its descriptor
// is readable (data, end of stream or hang-up). When a registration fails
// (the kernel out of memory for epoll items), a pump keeps its goroutine
// and blocks as usual.
type pumpState uint8

const (
	pumpRunning pumpState = iota // a goroutine runs the pump
	pumpParked                   // no goroutine: the poller resumes it
	pumpDone                     // finished; its registration removed
)

// outputGrace is how long an output pump that has forwarded data waits
// for more before it parks: a busy stream keeps its goroutine (and the
// runtime's poller wakes it), a quiet one costs none.
const outputGrace = 100 * time.Millisecond

type deadliner interface {
	SetReadDeadline(time.Time) error
}

// stdinPump forwards the client's stdin netstrings to the child until the
// client closes the connection. After "0:," (or once the child stops
// reading), further input is read and discarded. How the input ended goes
// to the runner (stdinEnded): a *ProtocolError for malformed input, else
// the read error (io.EOF when the client closed).
//
// It parks only between two netstrings with nothing buffered, and gives
// its read buffer back while parked.
type stdinPump struct {
	cn   *conn
	p    *poller
	br   *bufio.Reader
	dec  *netstring.Decoder
	w    io.WriteCloser // the child's stdin
	max  int64
	open bool // w not closed yet

	released bool // br's buffer given back (while parked)
	woken    bool // resumed by the poller: the socket is readable

	mu     sync.Mutex
	state  pumpState
	noPark bool // lingering or ending: run to the end of input
	reg    *pollReg
}

// loop runs the pump until it parks or the input ends.
func (s *stdinPump) loop() {
	if s.released {
		restoreBuf(s.br, s.cn.c)
		s.released = false
	}
	err := s.pump()
	if err == nil {
		return // parked
	}
	s.cn.clientSending.Store(false)
	s.closeStdin()
	s.mu.Lock()
	s.state = pumpDone
	reg := s.reg
	s.mu.Unlock()
	if reg != nil {
		reg.remove()
	}
	// Nothing reads from the connection any more.
	putReader(s.br)
	s.cn.r.stdinEnded(err)
}

// pump returns nil when it parked, else why the input ended.
func (s *stdinPump) pump() error {
	dec := s.dec
	for {
		if s.br.Buffered() == 0 && !s.woken && s.park() {
			return nil
		}
		s.woken = false
		n, err := dec.Header()
		if err != nil {
			return inputError(err, dec.Offset())
		}
		if n == 0 {
			s.cn.clientSending.Store(false) // it reads from now on
			s.closeStdin()
		} else if s.open {
			fwd := n
			cn := s.cn
			if s.max > 0 && cn.stdinBytes.Load()+n > s.max {
				fwd = s.max - cn.stdinBytes.Load()
				cn.stdinTrunc.Store(true)
			}
			err := s.forward(fwd)
			if err != nil && !isWriteSideError(err) {
				return inputError(err, dec.Offset())
			}
			if err != nil || fwd < n {
				s.closeStdin() // the child stopped reading, or the cap was hit
			}
			if fwd < n {
				cn.r.event(evStdinLimit)
			}
		}
		if err := dec.Trailer(); err != nil {
			return inputError(err, dec.Offset())
		}
	}
}

// forward sends the next n bytes of the body to the child: what the read
// buffer holds is copied, and the rest of a long body is spliced from
// the socket to the pipe (splice.go).
func (s *stdinPump) forward(n int64) error {
	dec := s.dec
	k := n
	pipe, ok := s.w.(*sandbox.Pipe)
	if ok && n-dec.Buffered() >= stdinSpliceMin {
		k = dec.Buffered()
	}
	if k > 0 {
		bp := stdinBufs.Get().(*[]byte) // only while data flows
		_, err := io.CopyBuffer(stdinWriter{s.cn, s.w}, io.LimitReader(dec.Body(), k), *bp)
		stdinBufs.Put(bp)
		if err != nil {
			return err
		}
	}
	if k == n {
		return nil
	}
	moved, err := s.cn.spliceStdin(pipe, n-k)
	s.cn.s.splicedIn.Add(moved)
	if cerr := dec.Consumed(moved); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (s *stdinPump) closeStdin() {
	if s.open {
		s.w.Close()
		s.open = false
	}
}

// park registers the pump to be resumed when the client's socket is
// readable, and gives the read buffer back. It reports false when the
// pump must go on blocking instead.
func (s *stdinPump) park() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noPark {
		return false
	}
	// Parked before the registration is armed: its callback may run at
	// once, and then finds the pump parked (once this lock is released).
	s.state = pumpParked
	if s.reg == nil {
		raw, err := s.cn.c.SyscallConn()
		if err == nil {
			s.reg, err = s.p.register(raw, unix.EPOLLIN|unix.EPOLLRDHUP, func(*pollReg) { go s.resume() })
		}
		if err != nil {
			s.state, s.noPark = pumpRunning, true
			return false
		}
	} else if err := s.reg.arm(); err != nil {
		s.state, s.noPark = pumpRunning, true
		return false
	}
	releaseBuf(s.br)
	s.released = true
	return true
}

// resume runs a parked pump; the poller calls it (on a goroutine of its
// own) when the client's socket is readable.
func (s *stdinPump) resume() {
	s.mu.Lock()
	if s.state != pumpParked {
		s.mu.Unlock()
		return
	}
	s.state = pumpRunning
	s.mu.Unlock()
	s.woken = true
	s.loop()
}

// drain makes the pump read to the end of the client's input (bounded by
// the connection's read deadline), parked or not: the caller then waits
// for its end (runner.stdinDone).
func (s *stdinPump) drain() {
	s.mu.Lock()
	s.noPark = true
	parked := s.state == pumpParked
	if parked {
		s.state = pumpRunning
	}
	s.mu.Unlock()
	if parked {
		s.loop()
	}
}

// stop ends a parked pump for good, before the connection is closed (a
// running one ends by itself once it is).
func (s *stdinPump) stop() {
	s.mu.Lock()
	s.noPark = true
	parked := s.state == pumpParked
	if parked {
		s.state = pumpDone
	}
	reg := s.reg
	s.mu.Unlock()
	if parked {
		reg.remove()
	}
}

var outBufs = sync.Pool{New: func() any {
	b := make([]byte, frameHead+outBufSize+1)
	return &b
}}

var stdinBufs = sync.Pool{New: func() any {
	b := make([]byte, stdinCopyBufSize)
	return &b
}}

// connReaders are the read buffers of the connections, shared: a
// connection holds one while it reads its request and while stdin flows,
// not while its program runs quietly.
var connReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, connReadBufSize) }}

func getReader(r io.Reader) *bufio.Reader {
	br := connReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// putReader gives br back; it must no longer be used.
func putReader(br *bufio.Reader) {
	if br.Size() == 0 {
		return // its buffer is already back (releaseBuf)
	}
	br.Reset(nil)
	connReaders.Put(br)
}

// releaseBuf gives br's buffer back; br must have nothing buffered. The
// decoder reading from br keeps its pointer, so br's value is swapped
// rather than br replaced.
func releaseBuf(br *bufio.Reader) {
	spare := new(bufio.Reader)
	*spare = *br
	*br = bufio.Reader{}
	putReader(spare)
}

// restoreBuf gives br a buffer again, reading from r.
func restoreBuf(br *bufio.Reader, r io.Reader) {
	*br = *getReader(r) // the pooled Reader is dropped: its buffer is br's now
}

// outPump forwards one of the child's output pipes as typed netstrings.
// It starts parked, so a child that writes nothing costs no goroutine;
// after forwarding data it waits outputGrace for more, then parks again.
// Its wg is done once the pipe has reached its end (or was closed).
type outPump struct {
	cn      *conn
	r       io.ReadCloser
	c       controller      // r's descriptor without its file (a sandbox.Pipe); nil if none
	lazy    bool            // parked on c, r's file not made yet
	raw     syscall.RawConn // nil: not pollable (plain blocking reads)
	dl      deadliner       // nil: no parking
	typ     string
	st      *streamStats
	max     int64
	wg      *sync.WaitGroup
	forward bool
	bulk    bool       // a read filled its buffer: splice (splice.go)
	fp      *framePipe // the pipe frames are spliced through; nil until then

	mu    sync.Mutex
	state pumpState
	reg   *pollReg
}

func (o *outPump) init(cn *conn, wg *sync.WaitGroup, r io.ReadCloser, typ string, st *streamStats, max int64) {
	o.cn, o.r, o.typ, o.st, o.max, o.wg, o.forward = cn, r, typ, st, max, wg, true
	if c, ok := r.(controller); ok {
		o.c = c // its file is made once data comes (materialize)
	} else if sc, ok := r.(syscall.Conn); ok {
		o.raw, _ = sc.SyscallConn()
	}
}

// start parks the pump with p, or, failing that, starts its goroutine.
// A pipe that has a descriptor of its own (a sandbox.Pipe) is parked on
// it without its file: a program that writes nothing never has the pipe
// in the runtime's poller (firstRead).
func (o *outPump) start(p *poller) {
	if o.c != nil {
		if o.parkOn(p, o.c, func() { o.lazy = true }) {
			return
		}
		o.materialize() // plain blocking reads
	} else if dl, ok := o.r.(deadliner); ok && o.raw != nil && dl.SetReadDeadline(time.Time{}) == nil {
		if o.parkOn(p, o.raw, func() { o.dl = dl }) {
			return
		}
	}
	go o.pump()
}

// parkOn registers the pump, parked, to be resumed once c is readable,
// and runs set (under the pump's lock, before a resume can run). It
// reports false, the pump not parked, when the poller refuses.
func (o *outPump) parkOn(p *poller, c controller, set func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state = pumpParked
	reg, err := p.register(c, unix.EPOLLIN, func(*pollReg) { go o.resume() })
	if err != nil {
		o.state = pumpRunning
		return false
	}
	o.reg = reg
	set()
	return true
}

func (o *outPump) resume() {
	o.mu.Lock()
	if o.state != pumpParked {
		o.mu.Unlock()
		return
	}
	o.state = pumpRunning
	o.mu.Unlock()
	o.pump()
}

// materialize gives the pump its pipe's file (a sandbox.Pipe makes it
// now), for reads that wait in the runtime's poller, with a deadline
// after which the pump parks (when it can).
func (o *outPump) materialize() {
	if sc, ok := o.r.(syscall.Conn); ok {
		o.raw, _ = sc.SyscallConn()
	}
	if dl, ok := o.r.(deadliner); ok && o.raw != nil && o.reg != nil && dl.SetReadDeadline(time.Time{}) == nil {
		o.dl = dl
	}
}

// firstRead reads, without the pipe's file, what woke a pump parked on
// its descriptor: an end of output finishes the pump (most programs
// print little or nothing, and the pipe never joins the runtime's
// poller); data is forwarded, and the file made for what follows. It
// reports whether the pump is done for now (finished or parked again).
func (o *outPump) firstRead() bool {
	bp := outBufs.Get().(*[]byte)
	var n int
	var rerr error
	cerr := o.c.Control(func(fd uintptr) {
		for {
			n, rerr = unix.Read(int(fd), (*bp)[frameHead:frameHead+outBufSize])
			if rerr != unix.EINTR {
				return
			}
		}
	})
	switch {
	case cerr == nil && rerr == unix.EAGAIN: // woken with nothing to read
		outBufs.Put(bp)
		if o.park() {
			return true
		}
	case cerr != nil || rerr != nil || n == 0: // closed, failed, or the end
		outBufs.Put(bp)
		o.finish()
		return true
	default:
		if n == outBufSize {
			o.bulk = true
		}
		o.forwardData(bp, n)
		outBufs.Put(bp)
	}
	o.lazy = false
	o.materialize()
	return false
}

// forwardData sends n bytes read into bp to the client, within the
// output cap.
func (o *outPump) forwardData(bp *[]byte, n int) {
	if !o.forward {
		return
	}
	cn := o.cn
	if o.max > 0 {
		if total := cn.outBytes.Add(int64(n)); total > o.max {
			n -= int(min(total-o.max, int64(n)))
			o.st.truncated.Store(true)
			cn.limitOnce.Do(func() { cn.r.event(evOutLimit) })
			o.forward = false
		}
	} else {
		cn.outBytes.Add(int64(n))
	}
	if n > 0 {
		if cn.writeFrame(o.typ, *bp, n) != nil {
			o.forward = false // keep draining so the child never blocks on us
		} else {
			o.st.bytes.Add(int64(n))
		}
	}
}

// pump forwards until the pipe ends or the pump parks. Reads wait for
// readiness before taking a buffer, so a blocked read holds none.
func (o *outPump) pump() {
	if o.lazy && o.firstRead() {
		return
	}
	var renewed time.Time // when the deadline was last pushed back
	for {
		if o.dl != nil {
			// Pushed back at most every half grace: the pump parks after
			// between half the grace and the whole of it without data.
			if now := time.Now(); now.Sub(renewed) > outputGrace/2 {
				o.dl.SetReadDeadline(now.Add(outputGrace))
				renewed = now
			}
		}
		bp, n, spliced, err := o.read()
		if spliced > 0 {
			o.st.bytes.Add(int64(spliced))
		}
		if n > 0 {
			o.forwardData(bp, n)
		}
		if bp != nil {
			outBufs.Put(bp)
		}
		if err == nil {
			continue
		}
		if o.dl != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if o.park() {
				return
			}
			// Cannot park (the pipe was closed, or the poller refuses):
			// go on with plain blocking reads.
			o.dl.SetReadDeadline(time.Time{})
			o.dl = nil
			continue
		}
		o.finish()
		return
	}
}

func (o *outPump) park() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state = pumpParked
	if o.reg.arm() != nil {
		o.state = pumpRunning
		return false
	}
	return true
}

// closeFramePipe closes the pump's frame pipe, if any; only the pump's
// own goroutine, or close while it is parked, calls it.
func (o *outPump) closeFramePipe() {
	if o.fp != nil {
		o.fp.close()
		o.fp = nil
	}
}

func (o *outPump) finish() {
	o.closeFramePipe()
	o.mu.Lock()
	o.state = pumpDone
	reg := o.reg
	o.mu.Unlock()
	if reg != nil {
		reg.remove()
	}
	o.wg.Done()
}

// close closes the pipe, ending the pump whether it runs or is parked.
func (o *outPump) close() {
	o.mu.Lock()
	parked := o.state == pumpParked
	if parked {
		o.state = pumpDone
	}
	o.mu.Unlock()
	if parked {
		o.reg.remove()
		o.closeFramePipe()
		o.wg.Done()
	}
	o.r.Close()
}
