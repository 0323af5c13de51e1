package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// launch is one spawn, carried out on a dedicated locked OS thread.
type launch struct {
	path    string
	argv    []string
	attr    *syscall.ProcAttr
	umask   *uint32
	nnp     bool
	plan    *landlockPlan
	rlimits []Rlimit
	done    chan launchResult
	release chan struct{} // closed by Process.Wait

	// For a traced child (rlimits): closed once the limits are set and
	// the child detached, or it was killed because they could not be
	// set (settleErr).
	settled   chan struct{}
	settleErr error
}

type launchResult struct {
	pid, pidfd int
	err        error
}

// taints reports whether forking l's child changes its worker's thread
// irreversibly.
func (l *launch) taints() bool { return l.nnp || l.umask != nil || l.plan != nil }

// armed reports whether l's worker needs no_new_privs and the MPTCP filter.
func (l *launch) armed() bool { return l.plan != nil && l.plan.mptcp }

// execute runs l on worker w's thread: it starts the child and sends the
// result. It reports whether the thread is now tainted.
//
// A traced child (one with rlimits) is reported as soon as its execve has
// succeeded, while it is still stopped before its first instruction, and
// only then are its limits set and the child detached: the caller of
// Start gets on meanwhile, and Process.Wait waits for this step.
func (l *launch) execute(w *worker) (tainted bool) {
	pid, pidfd, tainted, err := l.spawn(w)
	l.done <- launchResult{pid: pid, pidfd: pidfd, err: err}
	if err != nil {
		if tainted {
			close(l.release) // no child to wait for
		}
		return tainted
	}
	if l.attr.Sys.Ptrace {
		restored, err := settleTraced(pid, pidfd, l.rlimits, l.attr.Sys.Credential)
		if err != nil {
			// Never let it run without its limits.
			unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		}
		l.settleErr = err
		close(l.settled)
		tainted = tainted || !restored
	}
	return tainted
}

// spawn prepares the thread and forks and execs the child.
func (l *launch) spawn(w *worker) (pid, pidfd int, tainted bool, err error) {
	tainted = l.taints() || w.armed
	if l.umask != nil {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return 0, 0, tainted, fmt.Errorf("sandbox: unshare(CLONE_FS): %w", err)
		}
		unix.Umask(int(*l.umask))
	}
	if l.nnp && !w.armed {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return 0, 0, tainted, fmt.Errorf("sandbox: no_new_privs: %w", err)
		}
	}
	if l.plan != nil {
		if l.plan.mptcp && !w.armed {
			if err := installMPTCPFilter(); err != nil {
				return 0, 0, tainted, fmt.Errorf("sandbox: seccomp MPTCP filter: %w", err)
			}
		}
		if l.plan.rulesetFD >= 0 {
			// No TSYNC flag: this thread only.
			if err := ll.LandlockRestrictSelf(l.plan.rulesetFD, 0); err != nil {
				return 0, 0, tainted, fmt.Errorf("sandbox: landlock_restrict_self: %w", err)
			}
		}
	}
	markCloexec()

	pidfd = -1
	l.attr.Sys.PidFD = &pidfd
	pid, err = syscall.ForkExec(l.path, l.argv, l.attr)
	if err != nil {
		return 0, 0, tainted, spawnError(l.path, err)
	}
	if pidfd < 0 {
		// Linux < 5.3. Landlock (5.13) implies a newer kernel; without a
		// pidfd the child cannot be waited for safely.
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WALL, nil)
		return 0, 0, tainted, errors.New("sandbox: kernel without pidfd support (need Linux >= 5.4)")
	}
	return pid, pidfd, tainted, nil
}

// settleTraced handles a child started with PTRACE_TRACEME: ForkExec has
// returned, so the execve has succeeded and the child is about to stop on
// (or has stopped on) the SIGTRAP that a traced execve raises, before its
// first user-space instruction. At the first stop the limits are set with
// prlimit; at the exec SIGTRAP stop the child is detached. Any other
// signal that stops it first is passed on. A child that dies meanwhile is
// left unreaped for Process.Wait. Must run on the thread that forked.
func settleTraced(pid, pidfd int, rlimits []Rlimit, cred *syscall.Credential) (restored bool, err error) {
	restored = true
	applied := false
	for {
		var info sigchldInfo
		err := waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return restored, fmt.Errorf("sandbox: waiting for the traced child: %w", err)
		}
		if info.Code != cldTrapped {
			return restored, nil // exited or killed: Wait will report it
		}
		if !applied {
			var err error
			if restored, err = setRlimits(pid, rlimits, cred); err != nil {
				return restored, err
			}
			applied = true
		}
		sig := int(info.Status)
		if sig == int(unix.SIGTRAP) {
			if err := unix.PtraceDetach(pid); err != nil {
				return restored, fmt.Errorf("sandbox: ptrace detach: %w", err)
			}
			return restored, nil
		}
		if err := unix.PtraceCont(pid, sig); err != nil && err != unix.ESRCH {
			return restored, fmt.Errorf("sandbox: ptrace cont: %w", err)
		}
	}
}

// setRlimits sets the limits of the stopped child. prlimit(2) on a
// process of another user needs CAP_SYS_RESOURCE, which a root server
// may lack (containers often drop it); lowering limits is also allowed
// when the caller's real uid and gid are the target's. So on EPERM, and
// when the child runs under a Credential, this thread (which is thrown
// away later and whose effective ids stay the server's, keeping its
// capabilities) takes the child's real uid and gid, retries, and puts its
// ids back. Raising a hard limit above the server's needs
// CAP_SYS_RESOURCE either way.
func setRlimits(pid int, rlimits []Rlimit, cred *syscall.Credential) (restored bool, err error) {
	set := func() (int, error) {
		for i, r := range rlimits {
			lim := unix.Rlimit{Cur: r.Cur, Max: r.Max}
			if err := unix.Prlimit(pid, r.Resource, &lim, nil); err != nil {
				return i, err
			}
		}
		return 0, nil
	}
	restored = true
	var i int
	if cred == nil || hasSysResource() {
		i, err = set()
	} else {
		err = unix.EPERM
	}
	if err == unix.EPERM && cred != nil {
		ruid, rgid := unix.Getuid(), unix.Getgid()
		const keep = ^uintptr(0) // -1: leave unchanged
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(cred.Gid), keep, keep); e == 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(cred.Uid), keep, keep); e == 0 {
				i, err = set()
				_, _, e = unix.RawSyscall(unix.SYS_SETRESUID, uintptr(ruid), keep, keep)
				restored = e == 0
			}
			_, _, e = unix.RawSyscall(unix.SYS_SETRESGID, uintptr(rgid), keep, keep)
			restored = restored && e == 0
		}
	}
	if err != nil {
		r := rlimits[i]
		if err == unix.EPERM {
			return restored, fmt.Errorf("sandbox: setting rlimit %s to %d/%d: %w (raising a hard limit needs CAP_SYS_RESOURCE)",
				RlimitName(r.Resource), r.Cur, r.Max, err)
		}
		return restored, fmt.Errorf("sandbox: setting rlimit %s to %d/%d: %w", RlimitName(r.Resource), r.Cur, r.Max, err)
	}
	return restored, nil
}

// hasSysResource reports whether the server has CAP_SYS_RESOURCE in its
// effective set (probed once).
var hasSysResource = sync.OnceValue(func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return true // try, and fall back on EPERM
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
})

// markCloexec sets close-on-exec on every descriptor of the server from 3
// up, so that no descriptor opened without O_CLOEXEC (inherited by the
// server, or made by raw system calls) reaches a child.
func markCloexec() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	// Linux < 5.11.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// sigSink receives the signals that the server ignored: they are caught
// and dropped instead, which is the same for the server, but unlike an
// ignored signal a caught one is reset to the default action by execve.
var sigSink = make(chan os.Signal, 1)

func unignoreSignals() {
	var ign []os.Signal
	for s := syscall.Signal(1); s < 65; s++ {
		if s != syscall.SIGKILL && s != syscall.SIGSTOP && signal.Ignored(s) {
			ign = append(ign, s)
		}
	}
	if len(ign) > 0 {
		signal.Notify(sigSink, ign...)
	}
	// The Go runtime will not catch some signals (32 and 33, which the C
	// library reserves); an inherited SIG_IGN of those stays, and would
	// pass on to every child. Set them to their default action instead.
	for _, s := range stillIgnored() {
		sa := kernelSigaction{handler: 0} // SIG_DFL
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
	}
}

// kernelSigaction is the kernel's struct sigaction (x86-64 and arm64).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// stillIgnored returns the signals /proc/self/status lists as ignored,
// SIGKILL and SIGSTOP aside.
func stillIgnored() []syscall.Signal {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		hex, ok := strings.CutPrefix(line, "SigIgn:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return nil
		}
		var out []syscall.Signal
		for s := syscall.Signal(1); s <= 64; s++ {
			if mask&(1<<(s-1)) != 0 && s != syscall.SIGKILL && s != syscall.SIGSTOP {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
