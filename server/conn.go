package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/sandbox"
)

// A connection's life, in the order of this file and the next ones:
//
//	conn.serve                      (this file)
//	  peer.FromConn, Names.Describe who is calling
//	  conn.readArgv                 reading (read.go)
//	  conn.judge                    judging (judge.go): Authorizer,
//	                                plan.Planner.Plan, exec.decision
//	  conn.replyNotRun              a denied or unstartable request
//	  Spawner.Start, exec.start     (this file)
//	  conn.run                      running (run.go, pump.go): pumps,
//	                                deadline, kills, the exit
//	  runner.finish                 finishing: exec.exit, the final pair
//	  conn.linger                   lingering: drain late input
//	  conn.end                      closed
const (
	maxArgcDigits    = 20 // "argc" netstring limit
	maxStdinNetstr   = 1 << 40
	frameHead        = 32       // room for "6:stdout," and a length header
	outBufSize       = 32 << 10 // one read of child output
	connReadBufSize  = 4 << 10  // bufio buffer on the client side
	stdinCopyBufSize = 32 << 10
)

// Exit statuses sent for requests that never ran, as a shell would.
const (
	StatusDenied   = plan.StatusDenied   // denied, or not executable
	StatusNotFound = plan.StatusNotFound // no such program
)

// Kill reasons, as logged and audited.
const (
	KillReasonTimeout       = audit.KillTimeout
	KillReasonDisconnect    = audit.KillDisconnect
	KillReasonOutputLimit   = audit.KillOutputLimit
	KillReasonStdinLimit    = audit.KillStdinLimit
	KillReasonOutputBuffer  = audit.KillOutputBuffer
	KillReasonShutdown      = audit.KillShutdown
	KillReasonProtocolError = audit.KillProtocolError
)

// ProtocolError is a malformed request.
type ProtocolError struct {
	Offset int64 // bytes read from the client before the error
	Err    error
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("malformed request after %d bytes: %v", e.Offset, e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }

// aLongTimeAgo is a read deadline that fails pending reads at once.
var aLongTimeAgo = time.Unix(1, 0)

type conn struct {
	s     *Server
	lim   Limits // in force when the connection was accepted
	c     *net.UnixConn
	id    string
	since time.Time
	log   *slog.Logger
	state atomic.Int32 // a ConnState

	mu   sync.Mutex // guards peer, argv and pid, read by info
	peer peer.Peer
	argv []string
	// argvShown is argv as records and logs may show it (masked).
	argvShown []string
	pid       int

	wmu    sync.Mutex // serializes writes to c
	werr   error      // first write error, under wmu
	shutWR bool       // writeFinal sent the reply and shut the write side
	out    spooler    // output waiting for the client (spool.go), under wmu

	clientSending atomic.Bool // the client has not ended its stdin yet
	bufferFull    atomic.Bool // the output spool reached Config.OutputBuffer
	r             *runner     // the running program's state, once started
	limitOnce     sync.Once
	outBytes      atomic.Int64 // stdout + stderr bytes read from the child
	stdout        streamStats  // forwarded to the client
	stderr        streamStats
	stdinBytes    atomic.Int64 // forwarded to the child
	stdinTrunc    atomic.Bool
	released      atomic.Bool // the connection's slot was given back
	quotaUID      uint32      // the caller whose quota this connection counts in
	inQuota       bool        // counted (the caller's credentials were read)
	quotaKey      string      // the decision quota key it holds, guarded by mu
}

// streamStats counts one output stream for the audit trail.
type streamStats struct {
	bytes     atomic.Int64
	truncated atomic.Bool
}

func newConn(s *Server, c *net.UnixConn) *conn {
	return &conn{
		s:     s,
		lim:   *s.limits.Load(),
		c:     c,
		id:    newRequestID(),
		since: time.Now(),
		log:   s.log,
	}
}

func (cn *conn) info() ConnInfo {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	argv := cn.argvShown
	if argv == nil { // not judged yet: the configured patterns only
		argv, _ = audit.Mask(cn.argv, nil, cn.s.cfg.MaskPatterns)
	}
	return ConnInfo{RequestID: cn.id, State: cn.State(), Peer: cn.peer, Argv: argv, ChildPid: cn.pid, Since: cn.since}
}

// serve runs one connection from accept until its request is answered
// or its program started. From then on the connection of a running
// program has no goroutine of its own: events drive it (see run), and the
// goroutine that sees the program exit ends it.
func (cn *conn) serve(ctx context.Context) {
	cn.setState(StateReading)
	br := getReader(cn.c)
	if cn.start(ctx, br) {
		return // handed over to the runner, which ends the connection
	}
	putReader(br)
	cn.end()
}

// end closes the connection and gives its slot back.
func (cn *conn) end() {
	s := cn.s
	s.served.Add(1)
	cn.release()
	cn.c.Close()
	cn.closeSpool()
	cn.setState(StateClosed)
	s.mu.Lock()
	delete(s.conns, cn)
	s.mu.Unlock()
	s.wg.Done()
}

// start reads, judges and answers the request, or starts its program and
// hands the connection over to run: then it reports true.
func (cn *conn) start(ctx context.Context, br *bufio.Reader) bool {
	// The credentials were read at accept, for the caller's quota;
	// read again only if that failed, for the error.
	p, err := cn.peer, error(nil)
	if !cn.inQuota {
		p, err = peer.FromConn(cn.c)
	}
	if err != nil {
		cn.log.Error("closing connection", "request_id", cn.id, "err", err)
		return false
	}
	cn.s.names.Describe(&p)
	cn.mu.Lock()
	cn.peer = p
	cn.mu.Unlock()
	cn.log = cn.s.log.With("request_id", cn.id, "peer_pid", p.PID, "peer_uid", p.UID)

	var deadline time.Time
	if cn.lim.Deadline > 0 {
		deadline = cn.since.Add(cn.lim.Deadline)
	}
	dec := netstring.NewDecoder(br, maxArgcDigits)

	// Reading the request is bounded by the deadline and interrupted by
	// shutdown.
	cn.c.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { cn.c.SetReadDeadline(aLongTimeAgo) })
	argv, err := cn.readArgv(dec)
	stop()
	if err != nil {
		cn.requestError(ctx, br, err, dec.Offset())
		return false
	}
	cn.c.SetReadDeadline(time.Time{}) // from here the deadline kills the child
	cn.mu.Lock()
	cn.argv = argv
	cn.mu.Unlock()

	pl, ok := cn.judge(ctx, br, argv, p)
	if !ok {
		return false
	}
	spec := &pl.Spec
	var t0 time.Time
	if cn.s.cfg.Metrics != nil {
		t0 = time.Now()
	}
	proc, err := cn.s.spawner.Start(spec)
	if cn.s.cfg.Metrics != nil {
		cn.s.cfg.Metrics.spawned(time.Since(t0))
	}
	if err != nil {
		status := StatusDenied
		var se *sandbox.SpawnError
		if errors.As(err, &se) {
			status = se.Code
			err = se.Err
		}
		cn.log.Info("cannot start program", "exe", spec.Path, "err", err)
		cn.s.cfg.Metrics.request(OutcomeError)
		cn.recordStartError(spec, err)
		cn.replyNotRun(br, plan.StartErrLine(argv[0], err), status)
		return false
	}
	cn.mu.Lock()
	cn.pid = proc.Pid
	cn.mu.Unlock()
	cn.s.cfg.Metrics.request(OutcomeAllowed)
	if err := cn.recordStart(pl, proc); err != nil {
		// It must not run unrecorded: it has not run a single instruction
		// of its own yet (or barely), and goes now.
		proc.Kill()
		proc.Wait()
		closeProc(proc)
		cn.refuseUnaudited(br, err)
		return false
	}
	if cn.log.Enabled(ctx, slog.LevelDebug) { // the preview and hash cost a little: not on every request
		cn.mu.Lock()
		shown := cn.argvShown
		cn.mu.Unlock()
		cn.log.Debug("started", "argv", audit.ArgvPreview(shown), "argv_sha256", audit.ArgvSHA256(shown), "exe", spec.Path, "pid", proc.Pid)
	}

	if pl.Timeout > 0 {
		if d := time.Now().Add(pl.Timeout); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	cn.setState(StateRunning)
	cn.run(ctx, proc, br, dec, pl, deadline)
	return true
}

// replyNotRun answers a request whose program never ran: one stderr line,
// then the exit status.
func (cn *conn) replyNotRun(br *bufio.Reader, line string, status int) {
	cn.setState(StateFinishing)
	b := appendStderrLine(nil, line)
	b = appendExitCode(b, status)
	cn.c.SetWriteDeadline(time.Now().Add(cn.s.cfg.Linger + time.Second))
	if err := cn.writeFinal(b); err != nil {
		cn.log.Debug("client gone before the reply", "err", err)
		return
	}
	cn.linger(func() { io.Copy(io.Discard, br) })
}

// release gives the connection's slot (of MaxConns) back, once.
func (cn *conn) release() {
	if cn.released.CompareAndSwap(false, true) {
		cn.s.active.Add(-1)
		if cn.inQuota {
			cn.s.quotas.leave(cn.quotaUID)
		}
		cn.mu.Lock()
		key := cn.quotaKey
		cn.mu.Unlock()
		if key != "" {
			cn.s.quotas.leaveKey(key)
		}
	}
}

// linger half-closes the connection and runs drain (which reads until
// the client closes) for at most Linger, so the client reads a clean end
// of stream instead of a reset caused by unread input.
//
// The request is over: its slot goes to the next client now, not when
// this client gets round to closing (a busy client, or a busy server
// slow to notice the close, would otherwise have finished connections
// turn new ones away). While more than MaxConns connections linger, a
// new one only takes what has already arrived (overflowLinger), so
// lingering costs at most about MaxConns connections at a time.
func (cn *conn) linger(drain func()) {
	// The slot first: a client that sees the end of the reply and at once
	// connects again must find it free (writeFinal gave it back already
	// after a reply).
	cn.release()
	if !cn.shutWR { // writeFinal has shut it already
		cn.c.CloseWrite()
	}
	cn.setState(StateLingering)
	d := cn.s.cfg.Linger
	if cn.s.lingering.Add(1) > int64(cn.lim.MaxConns) {
		d = overflowLinger
	}
	defer cn.s.lingering.Add(-1)
	cn.c.SetReadDeadline(time.Now().Add(d))
	drain()
}

// overflowLinger is the linger of a connection while MaxConns others
// linger.
const overflowLinger = 10 * time.Millisecond

func appendExitCode(b []byte, status int) []byte {
	b = netstring.AppendString(b, "exitcode")
	return netstring.AppendString(b, strconv.Itoa(status))
}

// writeFinal sends b, which ends with the final pair, and half-closes the
// connection at once: the end of stream follows the final pair with
// nothing in between, because a client such as lua-resty-exec gives the
// end of stream only a millisecond after the last pair. The write and the
// shutdown(2) are raw system calls in one callback (no goroutine switch
// and no wait for the Go scheduler between them), made by a thread that,
// where the server may (CAP_SYS_NICE), runs at real-time priority for
// those two calls (set with raw system calls too: a thread the Go
// scheduler saw in a system call could lose its P, and the runtime would
// start more threads), so that the client it wakes with the write cannot
// preempt it before the shutdown (measured through nginx at 8 at a time
// on 2 cores: 171 of 10,000 replies lost without it, see
// TestNginxEndOfStream). The slot is given back first, so that a client
// that sees the end and connects again at once finds it free.
func (cn *conn) writeFinal(b []byte) error {
	cn.release()
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	for cn.out.flushing { // the spooled output goes first
		cn.out.empty.Wait()
	}
	if cn.werr != nil {
		return cn.werr
	}
	raw, err := cn.c.SyscallConn()
	if err != nil {
		cn.werr = err
		return err
	}
	off := 0
	var werr error
	// writeAll writes what is left of b and, once all of it is written,
	// shuts the write side; it reports false when the socket is full.
	writeAll := func(fd uintptr) bool {
		full, err := writeRaw(fd, b, &off)
		switch {
		case err != nil:
			werr = err
			return true
		case full:
			return false
		}
		unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0)
		return true
	}
	// Usually the reply fits in the socket buffer: written and shut at
	// once, on a thread of its own for those two calls, never parked (a
	// locked thread that parks makes the runtime start another).
	done := false
	cerr := raw.Control(func(fd uintptr) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if cn.s.realtime.Load() {
			if setScheduler(unix.SCHED_FIFO, 1) != nil {
				cn.s.realtime.Store(false) // not permitted: never again
			} else {
				defer setScheduler(schedOther, 0)
			}
		}
		done = writeAll(fd)
	})
	if cerr == nil && !done {
		// The client does not read yet: wait for room (bounded by the
		// write deadline), then the rest and the shutdown, as before.
		cerr = raw.Write(writeAll)
	}
	if werr == nil {
		werr = cerr
	}
	cn.werr = werr
	cn.shutWR = werr == nil
	return werr
}

// schedOther is SCHED_OTHER, the default scheduling policy.
const schedOther = 0

// setScheduler sets the calling thread's scheduling policy and priority.
// It is a raw system call: the Go scheduler does not see it, so it never
// hands the thread's P to another thread meanwhile.
func setScheduler(policy uint32, prio uint32) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy, Priority: prio}
	if _, _, e := unix.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(&attr)), 0); e != 0 {
		return e
	}
	return nil
}

// write sends an output frame to the client (writeOutput: spooled while
// the client is still sending stdin); the first failure is remembered and,
// while a program runs, kills it (the client is gone).
func (cn *conn) write(b []byte) error {
	err := cn.writeOutput(b)
	if err != nil && !errors.Is(err, errSpoolFull) && cn.r != nil {
		cn.log.Debug("writing to the client failed", "err", err)
		cn.r.event(evWriteFail)
	}
	return err
}
