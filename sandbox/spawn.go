package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/seccomp"
)

// newForkPlan prepares the child's setup for spec (already validated) in
// the form forkChild reads: C strings, nil-terminated vectors, raw
// limits. plan is the Landlock plan (nil without Landlock), filters the
// seccomp filters to install, cgroupFD the
// child's cgroup (-1 for none), stdio the parent's descriptors that
// become the child's 0, 1 and 2.
func (s *Spawner) newForkPlan(spec *Spec, plan *landlockPlan, filters []seccomp.Program, cgroupFD int, stdio [3]int) (*forkPlan, error) {
	argv0, err := syscall.BytePtrFromString(spec.Path)
	if err != nil {
		return nil, fmt.Errorf("sandbox: path: %w", err)
	}
	argv, err := syscall.SlicePtrFromStrings(spec.Args)
	if err != nil {
		return nil, fmt.Errorf("sandbox: argv: %w", err)
	}
	env := spec.Env
	if env == nil {
		env = []string{}
	}
	envv, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return nil, fmt.Errorf("sandbox: environment: %w", err)
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	dirp, err := syscall.BytePtrFromString(dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: dir: %w", err)
	}
	p := &forkPlan{
		argv0:        argv0,
		argv:         argv,
		envv:         envv,
		dir:          dirp,
		stdio:        stdio,
		cgroupFD:     cgroupFD,
		netnsFD:      -1,
		umask:        -1,
		ppid:         uintptr(s.pid),
		nnp:          spec.NoNewPrivs || spec.Landlock != nil || len(filters) > 0,
		filters:      fprogs(filters),
		filterProgs:  filters,
		rulesetFD:    -1,
		resetSignals: ignoredSignals(s.inheritedIgnored),
		closeRange:   s.closeRange,
	}
	if spec.PrivateIPC {
		p.unshare = unix.CLONE_NEWIPC
	}
	if c := spec.Credential; c != nil {
		p.cred, p.uid, p.gid = true, uintptr(c.UID), uintptr(c.GID)
		p.keyring = true
		if len(c.Groups) > 0 {
			groups := append([]uint32(nil), c.Groups...)
			p.ngroups, p.groups = uintptr(len(groups)), unsafe.Pointer(&groups[0])
		}
	}
	if spec.Umask != nil {
		p.umask = int(*spec.Umask)
	}
	if plan != nil {
		p.rulesetFD = plan.rulesetFD
		if s.denials != nil && plan.rulesetFD >= 0 {
			p.landlockFlags = unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
			p.denialProbe = &devNull[0]
			fdcwd := unix.AT_FDCWD
			p.atFDCWD = uintptr(fdcwd)
		}
	}
	haveNofile := false
	for _, r := range spec.Rlimits {
		arg := rlimitArg{resource: uintptr(r.Resource), lim: unix.Rlimit{Cur: r.Cur, Max: r.Max}}
		p.rlimits = append(p.rlimits, arg)
		if limit, ok := s.hardLimit(r.Resource); ok && r.Max > limit {
			p.raise = append(p.raise, arg)
		}
		haveNofile = haveNofile || r.Resource == unix.RLIMIT_NOFILE
	}
	if !haveNofile {
		if orig := s.startNofile; orig != nil {
			// Go raised the server's soft limit at start-up; the child
			// gets the one the server was started with, as with os/exec.
			p.rlimits = append(p.rlimits, rlimitArg{resource: unix.RLIMIT_NOFILE, lim: *orig})
		}
	}
	if !p.closeRange {
		markCloexec()
	}
	return p, nil
}

// devNull is the path of a child's deliberate first denial.
var devNull = []byte("/dev/null\x00")

func spawnError(path string, err error) error {
	var fe *forkError
	if errors.As(err, &fe) && fe.step != stepExec {
		return fmt.Errorf("sandbox: starting %s: %w", path, err)
	}
	code := 126
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		code = 127
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = errno
	}
	return &SpawnError{Path: path, Code: code, Err: err}
}

// markCloexec sets close-on-exec on every descriptor of the server from 3
// up (kernels without close_range(2) only).
func markCloexec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// kernelSigaction is the kernel's struct sigaction (x86-64 and arm64).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// ignoredSignals returns the signals that the server ignores now, which
// would stay ignored across execve: those ignored through os/signal and
// those the server inherited ignored and the runtime leaves alone (32 and
// 33, which the C library reserves; /proc/self/status, read once).
// SIGKILL and SIGSTOP aside. The runtime itself resets the handlers of the
// signals the server catches.
func ignoredSignals(inherited uint64) []uintptr {
	var out []uintptr
	for s := 1; s <= 64; s++ {
		if s == int(unix.SIGKILL) || s == int(unix.SIGSTOP) {
			continue
		}
		if inherited&(1<<(s-1)) != 0 || signal.Ignored(syscall.Signal(s)) {
			out = append(out, uintptr(s))
		}
	}
	return out
}

func probeNofile() (*unix.Rlimit, error) {
	runtime.LockOSThread() // ptrace requests come from the tracer thread
	defer runtime.UnlockOSThread()
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"sockwarden-nofile-probe"}, &syscall.ProcAttr{
		Env: []string{},
		Sys: &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != unix.EINTR {
				return
			}
		}
	}()
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(pid, &ws, unix.WALL, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if !ws.Stopped() {
		return nil, errors.New("probe did not stop")
	}
	var orig unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &orig); err != nil {
		return nil, err
	}
	return &orig, nil
}
