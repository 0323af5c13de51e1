// Package sandbox starts a child process confined the way a [Spec] says:
// its own session and process group, a parent-death signal (SIGKILL), a
// clean environment, a working directory, a umask, credentials (uid, gid,
// supplementary groups), resource limits, no_new_privs and Landlock
// rules, with only its three standard streams open. It is Linux-only.
//
// # How the child is set up
//
// Go cannot run code between fork and exec, so every step uses a
// mechanism that needs none:
//
//   - Session and group (setsid), credentials, working directory, the
//     parent-death signal and the stdio pipes are done by the forked child
//     itself through [syscall.SysProcAttr].
//   - no_new_privs, Landlock, the MPTCP seccomp filter (see [Landlock]),
//     the signal mask and the umask (after unshare(CLONE_FS)) are
//     per-thread: the child is forked by a worker goroutine locked to its
//     OS thread, which sets them on itself first, so that only the child
//     inherits them. Every spawn with Landlock gets a domain of its own
//     (children of the same policy cannot ptrace or, with Scope, signal
//     each other). See worker.go for the thread pool: a thread whose state
//     was changed serves one child, is parked until [Process.Wait] has
//     reaped it (the parent-death signal fires when the forking thread
//     dies, so that thread must outlive the child) and is then destroyed;
//     the others are reused and live as long as the server. A running
//     child with Landlock, no_new_privs or a umask thus holds one parked
//     OS thread.
//   - Resource limits are per-process and have no such hook. A spec with
//     rlimits is started under ptrace(PTRACE_TRACEME): the child stops on
//     the SIGTRAP that follows its successful execve, before the first
//     instruction of the new program; the forking thread then sets the
//     limits with prlimit(2) and detaches. Start returns as soon as the
//     execve has succeeded and the limit setting runs meanwhile; Wait
//     waits for it. If the limits cannot be set the child is killed
//     before it runs. A spec without rlimits is not traced. A traced
//     execve after the switch to a Credential grants no setuid/setgid or
//     file-capability privileges, so such a child never gains any, as if
//     NoNewPrivs were set.
//   - Every descriptor of the server from 3 up is marked close-on-exec
//     before each fork, so the child sees only 0, 1 and 2.
//   - Signal handlers are reset by execve; a signal the server ignores
//     would stay ignored in the child, so Start turns every ignored signal
//     of the server into a caught-and-discarded one (the same for the
//     server: [signal.Notify] on a channel nobody reads). The child starts
//     with an empty signal mask.
//
// The order of effects, as the child sees them at its first instruction:
// new session and group; supplementary groups, gid, uid; no_new_privs;
// Landlock; only fds 0-2; exact environment, working directory, umask;
// default signal dispositions, empty mask; rlimits. The limits land after
// the setuid rather than before it; the differences are that setuid(2)
// does not check RLIMIT_NPROC for the new user (fork(2) in the child
// does), and that an RLIMIT_STACK above the server's does not widen the
// stack gap chosen at exec.
//
// Without CAP_SYS_RESOURCE (which containers often drop, even for root)
// prlimit(2) may only lower the limits of a process with the caller's
// real ids: the forking thread, which is root and keeps its effective
// ids and capabilities, briefly takes the child's real uid and gid for
// the call. Raising a hard limit above the server's needs
// CAP_SYS_RESOURCE; Start refuses such a spec otherwise.
//
// Measured on a 2-core VM (BenchmarkSpawn, BenchmarkSpawnLatency):
// ptrace costs about 30 µs per spawn; a helper binary that sets the
// limits and execs the target (candidate-c-helper, a static C program)
// costs a whole second exec, 1.9x the latency of a bare spawn.
//
// The child's standard streams are pipes owned by the returned [Process].
//
// # Cgroups
//
// A process group is left with one setsid(2); a cgroup is not (short of
// privileges the child does not have). On a host with cgroup v2 (unified,
// or hybrid with the cgroup2 mount beside the v1 ones), every child gets a
// cgroup of its own, req-<server pid>-<n>, under a parent (see
// [ConfigureCgroups]; by default <server's cgroup>/sockwarden, the server's
// cgroup being the 0:: line of /proc/self/cgroup joined to the cgroup2
// mount found in /proc/self/mountinfo), and is born in it: it is forked
// with clone3(CLONE_INTO_CGROUP), so there is no moment when it runs
// outside. The request cgroups belong to the server and are not delegated
// to the child, which cannot leave its cgroup nor change its limits unless
// it runs as root (AllowRoot).
//
//   - [Process.Kill] (Signal with SIGKILL) writes cgroup.kill as well as
//     signalling the process group: every process of the cgroup dies,
//     whatever its session or group. Other signals (SIGTERM) reach the
//     process group only: the kernel can signal a whole cgroup only with
//     SIGKILL. So a child that escaped its group misses the TERM and dies
//     by the KILL that follows.
//   - [Process.Wait], once the leader has exited, kills its group and its
//     cgroup (counting the processes still in it), waits until
//     cgroup.events says "populated 0" (poll(2) on the file; 5 s at most,
//     after which the cgroup is removed in the background once empty),
//     reads memory.peak, memory.events, pids.peak and cpu.stat into
//     [State].Cgroup and removes the cgroup.
//   - Limits ([CgroupSpec]: memory.max, memory.swap.max, pids.max,
//     cpu.max) need their controller enabled in the parent's
//     cgroup.subtree_control. Setting up enables cpu, memory and pids
//     along the way from the server's own cgroup (when the parent is
//     inside it, as by default: with systemd's Delegate=yes it is the
//     server's to manage) or from the parent itself, never higher. A
//     controller the host does not delegate, or that a hybrid host binds
//     to a v1 hierarchy, is reported missing ([CgroupInfo]), and a spec
//     that needs it fails with a [*CgroupUnsupportedError] unless it is
//     BestEffort: a limit is never silently dropped.
//   - The no-internal-process rule: a cgroup other than the root may not
//     both hold processes and enable (domain) controllers for its
//     children. The server lives in its own cgroup, so to enable them
//     there it first moves itself into the leaf <own>/server, the layout
//     systemd documents for delegation: <own>/server holds the server,
//     <own>/sockwarden the request cgroups, <own> no process. It moves
//     only when a controller needs enabling and only when it is alone in
//     its cgroup; otherwise the controllers are reported missing. Without
//     controllers to enable (cgroup.kill, cgroup.events, cgroup.procs and
//     cpu.stat need none) nothing moves: a cgroup may hold processes and
//     children without controllers.
//   - Setting up also removes the request cgroups of dead servers (named
//     after a pid that no longer runs) under the parent, killing what is
//     left in them: the descendants of a server killed by SIGKILL, which
//     the parent-death signal does not reach.
//
// Without cgroup v2 (or with cgroup.kill, Linux 5.14, or clone3 missing,
// or [CgroupOptions].Disabled), children run as before, contained by
// their process group only; a nil Spec.Cgroup accepts that, a non-nil one
// is refused unless BestEffort.
//
// Measured on a 2-core VM without controllers (BenchmarkSpawn and
// BenchmarkSpawnLatency, the -cgroup cases against the same without): a
// cgroup per spawn costs 14-17% of the spawn rate (0.86x for
// sandbox-minimal, 0.83x for sandbox-full) and adds about 150 µs to the
// latency of a spawn, nearly all of it the kernel's: mkdir, the clone3
// into the new cgroup and rmdir.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spec describes the program to run and the confinement to run it in.
type Spec struct {
	// Path is the absolute path of the executable.
	Path string
	// Args is the full argv, Args[0] included.
	Args []string
	// Env is the complete environment of the child, as "KEY=value"
	// strings. Nothing is inherited from the server.
	Env []string
	// Dir is the working directory; empty means "/".
	Dir string

	// Umask is the child's file mode creation mask; nil leaves the
	// server's (usually 0022).
	Umask *uint32
	// Credential is the identity the child runs as; nil means the
	// server's own identity (uid, gid and supplementary groups), for which
	// the caller is responsible: a server running as root then runs the
	// child as root.
	Credential *Credential
	// AllowRoot permits a Credential with UID 0; without it Start refuses
	// one.
	AllowRoot bool
	// Rlimits are the child's resource limits; resources not listed keep
	// the server's limits (RLIMIT_NOFILE: the server's soft limit from
	// before Go raised it).
	Rlimits []Rlimit
	// NoNewPrivs sets no_new_privs: execve cannot grant privileges
	// (setuid/setgid bits and file capabilities are ignored). It is
	// forced on when Landlock is set.
	NoNewPrivs bool
	// Landlock confines the child's file system and network access; nil
	// means no Landlock.
	Landlock *Landlock
	// Cgroup sets the limits of the child's own cgroup and requires one.
	// nil still gives the child a cgroup (without limits) when the host
	// allows, and runs it with its process group only when not. See
	// [CgroupSpec] and the package documentation.
	Cgroup *CgroupSpec
}

// Credential is the identity a child runs as.
type Credential struct {
	UID, GID uint32
	// Groups are the supplementary groups; nil or empty means none.
	Groups []uint32
}

// Process is a started, sandboxed child.
type Process struct {
	// Pid is the child's process ID; it is also its process group ID and
	// session ID.
	Pid int
	// Stdin is the write end of the child's standard input.
	Stdin io.WriteCloser
	// Stdout and Stderr are the read ends of the child's output pipes.
	Stdout, Stderr io.ReadCloser
	// Landlock reports how the spec's Landlock rules were applied (zero
	// when the spec had none).
	Landlock LandlockReport
	// Cgroup is the child's own cgroup (a zero Path when it has none).
	Cgroup ProcessCgroup

	pidfd   int
	release chan struct{} // lets the spawning thread go once the child is reaped
	launch  *launch
	start   time.Time

	// sigMu orders signals with the reaping of the leader: once reaped,
	// its pid (the group ID) may be reused, so Signal becomes a no-op.
	// It also guards cg's kill count.
	sigMu  sync.Mutex
	reaped bool
	cg     *reqCgroup // nil: no cgroup of its own

	waitOnce sync.Once
	state    *State
	waitErr  error
}

// State is how a child ended.
type State struct {
	// ExitCode is the exit status, or -1 when the child died by a signal.
	ExitCode int
	// Signal is the signal that killed the child, or 0.
	Signal syscall.Signal
	// CoreDumped reports that the signal produced a core dump.
	CoreDumped bool
	// Wall is the time from start to exit.
	Wall time.Duration
	// Rusage is the child's resource usage (its own and that of the
	// descendants it waited for).
	Rusage syscall.Rusage
	// Cgroup is what the child's cgroup recorded: processes killed,
	// memory and pids peaks, OOM kills, CPU time of the whole tree. Zero
	// when the child had no cgroup.
	Cgroup CgroupStats
}

// SpawnError is returned by [Start] when the program could not be started.
// Code is the conventional shell status for the failure: 127 when the
// program does not exist, 126 when it exists but cannot be executed
// (including when Landlock forbids executing it).
type SpawnError struct {
	Path string
	Code int
	Err  error
}

// Error describes the failure.
func (e *SpawnError) Error() string { return fmt.Sprintf("cannot run %s: %v", e.Path, e.Err) }

// Unwrap returns the errno of the failure.
func (e *SpawnError) Unwrap() error { return e.Err }

// ErrRootRefused is returned by [Start] for a Credential with UID 0 when
// the spec does not set AllowRoot.
var ErrRootRefused = errors.New("sandbox: refusing to run as uid 0 without AllowRoot")

// Start starts the program of spec in its sandbox. It is safe for
// concurrent use. The caller must eventually call [Process.Wait]: until
// then the exited child stays a zombie, which keeps its pid (and so its
// process group ID) from being reused, and a child with Landlock,
// NoNewPrivs or a Umask keeps the OS thread that forked it.
//
// Errors are a [*SpawnError] when the program cannot be executed, an
// [*UnsupportedError] when the kernel cannot enforce the spec's Landlock
// rules, a [*CgroupUnsupportedError] when the host cannot enforce its
// Cgroup, [ErrRootRefused], or a plain error for an invalid spec or a
// failing system call.
func Start(spec *Spec) (*Process, error) {
	if spec.Path == "" || len(spec.Args) == 0 {
		return nil, errors.New("sandbox: spec needs Path and Args")
	}
	if spec.Credential != nil && spec.Credential.UID == 0 && !spec.AllowRoot {
		return nil, ErrRootRefused
	}
	if spec.Umask != nil && *spec.Umask&^0o777 != 0 {
		return nil, fmt.Errorf("sandbox: umask %#o out of range", *spec.Umask)
	}
	if err := validateRlimits(spec.Rlimits); err != nil {
		return nil, err
	}
	if len(spec.Rlimits) > 0 && !hasSysResource() {
		for _, r := range spec.Rlimits {
			var cur unix.Rlimit
			if unix.Getrlimit(r.Resource, &cur) == nil && r.Max > cur.Max {
				return nil, fmt.Errorf("sandbox: rlimit %s: raising the hard limit from %d to %d needs CAP_SYS_RESOURCE",
					RlimitName(r.Resource), cur.Max, r.Max)
			}
		}
	}
	if err := spec.Cgroup.validate(); err != nil {
		return nil, err
	}
	plan, err := prepareLandlock(spec.Landlock)
	if err != nil {
		return nil, err
	}
	defer plan.close()
	cg, cgReport, err := currentCgroups().newCgroup(spec.Cgroup)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok && cg != nil {
			cg.discard()
		}
	}()

	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	env := spec.Env
	if env == nil {
		env = []string{}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("sandbox: stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("sandbox: stderr pipe: %w", err)
	}

	sys := &syscall.SysProcAttr{
		Setsid:    true,
		Pdeathsig: syscall.SIGKILL,
		Ptrace:    len(spec.Rlimits) > 0,
	}
	if cg != nil {
		// clone3(CLONE_INTO_CGROUP): the child is born in its cgroup.
		sys.UseCgroupFD, sys.CgroupFD = true, cg.dirfd
	}
	if c := spec.Credential; c != nil {
		sys.Credential = &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.Groups}
		if sys.Credential.Groups == nil {
			sys.Credential.Groups = []uint32{}
		}
	}
	l := &launch{
		path:    spec.Path,
		argv:    spec.Args,
		attr:    &syscall.ProcAttr{Dir: dir, Env: env, Files: []uintptr{inR.Fd(), outW.Fd(), errW.Fd()}, Sys: sys},
		umask:   spec.Umask,
		nnp:     spec.NoNewPrivs || spec.Landlock != nil,
		plan:    plan,
		rlimits: spec.Rlimits,
		done:    make(chan launchResult, 1),
		release: make(chan struct{}),
	}
	if sys.Ptrace {
		l.settled = make(chan struct{})
	}
	unignoreSignals()
	start := time.Now()
	getWorker(l).jobs <- l
	res := <-l.done
	closeAll(inR, outW, errW)
	if res.err != nil {
		closeAll(inW, outR, errR)
		return nil, res.err
	}
	p := &Process{
		Pid:     res.pid,
		Stdin:   inW,
		Stdout:  outR,
		Stderr:  errR,
		Cgroup:  cgReport,
		pidfd:   res.pidfd,
		release: l.release,
		launch:  l,
		start:   start,
		cg:      cg,
	}
	if plan != nil {
		p.Landlock = plan.report
	}
	ok = true
	return p, nil
}

func spawnError(path string, err error) error {
	code := 126
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		code = 127
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &SpawnError{Path: path, Code: code, Err: err}
}

// Signal sends sig to the child's whole process group. SIGKILL also
// kills the child's cgroup, when it has one (cgroup.kill): every process
// in it dies, including those that left the group with setsid(2). Other
// signals reach the process group only: the kernel has no way to signal
// a whole cgroup but SIGKILL.
//
// Once Wait has reaped the leader Signal does nothing: the group ID
// could then name another process's group (and Wait has killed the
// cgroup). A child with rlimits that is still stopped for them receives
// the signal once they are set (SIGKILL at once).
func (p *Process) Signal(sig syscall.Signal) error {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if p.reaped {
		return nil
	}
	var cgErr error
	if sig == syscall.SIGKILL && p.cg != nil {
		cgErr = p.cg.kill(0)
	}
	if err := unix.Kill(-p.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("sandbox: signal %v to group %d: %w", sig, p.Pid, err)
	}
	return cgErr
}

// Kill sends SIGKILL to the child's whole process group and kills its
// cgroup.
func (p *Process) Kill() error { return p.Signal(syscall.SIGKILL) }

// Wait waits for the child (the group leader) to exit, kills what is left
// of its process group with SIGKILL, reaps it and reports how it ended.
// The kill happens while the leader's zombie still holds the group ID, so
// it cannot hit a group that reused it. Wait does not close the pipes,
// nor wait for the other members of the group to die. Later calls return
// the same result.
//
// When the child has a cgroup, Wait also kills everything left in it
// (counting those processes), waits until it is empty (for a few
// seconds at most: see [CgroupStats].Lingering), reads its statistics
// into [State].Cgroup and removes it.
//
// If the spec's rlimits could not be set once the child had been
// exec'd (which Start's checks make unlikely), the child was killed
// before its first instruction: Wait then returns its State together
// with an error saying why.
func (p *Process) Wait() (*State, error) {
	p.waitOnce.Do(func() {
		var settleErr error
		if p.launch.settled != nil {
			<-p.launch.settled
			settleErr = p.launch.settleErr
		}
		var info sigchldInfo
		var ru syscall.Rusage
		var err error
		for {
			err = waitid(unix.P_PIDFD, p.pidfd, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		if err == nil {
			p.sigMu.Lock()
			unix.Kill(-p.Pid, syscall.SIGKILL) // the leader's leftovers
			if p.cg != nil {
				p.cg.killRest(p.Pid) // and the escapees
			}
			for {
				err = waitid(unix.P_PIDFD, p.pidfd, &info, unix.WEXITED, &ru)
				if err != unix.EINTR {
					break
				}
			}
			p.reaped = err == nil
			p.sigMu.Unlock()
		}
		wall := time.Since(p.start)
		if err != nil {
			// Not reaped (cannot happen short of a bug): keep the
			// spawning thread, whose death would signal the child.
			p.waitErr = fmt.Errorf("sandbox: wait %d: %w", p.Pid, err)
			return
		}
		unix.Close(p.pidfd)
		close(p.release)
		p.state = info.state()
		p.state.Wall = wall
		p.state.Rusage = ru
		if p.cg != nil {
			p.state.Cgroup = p.cg.finish()
		}
		if settleErr != nil {
			p.waitErr = fmt.Errorf("%w (the child was killed before it could run)", settleErr)
		}
	})
	return p.state, p.waitErr
}

// sigchldInfo is siginfo_t as waitid(2) fills it for a child.
type sigchldInfo struct {
	Signo  int32
	Errno  int32
	Code   int32
	_      int32
	Pid    int32
	UID    uint32
	Status int32
	_      [100]byte
}

// si_code values for SIGCHLD.
const (
	cldExited  = 1
	cldKilled  = 2
	cldDumped  = 3
	cldTrapped = 4
)

func (i *sigchldInfo) state() *State {
	switch i.Code {
	case cldExited:
		return &State{ExitCode: int(i.Status)}
	case cldDumped:
		return &State{ExitCode: -1, Signal: syscall.Signal(i.Status), CoreDumped: true}
	default:
		return &State{ExitCode: -1, Signal: syscall.Signal(i.Status)}
	}
}

func waitid(idtype, id int, info *sigchldInfo, options int, ru *syscall.Rusage) error {
	_, _, e := unix.Syscall6(unix.SYS_WAITID, uintptr(idtype), uintptr(id),
		uintptr(unsafe.Pointer(info)), uintptr(options), uintptr(unsafe.Pointer(ru)), 0)
	if e != 0 {
		return e
	}
	return nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
