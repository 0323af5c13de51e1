//go:build linux && (amd64 || arm64)

package sandbox

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The fork.
//
// Go's syscall.ForkExec runs a fixed list of steps between fork and exec
// and has no hook for the rest of the sandbox (rlimits, no_new_privs,
// seccomp, Landlock, umask, signal dispositions). Rather than setting
// those on a dedicated thread before the fork, or tracing the child, or
// exec'ing a helper first, this file forks the way syscall.ForkExec does
// (clone with CLONE_VM|CLONE_VFORK, on the calling goroutine's thread,
// between the runtime's fork hooks) and lets the child run every step
// itself, as raw system calls on data the parent prepared (a [forkPlan]).
// It is the body of syscall.forkAndExecInChild1 with the sandbox's steps
// added, and obeys the same rules: after runtime_BeforeFork the child
// allocates nothing, takes no lock, grows no stack and calls only
// assembly (syscall.RawSyscall6) or nosplit runtime functions; it writes
// to the parent's memory only non-pointer words of its plan (the failed
// step and errno); the parent, suspended until the child has exec'd or
// exited, returns from the forking frame at once.

// Implemented in package runtime; os/exec's fork uses the same hooks.
// They block signals and guard the stack around the fork (BeforeFork,
// AfterFork) and reset the runtime's signal handlers in the child
// (AfterForkInChild).
//
//go:linkname runtime_BeforeFork syscall.runtime_BeforeFork
func runtime_BeforeFork()

//go:linkname runtime_AfterFork syscall.runtime_AfterFork
func runtime_AfterFork()

//go:linkname runtime_AfterForkInChild syscall.runtime_AfterForkInChild
func runtime_AfterForkInChild()

// rawVforkSyscall makes a clone system call that may share the caller's
// stack with the child (fork_$GOARCH.s).
func rawVforkSyscall(trap, a1, a2, a3 uintptr) (r1 uintptr, err syscall.Errno)

// forkExec starts the child of p and returns its pid and a pidfd for it.
// A step of the child's setup that fails is returned as a *forkError
// (the child has exited and been reaped).
func forkExec(p *forkPlan) (pid, pidfd int, err error) {
	p.pidfd = -1
	flags := uintptr(unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_PIDFD)
	if p.cgroupFD >= 0 {
		p.clone3 = cloneArgs{
			flags:      uint64(flags) | unix.CLONE_INTO_CGROUP,
			pidFD:      uint64(uintptr(unsafe.Pointer(&p.pidfd))),
			exitSignal: uint64(unix.SIGCHLD),
			cgroup:     uint64(p.cgroupFD),
		}
	}
	upid, errno, locked := forkChild(p, flags)
	if locked {
		runtime_AfterFork()
	}
	runtime.KeepAlive(p)
	if errno != 0 {
		return 0, -1, fmt.Errorf("sandbox: clone: %w", errno)
	}
	pid, pidfd = int(upid), int(p.pidfd)
	if p.failStep != stepNone {
		// The child wrote why and exited: reap it.
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != unix.EINTR {
				break
			}
		}
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return 0, -1, &forkError{step: p.failStep, errno: p.failErr}
	}
	return pid, pidfd, nil
}

// forkChild forks; the child sets itself up as p says and execs. In the
// parent it returns the child's pid at once: its frame is shared with the
// child (CLONE_VM|CLONE_VFORK), which may have overwritten it.
//
//go:noinline
//go:norace
//go:nocheckptr
func forkChild(p *forkPlan, flags uintptr) (pid uintptr, err1 syscall.Errno, locked bool) {
	// Declared before the fork: nothing may be allocated after it.
	var (
		i, nextfd int
		fd        [3]int
		r1        uintptr
	)

	runtime_BeforeFork()
	locked = true
	if p.cgroupFD >= 0 {
		pid, err1 = rawVforkSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&p.clone3)), unsafe.Sizeof(p.clone3), 0)
	} else {
		pid, err1 = rawVforkSyscall(unix.SYS_CLONE, flags|uintptr(unix.SIGCHLD), 0, uintptr(unsafe.Pointer(&p.pidfd)))
	}
	if err1 != 0 || pid != 0 {
		return // parent
	}

	// In the child. New session and process group.
	runtime_AfterForkInChild()
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_SETSID, 0, 0, 0, 0, 0, 0); err1 != 0 {
		p.failStep = stepSetsid
		goto fail
	}

	// Limits above the server's hard limits need CAP_SYS_RESOURCE, which
	// the credential switch drops.
	for i = 0; i < len(p.raise); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, p.raise[i].resource,
			uintptr(unsafe.Pointer(&p.raise[i].lim)), 0, 0, 0); err1 != 0 {
			p.failStep = stepRaiseRlimit
			goto fail
		}
	}

	// Namespaces, while the child still has CAP_SYS_ADMIN.
	if p.unshare != 0 {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_UNSHARE, p.unshare, 0, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepNamespaces
			goto fail
		}
	}
	if p.netnsFD >= 0 {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_SETNS, uintptr(p.netnsFD), unix.CLONE_NEWNET, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepNetns
			goto fail
		}
	}

	// Credentials: supplementary groups, gid, uid.
	if p.cred {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_SETGROUPS, p.ngroups, uintptr(p.groups), 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepSetgroups
			goto fail
		}
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_SETGID, p.gid, 0, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepSetgid
			goto fail
		}
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_SETUID, p.uid, 0, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepSetuid
			goto fail
		}
	}
	// A session keyring of its own, owned by the new user, instead of
	// the server's. Best effort: the user's key quota may be used up.
	if p.keyring {
		syscall.RawSyscall6(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0, 0)
	}

	// Resource limits, after the switch: setuid(2) then judges
	// RLIMIT_NPROC by the server's limit, and fork(2) in the child by
	// the child's.
	for i = 0; i < len(p.rlimits); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, p.rlimits[i].resource,
			uintptr(unsafe.Pointer(&p.rlimits[i].lim)), 0, 0, 0); err1 != 0 {
			p.failStep = stepRlimit
			goto fail
		}
	}

	// Working directory (as the new user) and umask.
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_CHDIR, uintptr(unsafe.Pointer(p.dir)), 0, 0, 0, 0, 0); err1 != 0 {
		p.failStep = stepChdir
		goto fail
	}
	if p.umask >= 0 {
		syscall.RawSyscall6(unix.SYS_UMASK, uintptr(p.umask), 0, 0, 0, 0, 0)
	}

	// Parent-death signal, after the credential switch, which clears it.
	// If the server died meanwhile, die now.
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0, 0); err1 != 0 {
		p.failStep = stepPdeathsig
		goto fail
	}
	if r1, _, _ = syscall.RawSyscall6(unix.SYS_GETPPID, 0, 0, 0, 0, 0, 0); r1 != p.ppid {
		r1, _, _ = syscall.RawSyscall6(unix.SYS_GETPID, 0, 0, 0, 0, 0, 0)
		syscall.RawSyscall6(unix.SYS_KILL, r1, uintptr(unix.SIGKILL), 0, 0, 0, 0)
	}

	// no_new_privs, Landlock, the seccomp filters (last, so that they
	// need not allow the setup's own calls).
	if p.nnp {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepNoNewPrivs
			goto fail
		}
	}
	if p.rulesetFD >= 0 {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(p.rulesetFD), p.landlockFlags, 0, 0, 0, 0); err1 != 0 {
			p.failStep = stepLandlock
			goto fail
		}
		// The deliberate first denial, which names the domain in the
		// kernel's audit records: an ioctl on a device, which no rule
		// grants. Its outcome does not matter.
		if p.denialProbe != nil {
			r1, _, err1 = syscall.RawSyscall6(unix.SYS_OPENAT, p.atFDCWD, uintptr(unsafe.Pointer(p.denialProbe)),
				unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0, 0, 0)
			if err1 == 0 {
				syscall.RawSyscall6(unix.SYS_IOCTL, r1, unix.TCGETS, 0, 0, 0, 0)
				syscall.RawSyscall6(unix.SYS_CLOSE, r1, 0, 0, 0, 0, 0)
			}
		}
	}
	for i = 0; i < len(p.filters); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0,
			uintptr(unsafe.Pointer(&p.filters[i])), 0, 0, 0); err1 != 0 {
			p.failStep = stepSeccomp
			goto fail
		}
	}

	// Default dispositions for the signals the server ignores; empty mask.
	for i = 0; i < len(p.resetSignals); i++ {
		if _, _, err1 = syscall.RawSyscall6(unix.SYS_RT_SIGACTION, p.resetSignals[i],
			uintptr(unsafe.Pointer(&p.sigDefault)), 0, 8, 0, 0); err1 != 0 {
			p.failStep = stepSignals
			goto fail
		}
	}
	if _, _, err1 = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&p.emptyMask)), 0, 8, 0, 0); err1 != 0 {
		p.failStep = stepSignals
		goto fail
	}

	// Standard streams, as syscall.forkAndExecInChild1 does: first move
	// any fd[i] < i out of the way, then dup each onto i.
	fd = p.stdio
	nextfd = 3
	for i = 0; i < 3; i++ {
		if fd[i] >= nextfd {
			nextfd = fd[i] + 1
		}
	}
	for i = 0; i < 3; i++ {
		if fd[i] < i {
			if _, _, err1 = syscall.RawSyscall6(unix.SYS_DUP3, uintptr(fd[i]), uintptr(nextfd), unix.O_CLOEXEC, 0, 0, 0); err1 != 0 {
				p.failStep = stepStdio
				goto fail
			}
			fd[i] = nextfd
			nextfd++
		}
	}
	for i = 0; i < 3; i++ {
		if fd[i] == i {
			_, _, err1 = syscall.RawSyscall6(unix.SYS_FCNTL, uintptr(i), unix.F_SETFD, 0, 0, 0, 0)
		} else {
			_, _, err1 = syscall.RawSyscall6(unix.SYS_DUP3, uintptr(fd[i]), uintptr(i), 0, 0, 0, 0)
		}
		if err1 != 0 {
			p.failStep = stepStdio
			goto fail
		}
	}
	// Nothing else reaches the program, whatever the server opened
	// without O_CLOEXEC.
	if p.closeRange {
		syscall.RawSyscall6(unix.SYS_CLOSE_RANGE, 3, uintptr(^uint32(0)), unix.CLOSE_RANGE_CLOEXEC, 0, 0, 0)
	}

	_, _, err1 = syscall.RawSyscall6(unix.SYS_EXECVE, uintptr(unsafe.Pointer(p.argv0)),
		uintptr(unsafe.Pointer(&p.argv[0])), uintptr(unsafe.Pointer(&p.envv[0])), 0, 0, 0)
	p.failStep = stepExec

fail:
	p.failErr = err1
	for {
		syscall.RawSyscall6(unix.SYS_EXIT, 253, 0, 0, 0, 0, 0)
	}
}
