package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/sandbox"
)

// runner drives the connection of a started program. A program that runs
// quietly costs no goroutine: the stdin and output pumps are parked with
// the poller, the deadline is a timer, shutdown a context callback, and
// the exit a pidfd with the poller. Each of these events is handled by
// whichever goroutine brings it (event); the goroutine that sees the
// program exit drains its output, sends the final pair and ends the
// connection (finish).
type runner struct {
	cn          *conn
	proc        *sandbox.Process
	k           killer
	in          stdinPump
	out         [2]outPump     // stdout, stderr
	outputs     sync.WaitGroup // the output pumps
	killTimeout time.Duration
	explain     bool      // the client hears of the sandbox's denials
	deadline    time.Time // the request's deadline; zero for none
	writeGrace  time.Duration
	timer       *time.Timer   // the deadline; nil without one
	stopCtx     func() bool   // unregisters the shutdown callback
	stdinDone   chan struct{} // closed when the stdin pump has ended

	mu            sync.Mutex // orders the events; guards what follows and k's kill
	exited        bool       // the program has exited: events no longer kill
	stdinFinished bool       // the stdin pump ended while the program ran
}

// Events of a running program.
const (
	evTimeout    = iota // the deadline passed
	evShutdown          // the server shuts down
	evWriteFail         // a write to the client failed
	evOutLimit          // the output cap was reached
	evStdinLimit        // the client sent more stdin than the cap
	evOutBuffer         // output waiting for the client reached its bound
)

// run starts pumping a started child's streams and returns: the
// connection goes on without a goroutine until something happens, and is
// ended by finish once the child has exited and its output is drained.
func (cn *conn) run(ctx context.Context, proc *sandbox.Process, br *bufio.Reader, dec *netstring.Decoder, pl *plan.Plan, deadline time.Time) {
	p := cn.s.poller
	killTimeout := pl.KillTimeout
	// One allocation for the connection's running state.
	r := &runner{
		cn:          cn,
		proc:        proc,
		k:           killer{cn: cn, proc: proc, timeout: killTimeout, log: cn.log},
		in:          stdinPump{cn: cn, p: p, br: br, dec: dec, w: proc.Stdin, max: pl.MaxStdinBytes, open: true},
		killTimeout: killTimeout,
		explain:     pl.Explain,
		deadline:    deadline,
		// Once a kill has started, a client that does not read may hold
		// up the output and the reply for this long: the escalation, the
		// drain of the pipes and a second to spare.
		writeGrace: 2*killTimeout + time.Second,
		stdinDone:  make(chan struct{}),
	}
	// Everything an event touches is set before the first event can come.
	cn.r = r
	cn.clientSending.Store(true)
	r.out[0].init(cn, &r.outputs, proc.Stdout, "6:stdout,", &cn.stdout, pl.MaxOutputBytes)
	r.out[1].init(cn, &r.outputs, proc.Stderr, "6:stderr,", &cn.stderr, pl.MaxOutputBytes)
	r.outputs.Add(2)
	r.out[0].start(p)
	r.out[1].start(p)
	go r.in.loop()
	if !deadline.IsZero() {
		r.timer = time.AfterFunc(time.Until(deadline), func() { r.event(evTimeout) })
	}
	r.stopCtx = context.AfterFunc(ctx, func() { r.event(evShutdown) })
	// Last: the exit may come at once, and finish reads the above.
	watchExit(p, proc, r.finish)
}

// event handles what happens to a running program; once it has exited,
// nothing.
func (r *runner) event(ev int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exited {
		return
	}
	cn := r.cn
	switch ev {
	case evTimeout:
		r.k.kill(KillReasonTimeout)
		cn.c.SetWriteDeadline(time.Now().Add(r.writeGrace))
	case evShutdown:
		r.k.kill(KillReasonShutdown)
		cn.c.SetWriteDeadline(time.Now().Add(r.writeGrace))
	case evWriteFail:
		r.k.kill(KillReasonDisconnect)
	case evOutLimit:
		r.k.kill(KillReasonOutputLimit)
	case evStdinLimit:
		r.k.kill(KillReasonStdinLimit)
	case evOutBuffer:
		r.k.kill(KillReasonOutputBuffer)
	}
}

// stdinEnded is called once by the stdin pump when the client's input has
// ended: err is a *ProtocolError for malformed input, else the read error
// (io.EOF when the client closed). While the program runs, that kills it.
func (r *runner) stdinEnded(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.stdinDone)
	if r.exited {
		return
	}
	r.stdinFinished = true
	cn := r.cn
	var pe *ProtocolError
	if errors.As(err, &pe) {
		cn.log.Warn("malformed stdin; closing connection", "err", err)
		cn.recordProtocolError(pe)
		r.k.kill(KillReasonProtocolError)
	} else {
		cn.log.Debug("client input ended while the program ran", "err", err)
		r.k.kill(KillReasonDisconnect)
	}
	cn.c.SetWriteDeadline(aLongTimeAgo)
}

// finish runs once the child has exited (and Wait has returned): it
// drains the output, records the exit, sends the final pair, lingers,
// and ends the connection.
func (r *runner) finish(st *sandbox.State, err error) {
	cn, k := r.cn, &r.k
	r.mu.Lock()
	r.exited = true
	r.mu.Unlock()
	cn.setState(StateFinishing)
	// Whatever the leader left behind in its group went with it: Wait
	// killed the group before reaping the leader.
	k.stop()
	if r.timer != nil {
		r.timer.Stop()
	}
	r.stopCtx()
	defer cn.end()
	// The connection is closed at the end: a parked stdin pump's
	// registration must go first.
	defer r.in.stop()

	// Drain the output pipes. A process that escaped the group could hold
	// them open forever, so the wait is bounded.
	drained := make(chan struct{})
	go func() {
		r.outputs.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(r.killTimeout):
		cn.log.Warn("output pipes still open after the child exited; closing them")
		r.out[0].close()
		r.out[1].close()
		<-drained
	}
	closeProc(r.proc)

	if err != nil {
		cn.log.Error("waiting for child", "err", err)
		return
	}
	cn.log.Debug("child ended", "exit_code", st.ExitCode, "signal", signalName(st.Signal),
		"wall", st.Wall, "kill_reason", k.reason, "escalated", k.escalated.Load(),
		"stdin_bytes", cn.stdinBytes.Load(), "stdout_bytes", cn.stdout.bytes.Load(), "stderr_bytes", cn.stderr.bytes.Load())
	den, denied := r.proc.Denials()
	explain := denied && (r.explain || cn.s.cfg.ExplainDenials) &&
		k.reason != KillReasonDisconnect && k.reason != KillReasonProtocolError
	if explain && !den.Final {
		// The client is to hear of them: wait (a little) for the rest.
		ctx, cancel := context.WithTimeout(context.Background(), explainWait)
		den, _ = r.proc.WaitDenials(ctx)
		cancel()
	}
	if denied {
		cn.recordExit(r.proc, st, &den)
		if !den.Final {
			cn.followDenials(r.proc, &den)
		}
	} else {
		cn.recordExit(r.proc, st, nil)
	}
	if k.reason == KillReasonDisconnect || k.reason == KillReasonProtocolError {
		return
	}
	var b []byte
	// A cap that ended the program says so before the final pair.
	switch k.reason {
	case KillReasonStdinLimit:
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: stdin over the limit of %d bytes; the program was stopped (request %s)\n", r.in.max, cn.id))
	case KillReasonOutputLimit:
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: output over the limit of %d bytes; the program was stopped (request %s)\n", r.out[0].max, cn.id))
	case KillReasonOutputBuffer:
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: more than %d bytes of output waited for a client that was still sending stdin; the program was stopped (request %s)\n", cn.s.cfg.OutputBuffer, cn.id))
	}
	if explain {
		b = appendDenialLines(b, &den, cn.id)
	}
	if !r.deadline.IsZero() && k.reason == "" {
		// Spooled output still to send is bounded by the deadline too.
		cn.c.SetWriteDeadline(r.deadline)
	}
	if st.Signal != 0 {
		b = netstring.AppendString(b, "termsig")
		b = netstring.AppendString(b, signalName(st.Signal))
	} else {
		b = appendExitCode(b, st.ExitCode)
	}
	if err := cn.writeFinal(b); err != nil {
		return
	}
	r.mu.Lock()
	stdinFinished := r.stdinFinished
	r.mu.Unlock()
	if !stdinFinished {
		cn.linger(func() {
			r.in.drain()
			<-r.stdinDone
		})
	}
}

// explainWait bounds how long the final reply of a request whose
// client hears of its sandbox denials waits for the kernel's final count
// (which comes 30-70 ms after the child ends).
const explainWait = 500 * time.Millisecond

// appendDenialLines appends a stderr line per distinct sandbox denial,
// and one saying what the list lacks, if anything.
func appendDenialLines(b []byte, r *sandbox.DenialReport, id string) []byte {
	for _, d := range r.Denials {
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: sandbox denied %s (request %s)\n", d, id))
	}
	switch {
	case r.Unlisted > 0:
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: and %d more sandbox denials (request %s)\n", r.Unlisted, id))
	case !r.Complete && r.Total > r.Received:
		b = appendStderrLine(b, fmt.Sprintf("sockwarden: and %d more sandbox denials the kernel did not report (request %s)\n", r.Total-r.Received, id))
	}
	return b
}

func appendStderrLine(b []byte, line string) []byte {
	b = netstring.AppendString(b, "stderr")
	return netstring.AppendString(b, line)
}

// watchExit calls done with how proc ended, once it has, on a goroutine
// of its own. The wait is the child's pidfd registered with the poller:
// no goroutine waits meanwhile. The registration is removed before Wait,
// which closes the pidfd. When the registration fails (the kernel is out
// of memory for epoll items), a goroutine waits in Wait instead.
func watchExit(p *poller, proc *sandbox.Process, done func(*sandbox.State, error)) {
	reap := func() {
		st, err := proc.Wait()
		done(st, err)
	}
	_, err := p.register(rawFD(proc.PidFD()), unix.EPOLLIN, func(r *pollReg) {
		go func() {
			r.remove()
			reap()
		}()
	})
	if err != nil {
		go reap()
	}
}

// errHangup is returned by a write to the child's stdin that was blocked
// (the child not reading) when the client hung up.
var errHangup = errors.New("client hung up while the program was not reading its stdin")

// hangupCheck is how often a blocked write to the child's stdin looks
// whether the client is still there.
const hangupCheck = 200 * time.Millisecond

// stdinWriter writes to the child's stdin. While a write is blocked
// because the child does not read, it checks the client every hangupCheck,
// so that a client that hangs up is noticed even though nobody reads its
// connection meanwhile. It is a plain Writer (no ReadFrom), so that
// io.CopyBuffer uses the pooled buffer.
type stdinWriter struct {
	cn *conn
	w  io.Writer
}

// Bytes count in the exec.exit record as they reach the program, not
// once a whole netstring has.
func (sw stdinWriter) Write(p []byte) (int, error) {
	dl, ok := sw.w.(interface{ SetWriteDeadline(time.Time) error })
	if !ok {
		n, err := sw.w.Write(p)
		sw.cn.stdinBytes.Add(int64(n))
		return n, err
	}
	defer dl.SetWriteDeadline(time.Time{})
	total := 0
	for {
		if err := dl.SetWriteDeadline(time.Now().Add(hangupCheck)); err != nil {
			n, err := sw.w.Write(p[total:]) // not pollable: plain blocking write
			sw.cn.stdinBytes.Add(int64(n))
			return total + n, err
		}
		n, err := sw.w.Write(p[total:])
		sw.cn.stdinBytes.Add(int64(n))
		total += n
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		if sw.cn.hungUp() {
			return total, errHangup
		}
	}
}

// hungUp reports whether the client has closed (or half-closed) its end,
// without reading from the connection.
func (cn *conn) hungUp() bool {
	raw, err := cn.c.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, _ := unix.Poll(fds, 0); n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			hup = true
		}
	})
	return hup
}

// isWriteSideError tells a failed write to the child's stdin (which only
// means the child no longer reads) from a failed read of the client.
func isWriteSideError(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed)
}

func inputError(err error, off int64) error {
	var se *netstring.SyntaxError
	if errors.As(err, &se) {
		return &ProtocolError{Offset: off, Err: err}
	}
	return err
}

// read reads the child's output into a pooled buffer at offset
// frameHead (bp, n), waiting for readiness before it takes the buffer, so
// a blocked read holds none. A pump that streams splices instead (see
// splice.go): then spliced bytes went to the client and bp is nil.
func (o *outPump) read() (bp *[]byte, n, spliced int, err error) {
	if o.raw == nil {
		bp = outBufs.Get().(*[]byte)
		n, err = o.r.Read((*bp)[frameHead : frameHead+outBufSize])
		return bp, n, 0, err
	}
	var rerr, serr error
	err = o.raw.Read(func(fd uintptr) bool {
		if o.bulk && o.forward {
			if spliced, serr = o.splice(int(fd)); spliced > 0 || serr != nil {
				return true
			}
		}
		if bp == nil {
			bp = outBufs.Get().(*[]byte)
		}
		n, rerr = unix.Read(int(fd), (*bp)[frameHead:frameHead+outBufSize])
		if rerr == unix.EAGAIN {
			outBufs.Put(bp)
			bp = nil
			return false
		}
		if rerr == unix.EINTR {
			return false
		}
		return true
	})
	switch {
	case serr != nil:
		o.forward = false // keep draining so the child never blocks on us
		if !errors.Is(serr, errSpoolFull) {
			o.cn.log.Debug("writing to the client failed", "err", serr)
			o.cn.r.event(evWriteFail)
		}
		return nil, 0, 0, nil
	case spliced > 0:
		return nil, 0, spliced, nil
	case err != nil:
		return bp, 0, 0, err
	case rerr != nil:
		return bp, 0, 0, rerr
	case n == 0:
		return bp, 0, 0, io.EOF
	case n == outBufSize:
		o.bulk = true // a stream: splice what the pipe holds from now on
	}
	return bp, n, 0, nil
}

// splice sends what the pipe fd holds to the client as one frame, when
// that is at least spliceMin and within the output cap. It reports how
// many bytes it sent (0 for none: the read path goes on), or the
// connection's write error once the frame had begun.
func (o *outPump) splice(fd int) (int, error) {
	avail, err := queued(fd)
	if err != nil || avail < spliceMin {
		return 0, nil
	}
	avail = min(avail, spliceMax)
	cn := o.cn
	if o.max > 0 {
		// Counted before it is sent, and only if all of it is within
		// the cap: the read path truncates at the cap.
		for {
			cur := cn.outBytes.Load()
			if cur+int64(avail) > o.max {
				return 0, nil
			}
			if cn.outBytes.CompareAndSwap(cur, cur+int64(avail)) {
				break
			}
		}
	} else {
		cn.outBytes.Add(int64(avail))
	}
	if o.fp == nil {
		if o.fp, err = newFramePipe(); err != nil {
			cn.outBytes.Add(-int64(avail))
			o.bulk = false // the read path it is
			return 0, nil
		}
	}
	switch err := cn.spliceFrame(o.fp, o.typ, fd, avail); err {
	case nil:
		cn.s.spliced.Add(1)
		return avail, nil
	case errNoSplice:
		cn.outBytes.Add(-int64(avail))
		return 0, nil
	default:
		o.closeFramePipe() // it may hold part of the frame
		return 0, err
	}
}

// writeFrame sends buf[frameHead:frameHead+n] as one "type, data" pair in
// a single write, building the headers in the room left before the data.
func (cn *conn) writeFrame(typ string, buf []byte, n int) error {
	var tmp [frameHead]byte
	h := append(tmp[:0], typ...)
	h = netstring.AppendHeader(h, n)
	start := frameHead - len(h)
	copy(buf[start:], h)
	buf[frameHead+n] = ','
	return cn.write(buf[start : frameHead+n+1])
}

// killer sends SIGTERM to a child's group, then SIGKILL after a timeout,
// and records both.
type killer struct {
	cn        *conn
	proc      *sandbox.Process
	timeout   time.Duration
	log       *slog.Logger
	reason    string
	timer     *time.Timer
	fired     chan struct{} // closed when the escalation has run
	stopped   bool
	escalated atomic.Bool
}

func (k *killer) kill(reason string) {
	if k.reason != "" {
		return
	}
	k.reason = reason
	k.cn.s.cfg.Metrics.killed(reason)
	k.log.Info("killing child's process group", "reason", reason, "pid", k.proc.Pid, "signal", "TERM")
	err := k.proc.Signal(syscall.SIGTERM)
	if err != nil {
		k.log.Error("kill", "err", err)
	}
	k.cn.recordKill(k.proc, reason, "TERM", false, err)
	k.fired = make(chan struct{})
	k.timer = time.AfterFunc(k.timeout, func() {
		defer close(k.fired)
		k.escalated.Store(true)
		k.log.Info("child outlived the kill timeout; escalating", "reason", reason, "pid", k.proc.Pid, "signal", "KILL")
		err := k.proc.Signal(syscall.SIGKILL)
		if err != nil {
			k.log.Error("kill", "err", err)
		}
		k.cn.recordKill(k.proc, reason, "KILL", true, err)
	})
}

// stop cancels the escalation; if it has already begun, stop waits for it
// to finish, so that its exec.kill record comes before the exit record.
func (k *killer) stop() {
	if k.timer != nil && !k.stopped {
		k.stopped = true
		if !k.timer.Stop() {
			<-k.fired
		}
	}
}

// signalName returns a signal's name without the "SIG" prefix, as the
// sockexec protocol sends it ("TERM", "KILL", "XFSZ").
func signalName(sig syscall.Signal) string {
	if sig == 0 {
		return ""
	}
	if name := unix.SignalName(sig); name != "" {
		return strings.TrimPrefix(name, "SIG")
	}
	return strconv.Itoa(int(sig))
}
