package server

import (
	"bufio"
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/netstring"
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
	evTimeout   = iota // the deadline passed
	evShutdown         // the server shuts down
	evWriteFail        // a write to the client failed
	evOutLimit         // the output cap was reached
)

// run starts pumping a started child's streams and returns: the
// connection goes on without a goroutine until something happens, and is
// ended by finish once the child has exited and its output is drained.
func (cn *conn) run(ctx context.Context, proc *sandbox.Process, br *bufio.Reader, dec *netstring.Decoder, v *Verdict, deadline time.Time, killTimeout time.Duration) {
	p := sharedPoller()
	// One allocation for the connection's running state.
	r := &runner{
		cn:          cn,
		proc:        proc,
		k:           killer{cn: cn, proc: proc, timeout: killTimeout, log: cn.log},
		in:          stdinPump{cn: cn, p: p, br: br, dec: dec, w: proc.Stdin, max: v.MaxStdinBytes, open: true},
		killTimeout: killTimeout,
		// Once a kill has started, a client that does not read may hold
		// up the output and the reply for this long: the escalation, the
		// drain of the pipes and a second to spare.
		writeGrace: 2*killTimeout + time.Second,
		stdinDone:  make(chan struct{}),
	}
	// Everything an event touches is set before the first event can come.
	cn.r = r
	r.out[0].init(cn, &r.outputs, proc.Stdout, "6:stdout,", &cn.stdout, v.MaxOutputBytes)
	r.out[1].init(cn, &r.outputs, proc.Stderr, "6:stderr,", &cn.stderr, v.MaxOutputBytes)
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
		r.k.kill(KillTimeout)
		cn.c.SetWriteDeadline(time.Now().Add(r.writeGrace))
	case evShutdown:
		r.k.kill(KillShutdown)
		cn.c.SetWriteDeadline(time.Now().Add(r.writeGrace))
	case evWriteFail:
		r.k.kill(KillDisconnect)
	case evOutLimit:
		r.k.kill(KillOutputLimit)
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
		r.k.kill(KillProtocolError)
	} else {
		r.k.kill(KillDisconnect)
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
	cn.recordExit(r.proc, st)
	if k.reason == KillDisconnect || k.reason == KillProtocolError {
		return
	}
	var b []byte
	if st.Signal != 0 {
		b = netstring.AppendString(b, "termsig")
		b = netstring.AppendString(b, signalName(st.Signal))
	} else {
		b = appendExitCode(b, st.ExitCode)
	}
	if err := cn.write(b); err != nil {
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

// watchExit calls done with how proc ended, once it has, on a goroutine
// of its own. The wait is the child's pidfd registered with the poller:
// no goroutine waits meanwhile. The registration is removed before Wait,
// which closes the pidfd.
func watchExit(p *poller, proc *sandbox.Process, done func(*sandbox.State, error)) {
	reap := func() {
		st, err := proc.Wait()
		done(st, err)
	}
	if p != nil {
		_, err := p.register(rawFD(proc.PidFD()), unix.EPOLLIN, func(r *pollReg) {
			go func() {
				r.remove()
				reap()
			}()
		})
		if err == nil {
			return
		}
	}
	go func() {
		awaitExit(proc.Pid)
		reap()
	}()
}
