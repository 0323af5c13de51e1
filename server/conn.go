package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/sandbox"
)

// Exit statuses sent for requests that never ran, as a shell would.
const (
	StatusDenied     = 126 // denied by the authorizer, or not executable
	StatusNotFound   = 127 // no such program
	maxArgcDigits    = 20  // "argc" netstring limit
	maxStdinNetstr   = 1 << 40
	frameHead        = 32       // room for "6:stdout," and a length header
	outBufSize       = 32 << 10 // one read of child output
	connReadBufSize  = 4 << 10  // bufio buffer on the client side
	stdinCopyBufSize = 32 << 10
)

// Kill reasons, as logged and audited.
const (
	KillTimeout       = audit.KillTimeout
	KillDisconnect    = audit.KillDisconnect
	KillOutputLimit   = audit.KillOutputLimit
	KillShutdown      = audit.KillShutdown
	KillProtocolError = audit.KillProtocolError
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

var outBufs = sync.Pool{New: func() any {
	b := make([]byte, frameHead+outBufSize+1)
	return &b
}}

var stdinBufs = sync.Pool{New: func() any {
	b := make([]byte, stdinCopyBufSize)
	return &b
}}

type conn struct {
	s     *Server
	c     *net.UnixConn
	id    string
	since time.Time
	log   *slog.Logger

	mu   sync.Mutex // guards argv and pid, read by info
	peer Peer
	argv []string
	pid  int

	wmu        sync.Mutex // serializes writes to c
	werr       error      // first write error, under wmu
	r          *runner    // the running program's state, once started
	limitOnce  sync.Once
	outBytes   atomic.Int64 // stdout + stderr bytes read from the child
	stdout     streamStats  // forwarded to the client
	stderr     streamStats
	stdinBytes atomic.Int64 // forwarded to the child
	stdinTrunc atomic.Bool
	released   atomic.Bool // the connection's slot was given back
}

// streamStats counts one output stream for the audit trail.
type streamStats struct {
	bytes     atomic.Int64
	truncated atomic.Bool
}

func newConn(s *Server, c *net.UnixConn) *conn {
	return &conn{
		s:     s,
		c:     c,
		id:    newRequestID(),
		since: time.Now(),
		log:   s.log,
	}
}

func (cn *conn) info() ConnInfo {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return ConnInfo{RequestID: cn.id, Peer: cn.peer, Argv: cn.argv, ChildPid: cn.pid, Since: cn.since}
}

// serve runs one connection from accept until its request is answered
// or its program started. From then on the connection of a running
// program has no goroutine of its own: events drive it (see run), and the
// goroutine that sees the program exit ends it.
func (cn *conn) serve(ctx context.Context) {
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
	s.mu.Lock()
	delete(s.conns, cn)
	s.mu.Unlock()
	s.wg.Done()
}

// start reads, judges and answers the request, or starts its program and
// hands the connection over to run: then it reports true.
func (cn *conn) start(ctx context.Context, br *bufio.Reader) bool {
	cfg := &cn.s.cfg

	peer, err := peerCred(cn.c)
	if err != nil {
		cn.log.Error("closing connection", "request_id", cn.id, "err", err)
		return false
	}
	cn.s.names.describe(&peer)
	cn.mu.Lock()
	cn.peer = peer
	cn.mu.Unlock()
	cn.log = cn.s.log.With("request_id", cn.id, "peer_pid", peer.Pid, "peer_uid", peer.UID)

	var deadline time.Time
	if cfg.Deadline > 0 {
		deadline = cn.since.Add(cfg.Deadline)
	}
	dec := netstring.NewDecoder(br, maxArgcDigits)

	// Reading the request is bounded by the deadline and interrupted by
	// shutdown.
	cn.c.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { cn.c.SetReadDeadline(aLongTimeAgo) })
	argv, err := cn.readArgv(dec)
	stop()
	if err != nil {
		cn.requestError(ctx, err, dec.Offset())
		return false
	}
	cn.c.SetReadDeadline(time.Time{}) // from here the deadline kills the child
	cn.mu.Lock()
	cn.argv = argv
	cn.mu.Unlock()

	// No request is judged, let alone run, while its records cannot be
	// written (unless the operator chose best effort).
	if err := cn.s.auditHealthy(); err != nil {
		cn.refuseUnaudited(br, err)
		return false
	}
	exe, lookErr := resolveExe(argv[0], cfg.Path)
	req := &Request{ID: cn.id, Argv: argv, Exe: exe, Peer: peer, Socket: cfg.Socket, Time: time.Now()}
	v, err := judges.authorize(ctx, cfg.Authorizer, req)
	if err != nil {
		cn.log.Error("authorizer failed; denying", "err", err)
		v = &Verdict{Message: "policy error", Err: err}
	}
	if err := cn.recordDecision(req, v); err != nil && v.Allow {
		cn.refuseUnaudited(br, err)
		return false
	}
	if !v.Allow {
		msg := v.Message
		if msg == "" {
			msg = "not allowed by policy"
		}
		cn.log.Info("request denied", "argv", argv, "exe", exe, "message", msg, "reasons", v.Reasons)
		cn.replyNotRun(br, fmt.Sprintf("sockwarden: denied: %s (request %s)\n", oneLine(msg), cn.id), StatusDenied)
		return false
	}
	if lookErr != nil {
		cn.log.Info("program not found", "argv0", argv[0], "err", lookErr)
		// An allowed request that does not run says so in the trail, as
		// a spawn failure does.
		spec := v.Spec
		spec.Path = exe
		cn.recordStartError(&spec, lookErr)
		cn.replyNotRun(br, fmt.Sprintf("sockwarden: %q: %v\n", argv[0], lookErr), StatusNotFound)
		return false
	}

	spec := v.Spec
	spec.Path = exe
	spec.Args = argv
	proc, err := sandbox.Start(&spec)
	if err != nil {
		status := StatusDenied
		var se *sandbox.SpawnError
		if errors.As(err, &se) {
			status = se.Code
			err = se.Err
		}
		cn.log.Info("cannot start program", "exe", exe, "err", err)
		cn.recordStartError(&spec, err)
		cn.replyNotRun(br, fmt.Sprintf("sockwarden: %q: %v\n", argv[0], err), status)
		return false
	}
	cn.mu.Lock()
	cn.pid = proc.Pid
	cn.mu.Unlock()
	if err := cn.recordStart(&spec, proc, v); err != nil {
		// It must not run unrecorded: it has not run a single instruction
		// of its own yet (or barely), and goes now.
		proc.Kill()
		proc.Wait()
		closeProc(proc)
		cn.refuseUnaudited(br, err)
		return false
	}
	cn.log.Debug("started", "argv", argv, "exe", exe, "pid", proc.Pid)

	killTimeout := cfg.KillTimeout
	if v.KillTimeout > 0 {
		killTimeout = v.KillTimeout
	}
	if v.Timeout > 0 {
		if d := time.Now().Add(v.Timeout); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	cn.run(ctx, proc, br, dec, v, deadline, killTimeout)
	return true
}

// readArgv reads argc and argv.
func (cn *conn) readArgv(dec *netstring.Decoder) ([]string, error) {
	cfg := &cn.s.cfg
	b, err := dec.Decode(nil)
	if err != nil {
		return nil, fmt.Errorf("reading argc: %w", err)
	}
	argc, err := parseCount(b)
	if err != nil {
		return nil, fmt.Errorf("argc: %w", err)
	}
	if argc < 1 || argc > cfg.MaxArgs {
		return nil, fmt.Errorf("argc %d out of range 1..%d", argc, cfg.MaxArgs)
	}
	dec.SetMax(cfg.MaxArgBytes)
	argv := make([]string, 0, min(argc, 64))
	var total int64
	var buf []byte
	for i := range argc {
		buf, err = dec.Decode(buf[:0])
		if err != nil {
			return nil, fmt.Errorf("reading argv[%d] of %d: %w", i, argc, err)
		}
		if total += int64(len(buf)); total > cfg.MaxArgvBytes {
			return nil, fmt.Errorf("argv larger than %d bytes", cfg.MaxArgvBytes)
		}
		if i := strings.IndexByte(string(buf), 0); i >= 0 {
			return nil, fmt.Errorf("argv[%d] contains a NUL byte", len(argv))
		}
		argv = append(argv, string(buf))
	}
	if argv[0] == "" {
		return nil, errors.New("argv[0] is empty")
	}
	dec.SetMax(maxStdinNetstr)
	return argv, nil
}

// parseCount parses a decimal count: digits only, no sign.
func parseCount(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("empty")
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", b)
		}
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, fmt.Errorf("%q: %w", b, err)
	}
	return n, nil
}

// requestError handles a request that could not be read.
func (cn *conn) requestError(ctx context.Context, err error, off int64) {
	switch {
	case off == 0 && errors.Is(err, io.EOF):
		cn.log.Debug("client closed before sending a request")
	case ctx.Err() != nil:
		cn.log.Info("closing connection at shutdown before the request was complete", "bytes", off)
	case errors.Is(err, os.ErrDeadlineExceeded):
		cn.log.Warn("connection deadline passed before the request was complete", "bytes", off)
		cn.recordProtocolError(&ProtocolError{Offset: off, Err: errors.New("connection deadline passed before the request was complete")})
	default:
		pe := &ProtocolError{Offset: off, Err: err}
		cn.log.Warn("malformed request; closing connection", "err", pe)
		cn.recordProtocolError(pe)
	}
}

// resolveExe resolves argv[0] with the server's PATH. A name with a slash
// must be absolute (the server's working directory means nothing to a
// client) and is kept as it is, not cleaned: "/usr/bin/../bin/sh" is not
// the "/usr/bin/sh" of a policy's allow-list, and lexical cleaning can
// name another file than the kernel would when a component is a symlink.
// The server executes exactly the path the policy judged.
func resolveExe(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return "", errors.New("relative program paths are not allowed")
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("command not found")
}

// oneLine keeps a client-facing message on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// replyNotRun answers a request whose program never ran: one stderr line,
// then the exit status.
func (cn *conn) replyNotRun(br *bufio.Reader, line string, status int) {
	b := netstring.AppendString(nil, "stderr")
	b = netstring.AppendString(b, line)
	b = appendExitCode(b, status)
	cn.c.SetWriteDeadline(time.Now().Add(cn.s.cfg.Linger + time.Second))
	if err := cn.write(b); err != nil {
		cn.log.Debug("client gone before the reply", "err", err)
		return
	}
	cn.linger(func() { io.Copy(io.Discard, br) })
}

// release gives the connection's slot (of MaxConns) back, once.
func (cn *conn) release() {
	if cn.released.CompareAndSwap(false, true) {
		cn.s.active.Add(-1)
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
	// connects again must find it free.
	cn.release()
	cn.c.CloseWrite()
	d := cn.s.cfg.Linger
	if cn.s.lingering.Add(1) > int64(cn.s.cfg.MaxConns) {
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

// write sends b to the client; the first failure is remembered and, while
// a program runs, kills it (the client is gone).
func (cn *conn) write(b []byte) error {
	cn.wmu.Lock()
	if err := cn.werr; err != nil {
		cn.wmu.Unlock()
		return err
	}
	_, err := cn.c.Write(b)
	cn.werr = err
	cn.wmu.Unlock()
	if err != nil && cn.r != nil {
		cn.r.event(evWriteFail)
	}
	return err
}

// awaitExit returns once the child pid (started, not yet reaped) has
// exited, for a server without a poller (see watchExit). It waits in the
// runtime's poller on a pidfd, not in a blocking waitid(2): a goroutine
// blocked in a system call holds an OS thread, and the Go runtime keeps
// every thread it ever started, so N programs running at once would leave
// N idle threads behind for the life of the server. Without pidfds it
// returns at once, and the caller's Wait blocks as before.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	// A pidfd is readable once its process has exited; read(2) of it is
	// not defined, so look with poll(2) and let the poller wait.
	raw.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
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

func (sw stdinWriter) Write(p []byte) (int, error) {
	dl, ok := sw.w.(interface{ SetWriteDeadline(time.Time) error })
	if !ok {
		return sw.w.Write(p)
	}
	defer dl.SetWriteDeadline(time.Time{})
	total := 0
	for {
		if err := dl.SetWriteDeadline(time.Now().Add(hangupCheck)); err != nil {
			n, err := sw.w.Write(p[total:]) // not pollable: plain blocking write
			return total + n, err
		}
		n, err := sw.w.Write(p[total:])
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

// readPooled reads from r into a pooled buffer at offset frameHead.
func readPooled(r io.Reader, raw syscall.RawConn) (*[]byte, int, error) {
	if raw == nil {
		bp := outBufs.Get().(*[]byte)
		n, err := r.Read((*bp)[frameHead : frameHead+outBufSize])
		return bp, n, err
	}
	var bp *[]byte
	var n int
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
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
	case err != nil:
		return bp, 0, err
	case rerr != nil:
		return bp, 0, rerr
	case n == 0:
		return bp, 0, io.EOF
	}
	return bp, n, nil
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
