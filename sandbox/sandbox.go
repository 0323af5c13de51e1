// Package sandbox starts a child process confined the way a [Spec] says:
// its own session and process group, a parent-death signal (SIGKILL), a
// clean environment, a working directory, a umask, credentials (uid, gid,
// supplementary groups), resource limits, no_new_privs and Landlock
// rules, with only its three standard streams open. It is Linux-only.
//
// A [Spawner], made once by [New] (which probes the host and sets up the
// per-request cgroups: nothing of the sort happens on a Start), starts
// the children and holds what they share; several may live side by side.
// [Probe] reports what New would give without changing anything.
//
// # How the child is set up
//
// [Spawner.Start] forks the way [syscall.ForkExec] does (clone with CLONE_VM and
// CLONE_VFORK, or clone3 into the child's cgroup, on the calling
// goroutine's thread, between the Go runtime's fork hooks), but the child
// runs the whole setup itself, as raw system calls on data the parent
// prepared (fork.go), and then execs. In order:
//
//   - a new session and process group (setsid);
//   - the resource limits that raise a hard limit above the server's
//     (while the child still has the server's CAP_SYS_RESOURCE);
//   - supplementary groups, gid, uid;
//   - all the resource limits (after the switch, so that setuid(2) judges
//     RLIMIT_NPROC by the server's limit and the child's own forks by the
//     child's); without an RLIMIT_NOFILE in the spec, the soft limit the
//     server was started with (before the Go runtime raised it), as
//     os/exec does;
//   - the working directory (entered as the new user) and the umask;
//   - the parent-death signal (SIGKILL; after the credential switch,
//     which clears it) — and death at once if the server is already gone;
//   - no_new_privs, the MPTCP seccomp filter (see [Landlock]) and
//     landlock_restrict_self with a ruleset built once per distinct set of
//     rules and paths; every child gets a domain of its own (children of
//     the same policy cannot ptrace or, with Scope, signal each other);
//   - default dispositions for the signals the server ignores (the
//     runtime resets those it catches) and an empty signal mask;
//   - the three pipes on 0, 1 and 2 and every other descriptor marked
//     close-on-exec (close_range(2)), so the program sees only 0-2;
//   - execve with exactly the spec's environment.
//
// A step that fails makes the child exit before the exec; Start reaps it
// and returns the step and errno (an exec failure is a [*SpawnError]).
// Nothing is set on any thread of the server, and no thread is held per
// child: the child's parent-death signal fires when the thread that
// forked it ends, which the Go runtime does only for a goroutine that
// exits while locked to its thread — neither this package nor the server
// does that. No helper binary and no ptrace.
//
// Measured on a 2-core VM (BenchmarkSpawn, BenchmarkSpawnLatency, bare
// os/exec of /bin/true with three pipes as the baseline, same run, medians
// of three): the full sandbox (credentials, seven rlimits, umask,
// no_new_privs, Landlock with TCP rules, the seccomp filter) spawns at
// 1.05x the baseline rate at concurrency 8 and 1.11x its median latency
// one at a time; with a cgroup of its own, 1.00x and 1.18x. The designs
// measured before it: SysProcAttr plus a locked thread per spawn for
// Landlock and ptrace for the rlimits, 0.71x / 1.41x; a static C helper
// that sets the limits and execs the target, 0.55-0.68x / 1.8-1.96x.
//
// The child's standard streams are pipes owned by the returned [Process].
//
// # Cgroups
//
// A process group is left with one setsid(2); a cgroup is not (short of
// privileges the child does not have). On a host with cgroup v2 (unified,
// or hybrid with the cgroup2 mount beside the v1 ones), every child gets a
// cgroup of its own, req-<server pid>-<n>, under a parent (see
// [New]; by default <server's cgroup>/sockwarden, the server's
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
//     [State].Cgroup and releases the cgroup.
//   - Request cgroups are reused (internal/cgroup/pool.go): a few empty ones are
//     made ahead in the background (4), and a released cgroup goes back
//     to the pool (8 idle at most) rather than being removed, unless its
//     next request's figures or limits could not be exact: if it was
//     killed (Kill, or Wait finding processes left: on Linux 6.18 a
//     child cloned into a cgroup once killed dies at birth), did not
//     empty, still holds charged memory beyond the kernel's per-CPU
//     charge caches, had a pids.peak above 1 (pids.peak cannot be
//     reset), has a memory.peak that cannot be reset (before Linux 6.12),
//     or was changed (frozen, a sub-cgroup, another mode or owner). At
//     hand-out a cgroup must hold no process, gets the spec's limits and
//     a new cgroup's values for the others; cumulative figures (cpu.stat
//     usage, memory.events oom_kill) are read then and subtracted,
//     memory.peak is reset on a descriptor of the request's own, and the
//     kill count is per request: [State].Cgroup is the child's own.
//     [Spawner.Close] removes the idle ones (at shutdown).
//   - Limits ([CgroupSpec]: memory.max, memory.swap.max, pids.max,
//     cpu.max) need their controller enabled in the parent's
//     cgroup.subtree_control. Setting up enables cpu, memory and pids
//     along the way from the server's own cgroup (when the parent is
//     inside it, as by default: with systemd's Delegate=yes it is the
//     server's to manage) or from the parent itself, never higher. A
//     controller the host does not delegate, or that a hybrid host binds
//     to a v1 hierarchy, is reported missing ([Spawner.Capabilities]), and a spec
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
//     after a pid that no longer runs, pooled ones included) under the
//     parent, killing what is left in them: the descendants of a server
//     killed by SIGKILL, which the parent-death signal does not reach.
//
// Without cgroup v2 (or with cgroup.kill, Linux 5.14, or clone3 missing,
// or [CgroupOptions].Disabled), children run as before, contained by
// their process group only; a nil Spec.Cgroup accepts that, a non-nil one
// is refused unless BestEffort.
//
// Measured on a 2-core VM without controllers (BenchmarkSpawn and
// BenchmarkSpawnLatency, the -cgroup cases against the same without,
// medians of 8 interleaved rounds): a cgroup per spawn made and removed
// each time cost 0.67x the spawn rate (sandbox-minimal) and 0.64x
// (sandbox-full) and added 142 and 112 µs to the median latency; reused
// from the pool it costs 1.00x and 0.92x and adds 57 and 40 µs, most of
// it the kernel's clone3 into the cgroup.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
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
	// DynamicUser runs the child as a uid of its own from the Spawner's
	// range (see Dynamic uids in the package documentation); Credential
	// must then be nil. [Process].Credential says which.
	DynamicUser bool
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
	// PrivateIPC gives the child an IPC namespace of its own (see
	// Namespaces in the package documentation). Needs
	// [Capabilities].Namespaces.
	PrivateIPC bool
	// NoNetwork puts the child in an empty network namespace: no
	// interface, not even loopback. Needs [Capabilities].Namespaces.
	NoNetwork bool
	// TmpDir gives the child a private temporary directory (see Private
	// temporary directories in the package documentation);
	// [Process].TmpDir names it.
	TmpDir bool
	// Seccomp is the child's system call filter; nil means none (the
	// network filter of a Landlock spec that restricts TCP still
	// applies). It forces NoNewPrivs on.
	Seccomp *Seccomp
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
	Stdin *Pipe
	// Stdout and Stderr are the read ends of the child's output pipes.
	Stdout, Stderr *Pipe
	// Landlock reports how the spec's Landlock rules were applied (zero
	// when the spec had none).
	Landlock LandlockReport
	// Seccomp reports the system call filters the child got.
	Seccomp SeccompReport
	// Credential is the identity the child runs as: the spec's, or its
	// dynamic uid; nil for the server's own.
	Credential *Credential
	// TmpDir is the child's private temporary directory ("" without
	// one), removed by Wait.
	TmpDir string
	// Cgroup is the child's own cgroup (a zero Path when it has none).
	Cgroup ProcessCgroup

	pidfd int
	start time.Time

	// sigMu orders signals with the reaping of the leader: once reaped,
	// its pid (the group ID) may be reused, so Signal becomes a no-op.
	// It also guards cg's kill count.
	sigMu  sync.Mutex
	reaped bool
	cg     *cgroup.Cgroup // nil: no cgroup of its own

	uids       *uidPool // the pool of the dynamic uid, nil without one
	watcher    *DenialWatcher
	denials    *denialTrack // nil: denials not reported
	privateIPC bool

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

// SpawnError is returned by [Spawner.Start] when the program could not be started.
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

// ErrRootRefused is returned by [Spawner.Start] for a Credential with UID 0 when
// the spec does not set AllowRoot.
var ErrRootRefused = errors.New("sandbox: refusing to run as uid 0 without AllowRoot")

// ErrNoNamespaces is returned by [Spawner.Start] for a spec with
// PrivateIPC or NoNetwork when the server cannot make namespaces.
var ErrNoNamespaces = errors.New("sandbox: namespaces (an IPC namespace, no network) need CAP_SYS_ADMIN, which this server lacks")

// Start starts the program of spec in its sandbox. It is safe for
// concurrent use. The caller must eventually call [Process.Wait]: until
// then the exited child stays a zombie, which keeps its pid (and so its
// process group ID) from being reused.
//
// Errors are a [*SpawnError] when the program cannot be executed, an
// [*UnsupportedError] when the kernel cannot enforce the spec's Landlock
// rules, a [*CgroupUnsupportedError] when the host cannot enforce its
// Cgroup, [ErrRootRefused], or a plain error for an invalid spec or a
// failing system call.
func (s *Spawner) Start(spec *Spec) (*Process, error) {
	if spec.Path == "" || len(spec.Args) == 0 {
		return nil, errors.New("sandbox: spec needs Path and Args")
	}
	if spec.DynamicUser {
		switch {
		case spec.Credential != nil:
			return nil, errors.New("sandbox: spec with both DynamicUser and a Credential")
		case s.uids == nil:
			return nil, errors.New("sandbox: no dynamic uids (none configured, or the server cannot switch users)")
		}
		uid, err := s.uids.acquire()
		if err != nil {
			return nil, err
		}
		dyn := *spec
		dyn.Credential = &Credential{UID: uid, GID: uid}
		spec = &dyn
		started := false
		defer func() {
			if !started {
				s.uids.release(uid, true, spec.PrivateIPC)
			}
		}()
		p, err := s.start(spec)
		if err == nil {
			started = true
			p.uids, p.privateIPC = s.uids, spec.PrivateIPC
		}
		return p, err
	}
	return s.start(spec)
}

func (s *Spawner) start(spec *Spec) (*Process, error) {
	if !spec.TmpDir {
		return s.startSpec(spec)
	}
	dir, err := s.tmp.make(spec.Credential)
	if err != nil {
		return nil, err
	}
	p, err := s.startSpec(withTmpDir(spec, dir, s.tmp.parent))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p.TmpDir = dir
	return p, nil
}

func (s *Spawner) startSpec(spec *Spec) (*Process, error) {
	if spec.Credential != nil && spec.Credential.UID == 0 && !spec.AllowRoot {
		return nil, ErrRootRefused
	}
	if spec.Umask != nil && *spec.Umask&^0o777 != 0 {
		return nil, fmt.Errorf("sandbox: umask %#o out of range", *spec.Umask)
	}
	if err := validateRlimits(spec.Rlimits); err != nil {
		return nil, err
	}
	if len(spec.Rlimits) > 0 && !s.sysResource {
		for _, r := range spec.Rlimits {
			if limit, ok := s.hardLimit(r.Resource); ok && r.Max > limit {
				return nil, fmt.Errorf("sandbox: rlimit %s: raising the hard limit from %d to %d needs CAP_SYS_RESOURCE",
					RlimitName(r.Resource), limit, r.Max)
			}
		}
	}
	if err := spec.Cgroup.Validate(); err != nil {
		return nil, err
	}
	netnsFD := -1
	if spec.PrivateIPC || spec.NoNetwork {
		if !s.caps.Namespaces {
			return nil, ErrNoNamespaces
		}
		if spec.NoNetwork {
			fd, err := s.netns.get()
			if err != nil {
				return nil, err
			}
			netnsFD = fd
		}
	}
	plan, err := s.prepareLandlock(spec.Landlock)
	if err != nil {
		return nil, err
	}
	defer plan.close()
	restrictTCP := plan != nil && plan.restrictTCP
	filters, scReport, err := s.prepareFilters(spec.Seccomp, restrictTCP, restrictTCP && spec.Landlock.UDP)
	if err != nil {
		return nil, err
	}
	cg, cgReport, err := s.cgroups.Acquire(spec.Cgroup)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok && cg != nil {
			cg.Discard()
		}
	}()

	child, in, out, errp, err := stdioPipes()
	if err != nil {
		return nil, err
	}
	cgroupFD := -1
	if cg != nil {
		// clone3(CLONE_INTO_CGROUP): the child is born in its cgroup.
		cgroupFD = cg.DirFD()
	}
	fp, err := s.newForkPlan(spec, plan, filters, cgroupFD, child)
	if fp != nil {
		fp.netnsFD = netnsFD
	}
	if err != nil {
		closeFDs(child[:])
		closeAll(in, out, errp)
		return nil, err
	}
	start := time.Now()
	pid, pidfd, err := forkExec(fp)
	closeFDs(child[:])
	if err != nil {
		closeAll(in, out, errp)
		return nil, spawnError(spec.Path, err)
	}
	p := &Process{
		Pid:        pid,
		Stdin:      in,
		Stdout:     out,
		Stderr:     errp,
		Cgroup:     cgReport,
		Seccomp:    scReport,
		Credential: spec.Credential,
		pidfd:      pidfd,
		start:      start,
		cg:         cg,
	}
	if plan != nil {
		p.Landlock = plan.report
		if fp.denialProbe != nil {
			p.watcher = s.denials
			p.denials = s.denials.register(pid)
		}
	}
	ok = true
	return p, nil
}

// Signal sends sig to the child's whole process group. SIGKILL also
// kills the child's cgroup, when it has one (cgroup.kill): every process
// in it dies, including those that left the group with setsid(2). Other
// signals reach the process group only: the kernel has no way to signal
// a whole cgroup but SIGKILL.
//
// Once Wait has reaped the leader Signal does nothing: the group ID
// could then name another process's group (and Wait has killed the
// cgroup).
func (p *Process) Signal(sig syscall.Signal) error {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if p.reaped {
		return nil
	}
	var cgErr error
	if sig == syscall.SIGKILL && p.cg != nil {
		cgErr = p.cg.Kill(0)
	}
	if err := unix.Kill(-p.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("sandbox: signal %v to group %d: %w", sig, p.Pid, err)
	}
	return cgErr
}

// PidFD returns a pidfd (pidfd_open(2)) of the child, which becomes
// readable (POLLIN) when the child exits: a caller can wait for the exit
// with poll(2) or epoll(7) before calling Wait, without a thread blocked
// in waitid(2). The descriptor belongs to p: it is valid until Wait
// returns, when Wait closes it; the caller must not close it, and must
// stop polling it before calling Wait.
func (p *Process) PidFD() int { return p.pidfd }

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
// into [State].Cgroup and releases it: back to a pool for a later child
// when it may serve again, else removed.
func (p *Process) Wait() (*State, error) {
	p.waitOnce.Do(func() {
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
				p.cg.KillRest(p.Pid) // and the escapees
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
		p.state = info.state()
		p.state.Wall = wall
		p.state.Rusage = ru
		if p.cg != nil {
			p.state.Cgroup = p.cg.Finish()
		}
		if p.TmpDir != "" {
			os.RemoveAll(p.TmpDir)
		}
		if p.uids != nil {
			p.uids.release(p.Credential.UID, p.cg != nil && !p.state.Cgroup.Lingering, p.privateIPC)
		}
		if p.denials != nil {
			p.watcher.ended(p.Pid, p.denials)
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

// stdioPipes makes the child's three pipes. The child's ends stay raw
// descriptors (blocking, as programs expect; the caller closes them once
// the child has them); the server's ends are non-blocking [Pipe]s, which
// join the runtime's poller only once used. Both are close-on-exec.
func stdioPipes() (child [3]int, in, out, errp *Pipe, err error) {
	var pipes [3]*Pipe
	for i, name := range [3]string{"stdin", "stdout", "stderr"} {
		var p [2]int
		if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			err = fmt.Errorf("sandbox: %s pipe: %w", name, err)
			break
		}
		mine, theirs := p[0], p[1] // the server reads stdout and stderr
		if i == 0 {
			mine, theirs = p[1], p[0] // and writes stdin
		}
		child[i] = theirs
		if _, err = unix.FcntlInt(uintptr(mine), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
			unix.Close(mine)
			unix.Close(theirs)
			err = fmt.Errorf("sandbox: %s pipe: %w", name, err)
			break
		}
		pipes[i] = newPipe(mine, "|"+name)
	}
	if err != nil {
		for i, p := range pipes {
			if p != nil {
				p.Close()
				unix.Close(child[i])
			}
		}
		return child, nil, nil, nil, err
	}
	return child, pipes[0], pipes[1], pipes[2], nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func closeAll(fs ...*Pipe) {
	for _, f := range fs {
		f.Close()
	}
}
