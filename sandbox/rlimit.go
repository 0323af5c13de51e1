package sandbox

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// RlimitInfinity is the "no limit" value of an [Rlimit] bound
// (RLIM_INFINITY), which a policy writes as "unlimited". It is the one
// spelling of "unlimited" in sockwarden: the policy decoder and the
// audit records use it too.
const RlimitInfinity = ^uint64(0)

// Rlimit is one resource limit of the child, as setrlimit(2) takes it.
type Rlimit struct {
	// Resource is the RLIMIT_* number (unix.RLIMIT_CPU, ...); see
	// [ParseRlimitName] for the names a policy may use.
	Resource int
	// Cur is the soft limit and Max the hard limit; Cur must not exceed
	// Max. [RlimitInfinity] means unlimited. Note that for RLIMIT_CPU a
	// soft limit below the hard one ends a busy child with SIGXCPU, while
	// Cur == Max ends it with SIGKILL.
	Cur, Max uint64
}

var rlimitNames = map[string]int{
	"as":         unix.RLIMIT_AS,
	"core":       unix.RLIMIT_CORE,
	"cpu":        unix.RLIMIT_CPU,
	"data":       unix.RLIMIT_DATA,
	"fsize":      unix.RLIMIT_FSIZE,
	"locks":      unix.RLIMIT_LOCKS,
	"memlock":    unix.RLIMIT_MEMLOCK,
	"msgqueue":   unix.RLIMIT_MSGQUEUE,
	"nice":       unix.RLIMIT_NICE,
	"nofile":     unix.RLIMIT_NOFILE,
	"nproc":      unix.RLIMIT_NPROC,
	"rss":        unix.RLIMIT_RSS,
	"rtprio":     unix.RLIMIT_RTPRIO,
	"rttime":     unix.RLIMIT_RTTIME,
	"sigpending": unix.RLIMIT_SIGPENDING,
	"stack":      unix.RLIMIT_STACK,
}

// rlimNLimits is RLIM_NLIMITS: resources are 0 .. rlimNLimits-1.
const rlimNLimits = 16

// ParseRlimitName returns the RLIMIT_* number for a resource name. It
// accepts the lower-case names of prlimit(1) and /proc/PID/limits'
// conventions ("cpu", "as", "nofile", "nproc", "fsize", "core", "stack",
// "data", "memlock", "locks", "sigpending", "msgqueue", "nice", "rtprio",
// "rttime", "rss"), in any case, with or without an "RLIMIT_" prefix.
func ParseRlimitName(name string) (int, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "rlimit_")
	if r, ok := rlimitNames[n]; ok {
		return r, nil
	}
	return -1, fmt.Errorf("sandbox: unknown rlimit resource %q", name)
}

// RlimitNames returns the lower-case resource names, sorted: the keys a
// decision's "rlimits" object may use.
func RlimitNames() []string {
	names := make([]string, 0, len(rlimitNames))
	for n := range rlimitNames {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// RlimitName returns the lower-case name of an RLIMIT_* number, as
// accepted by [ParseRlimitName], or "rlimit(N)" for an unknown number.
func RlimitName(resource int) string {
	for n, r := range rlimitNames {
		if r == resource {
			return n
		}
	}
	return fmt.Sprintf("rlimit(%d)", resource)
}

func validateRlimits(rl []Rlimit) error {
	var seen [rlimNLimits]bool
	for _, r := range rl {
		if r.Resource < 0 || r.Resource >= rlimNLimits {
			return fmt.Errorf("sandbox: rlimit resource %d out of range", r.Resource)
		}
		if seen[r.Resource] {
			return fmt.Errorf("sandbox: rlimit %s given twice", RlimitName(r.Resource))
		}
		seen[r.Resource] = true
		if r.Cur > r.Max {
			return fmt.Errorf("sandbox: rlimit %s: soft limit %d above hard limit %d", RlimitName(r.Resource), r.Cur, r.Max)
		}
	}
	return nil
}
