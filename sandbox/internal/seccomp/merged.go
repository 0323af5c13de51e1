package seccomp

import (
	"errors"
	"fmt"
	"slices"

	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// networkCalls are the calls the network filter has rules for.
var networkCalls = []string{"socket", "sendto", "sendmsg", "sendmmsg"}

// ErrNotMergeable is returned by CompileDefaultWithNetwork when the
// decision's rules touch the calls the network filter governs: the two
// filters are then installed one on top of the other.
var ErrNotMergeable = errors.New("seccomp: the profile and the network filter cannot be merged")

// CompileDefaultWithNetwork compiles Docker's profile (with allow and
// deny) and the network filter as one filter, which a child installs at
// about half the cost of the two: its socket rules are the profile's
// minus the IP and packet domains, plus plain TCP (and UDP when udp);
// sendto, sendmsg and sendmmsg are allowed without MSG_FASTOPEN; the
// io_uring calls stay refused. A deny of one of the network filter's
// calls returns ErrNotMergeable.
func CompileDefaultWithNetwork(allow, deny []string, udp bool) (Program, error) {
	for _, n := range deny {
		if slices.Contains(networkCalls, n) {
			return nil, ErrNotMergeable
		}
	}
	if len(Bypasses(allow)) > 0 {
		return nil, fmt.Errorf("seccomp: allowing %v would bypass the TCP rules", Bypasses(allow))
	}
	cfg, err := profiles.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	if err != nil {
		return nil, fmt.Errorf("seccomp: default profile: %w", err)
	}
	domains, err := allowedDomains(cfg)
	if err != nil {
		return nil, err
	}
	// The profile without its rules for the network calls...
	var calls []specs.LinuxSyscall
	for _, c := range cfg.Syscalls {
		c.Names = slices.DeleteFunc(slices.Clone(c.Names), func(n string) bool { return slices.Contains(networkCalls, n) })
		if len(c.Names) > 0 {
			calls = append(calls, c)
		}
	}
	// ... and with the network filter's instead. Every rule allows, but
	// MPTCP's, and no two overlap: the default (EPERM) refuses the rest.
	rule := func(name string, act specs.LinuxSeccompAction, errno uint, args ...specs.LinuxSeccompArg) specs.LinuxSyscall {
		c := specs.LinuxSyscall{Names: []string{name}, Action: act, Args: args}
		if act == specs.ActErrno {
			c.ErrnoRet = &errno
		}
		return c
	}
	eq := func(i uint, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: i, Value: v, Op: specs.OpEqualTo}
	}
	masked := func(i uint, mask, v uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: i, Value: mask, ValueTwo: v, Op: specs.OpMaskedEqual}
	}
	for _, d := range domains {
		if d != unix.AF_INET && d != unix.AF_INET6 && d != unix.AF_PACKET {
			calls = append(calls, rule("socket", specs.ActAllow, 0, eq(0, d)))
		}
	}
	for _, d := range []uint64{unix.AF_INET, unix.AF_INET6} {
		stream := masked(1, 0xf, unix.SOCK_STREAM)
		calls = append(calls,
			rule("socket", specs.ActAllow, 0, eq(0, d), stream, eq(2, 0)),
			rule("socket", specs.ActAllow, 0, eq(0, d), stream, eq(2, unix.IPPROTO_TCP)),
			rule("socket", specs.ActErrno, uint(unix.EPROTONOSUPPORT), eq(0, d), stream, eq(2, unix.IPPROTO_MPTCP)))
		if udp {
			dgram := masked(1, 0xf, unix.SOCK_DGRAM)
			calls = append(calls,
				rule("socket", specs.ActAllow, 0, eq(0, d), dgram, eq(2, 0)),
				rule("socket", specs.ActAllow, 0, eq(0, d), dgram, eq(2, unix.IPPROTO_UDP)))
		}
	}
	noFastOpen := func(i uint) specs.LinuxSeccompArg { return masked(i, unix.MSG_FASTOPEN, 0) }
	calls = append(calls,
		rule("sendto", specs.ActAllow, 0, noFastOpen(3)),
		rule("sendmsg", specs.ActAllow, 0, noFastOpen(2)),
		rule("sendmmsg", specs.ActAllow, 0, noFastOpen(3)))
	merged := *cfg
	merged.Syscalls = calls
	// The decision's allow may not reopen the network calls.
	allow = slices.DeleteFunc(slices.Clone(allow), func(n string) bool { return slices.Contains(networkCalls, n) })
	return compile(&merged, allow, deny)
}

// allowedDomains evaluates the profile's rules for socket(2) on its first
// argument, the only one Docker's profile looks at.
func allowedDomains(cfg *specs.LinuxSeccomp) ([]uint64, error) {
	var out []uint64
	for d := uint64(0); d < 64; d++ {
		for _, c := range cfg.Syscalls {
			if !slices.Contains(c.Names, "socket") || c.Action != specs.ActAllow {
				continue
			}
			ok := true
			for _, a := range c.Args {
				if a.Index != 0 {
					return nil, fmt.Errorf("%w: the profile's socket rules look at argument %d", ErrNotMergeable, a.Index)
				}
				switch a.Op {
				case specs.OpEqualTo:
					ok = ok && d == a.Value
				case specs.OpNotEqual:
					ok = ok && d != a.Value
				case specs.OpLessThan:
					ok = ok && d < a.Value
				case specs.OpLessEqual:
					ok = ok && d <= a.Value
				case specs.OpGreaterThan:
					ok = ok && d > a.Value
				case specs.OpGreaterEqual:
					ok = ok && d >= a.Value
				case specs.OpMaskedEqual:
					ok = ok && d&a.Value == a.ValueTwo
				default:
					return nil, fmt.Errorf("%w: operator %s", ErrNotMergeable, a.Op)
				}
			}
			if ok {
				out = append(out, d)
				break
			}
		}
	}
	return out, nil
}
