package sandbox

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/seccomp"
)

// forkStep names the step of the child's setup that failed.
type forkStep uintptr

const (
	stepNone forkStep = iota
	stepSetsid
	stepRaiseRlimit
	stepNamespaces
	stepNetns
	stepSetgroups
	stepSetgid
	stepSetuid
	stepRlimit
	stepChdir
	stepPdeathsig
	stepNoNewPrivs
	stepSeccomp
	stepLandlock
	stepSignals
	stepStdio
	stepExec
)

var stepNames = [...]string{
	stepNone:        "none",
	stepSetsid:      "setsid",
	stepRaiseRlimit: "raising an rlimit",
	stepNamespaces:  "unshare (IPC namespace)",
	stepNetns:       "setns (network namespace)",
	stepSetgroups:   "setgroups",
	stepSetgid:      "setgid",
	stepSetuid:      "setuid",
	stepRlimit:      "setting an rlimit",
	stepChdir:       "chdir",
	stepPdeathsig:   "parent-death signal",
	stepNoNewPrivs:  "no_new_privs",
	stepSeccomp:     "seccomp filter",
	stepLandlock:    "landlock_restrict_self",
	stepSignals:     "signal dispositions",
	stepStdio:       "standard streams",
	stepExec:        "execve",
}

func (s forkStep) String() string {
	if int(s) < len(stepNames) {
		return stepNames[s]
	}
	return fmt.Sprintf("step %d", uintptr(s))
}

// rlimitArg is one prlimit64(2) call of the child.
type rlimitArg struct {
	resource uintptr
	lim      unix.Rlimit
}

// cloneArgs is the kernel's struct clone_args (clone3(2)).
type cloneArgs struct {
	flags      uint64
	pidFD      uint64
	childTID   uint64
	parentTID  uint64
	exitSignal uint64
	stack      uint64
	stackSize  uint64
	tls        uint64
	setTID     uint64
	setTIDSize uint64
	cgroup     uint64
}

// forkPlan is everything the child does between fork and exec, prepared
// by the parent. The child only reads it, except for failStep and
// failErr.
type forkPlan struct {
	argv0      *byte
	argv, envv []*byte // nil-terminated
	dir        *byte
	stdio      [3]int // descriptors of the parent that become 0, 1, 2

	cgroupFD int // -1: the server's cgroup

	unshare uintptr // namespaces to make (CLONE_NEWIPC), 0 for none
	netnsFD int     // network namespace to join, -1 for the server's
	keyring bool    // join a fresh session keyring

	cred    bool
	uid     uintptr
	gid     uintptr
	ngroups uintptr
	groups  unsafe.Pointer // *uint32, nil when ngroups is 0

	// raise are the limits that raise a hard limit, set while the child
	// still has the server's capabilities; rlimits are all of them, set
	// after the switch to the credential.
	raise, rlimits []rlimitArg

	umask     int // -1: the server's
	ppid      uintptr
	nnp       bool
	rulesetFD int // -1: no Landlock
	// landlockFlags are landlock_restrict_self's flags; denialProbe,
	// when set, is the path ("/dev/null") of the child's deliberate
	// first denial (see Sandbox denials in denials.go), opened from
	// atFDCWD.
	landlockFlags uintptr
	denialProbe   *byte
	atFDCWD       uintptr
	// filters are the seccomp filters, installed last (after Landlock);
	// filterProgs keeps their instructions alive.
	filters     []unix.SockFprog
	filterProgs []seccomp.Program

	// Signal dispositions: the server's ignored signals are set back to
	// the default (Go's own handlers are reset by the runtime), and the
	// mask is emptied.
	resetSignals []uintptr
	sigDefault   kernelSigaction
	emptyMask    uint64

	closeRange bool // close_range(2) exists

	clone3 cloneArgs
	pidfd  int32

	failStep forkStep
	failErr  syscall.Errno
}

// forkError is a failed step of the child's setup.
type forkError struct {
	step  forkStep
	errno syscall.Errno
}

// Error names the step and its errno; spawnError prefixes the program.
func (e *forkError) Error() string {
	return fmt.Sprintf("child setup: %v: %v", e.step, e.errno)
}

// Unwrap returns the errno.
func (e *forkError) Unwrap() error { return e.errno }
