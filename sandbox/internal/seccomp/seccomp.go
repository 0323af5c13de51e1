// Package seccomp builds the system call filters of sandboxed children,
// as classic BPF programs the child installs with seccomp(2) just before
// its exec.
//
// Two filters exist, each compiled by libseccomp (the library runc and
// containerd use), and a child may get both: the kernel runs every filter
// installed and the most restrictive answer wins.
//
//   - The profile: Docker's default seccomp profile
//     (github.com/moby/profiles/seccomp), evaluated as for a container
//     without capabilities, with the decision's extra allowed and denied
//     calls. It refuses, among others, namespace creation and entry
//     (unshare, setns, clone with CLONE_NEW* flags), the mount family,
//     bpf, perf_event_open, userfaultfd, the keyring calls, kexec and
//     module loading, the io_uring calls and personality changes that turn
//     off ASLR. A refused call fails with EPERM.
//   - The network filter, for a child whose TCP connect and bind ports
//     Landlock restricts: it closes the ways around Landlock's TCP rules
//     (ABI 4 to 7). It refuses IP sockets that are not plain TCP (UDP
//     unless allowed, raw, SCTP, MPTCP and any other protocol), packet
//     sockets, TCP Fast Open's MSG_FASTOPEN (whose implicit connect never
//     reaches Landlock's hook) and the io_uring calls (whose
//     IORING_OP_SOCKET no filter sees).
//
// Both are built for this machine's architecture only: 32-bit programs
// (whose socketcall(2) no filter could read) get EPERM for every call.
package seccomp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"unsafe"

	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Profile names.
const (
	// Default is Docker's default profile.
	Default = "default"
	// None is no profile: only the decision's denied calls are refused.
	None = "none"
)

// Program is a compiled filter, in the form seccomp(2) takes.
type Program []unix.SockFilter

// Fprog returns p as the kernel's struct sock_fprog. p must not be empty
// and must stay alive while the result is in use.
func (p Program) Fprog() unix.SockFprog {
	return unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
}

// ioUring are the io_uring calls: an IORING_OP_SOCKET or
// IORING_OP_CONNECT request makes its system call inside the kernel,
// where no seccomp filter sees it.
var ioUring = []string{"io_uring_setup", "io_uring_enter", "io_uring_register"}

// Known reports whether name is a system call libseccomp knows on this
// machine's architecture.
func Known(name string) bool {
	_, err := libseccomp.GetSyscallFromName(name)
	return err == nil
}

// Check returns an error naming the entries of names that are not system
// calls of this architecture.
func Check(names []string) error {
	var bad []string
	for _, n := range names {
		if !Known(n) {
			bad = append(bad, n)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unknown system call %s", strings.Join(bad, ", "))
	}
	return nil
}

// Bypasses reports which of the allowed calls would let a child around
// Landlock's TCP rules (so cannot be allowed while they apply).
func Bypasses(allow []string) []string {
	var out []string
	for _, n := range allow {
		if slices.Contains(ioUring, n) {
			out = append(out, n)
		}
	}
	return out
}

// defaultProfile is Docker's profile as it is, compiled once per
// process: it depends only on this machine (architecture, kernel, libseccomp).
var defaultProfile = sync.OnceValues(func() (Program, error) { return compileProfile(Default, nil, nil) })

// CompileProfile compiles the profile named profile (Default or None)
// with the calls in allow allowed and those in deny refused with EPERM,
// whatever the profile says of them. It returns nil when there is
// nothing to filter (None without deny). Docker's profile takes tens of
// milliseconds to compile; without allow and deny it is compiled once.
func CompileProfile(profile string, allow, deny []string) (Program, error) {
	if profile == Default && len(allow) == 0 && len(deny) == 0 {
		return defaultProfile()
	}
	return compileProfile(profile, allow, deny)
}

func compileProfile(profile string, allow, deny []string) (Program, error) {
	switch profile {
	case None:
		if len(allow) > 0 {
			return nil, errors.New("seccomp: allow needs a profile (none refuses nothing)")
		}
		if len(deny) == 0 {
			return nil, nil
		}
		return compile(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow}, nil, deny)
	case Default:
		cfg, err := profiles.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
		if err != nil {
			return nil, fmt.Errorf("seccomp: default profile: %w", err)
		}
		return compile(cfg, allow, deny)
	default:
		return nil, fmt.Errorf("seccomp: unknown profile %q (known: %s, %s)", profile, Default, None)
	}
}

// CompileNetwork compiles the network filter; udp lets plain UDP sockets
// through.
func CompileNetwork(udp bool) (Program, error) {
	f, err := newFilter(libseccomp.ActAllow)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	eperm := libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	eprotonosupport := libseccomp.ActErrno.SetReturnCode(int16(unix.EPROTONOSUPPORT))
	add := func(name string, act libseccomp.ScmpAction, conds ...libseccomp.ScmpCondition) error {
		nr, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			return nil // not a call of this architecture
		}
		if len(conds) == 0 {
			err = f.AddRule(nr, act)
		} else {
			err = f.AddRuleConditional(nr, act, conds)
		}
		if err != nil {
			return fmt.Errorf("seccomp: network filter: %s: %w", name, err)
		}
		return nil
	}
	var condErr error
	cond := func(arg uint, op libseccomp.ScmpCompareOp, v ...uint64) libseccomp.ScmpCondition {
		c, err := libseccomp.MakeCondition(arg, op, v...)
		if err != nil && condErr == nil {
			condErr = fmt.Errorf("seccomp: network filter: %w", err)
		}
		return c
	}
	// Packet sockets first: libseccomp refuses (EEXIST) a rule on the
	// domain alone once rules with more arguments exist for socket.
	errs := []error{add("socket", eperm, cond(0, libseccomp.CompareEqual, unix.AF_PACKET))}
	for _, domain := range []uint64{unix.AF_INET, unix.AF_INET6} {
		isDomain := cond(0, libseccomp.CompareEqual, domain)
		// The type's low bits (SOCK_NONBLOCK and SOCK_CLOEXEC are higher).
		for typ := uint64(0); typ < 16; typ++ {
			if typ == unix.SOCK_STREAM || (udp && typ == unix.SOCK_DGRAM) {
				continue
			}
			errs = append(errs, add("socket", eperm, isDomain, cond(1, libseccomp.CompareMaskedEqual, 0xf, typ)))
		}
		stream := cond(1, libseccomp.CompareMaskedEqual, 0xf, unix.SOCK_STREAM)
		// Plain TCP is protocol 0 or IPPROTO_TCP (6). MPTCP (262) gets
		// the answer of a kernel without it, which programs fall back
		// from; every other protocol EPERM.
		for proto := uint64(1); proto < unix.IPPROTO_TCP; proto++ {
			errs = append(errs, add("socket", eperm, isDomain, stream, cond(2, libseccomp.CompareEqual, proto)))
		}
		errs = append(errs, add("socket", eprotonosupport, isDomain, stream, cond(2, libseccomp.CompareEqual, unix.IPPROTO_MPTCP)))
		errs = append(errs, add("socket", eperm, isDomain, stream, cond(2, libseccomp.CompareGreater, unix.IPPROTO_TCP)))
		if udp {
			dgram := cond(1, libseccomp.CompareMaskedEqual, 0xf, unix.SOCK_DGRAM)
			for proto := uint64(1); proto < unix.IPPROTO_UDP; proto++ {
				errs = append(errs, add("socket", eperm, isDomain, dgram, cond(2, libseccomp.CompareEqual, proto)))
			}
			errs = append(errs, add("socket", eperm, isDomain, dgram, cond(2, libseccomp.CompareGreater, unix.IPPROTO_UDP)))
		}
	}
	// TCP Fast Open: the flags argument of sendto (4th), sendmsg (3rd)
	// and sendmmsg (4th).
	fastopen := uint64(unix.MSG_FASTOPEN)
	errs = append(errs,
		add("sendto", eperm, cond(3, libseccomp.CompareMaskedEqual, fastopen, fastopen)),
		add("sendmsg", eperm, cond(2, libseccomp.CompareMaskedEqual, fastopen, fastopen)),
		add("sendmmsg", eperm, cond(3, libseccomp.CompareMaskedEqual, fastopen, fastopen)))
	for _, n := range ioUring {
		errs = append(errs, add(n, eperm))
	}
	if err := errors.Join(append(errs, condErr)...); err != nil {
		return nil, err
	}
	return export(f)
}

// newFilter makes a filter for this machine's architecture only: a
// system call of another ABI (i386 or x32 on amd64, arm on arm64) fails
// with EPERM, so 32-bit programs cannot run under a filter. The filters
// are installed once per child, and the kernel's cost of installing one
// grows with its size: a filter for three ABIs is about three times as
// big (1051 against 362 instructions for Docker's profile on amd64), and
// took 1.5 ms against 0.4 ms per child here.
func newFilter(def libseccomp.ScmpAction) (*libseccomp.ScmpFilter, error) {
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	// The child sets no_new_privs itself; the filter refuses with an
	// errno, never a kill. A binary tree of the system call numbers
	// rather than a list: the kernel runs the filter for every system
	// call number when it is installed (to cache the calls it always
	// allows), and that run is much of the cost of installing it.
	for _, err := range []error{
		f.SetNoNewPrivsBit(false),
		f.SetBadArchAction(libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM))),
		f.SetOptimize(2),
	} {
		if err != nil {
			f.Release()
			return nil, fmt.Errorf("seccomp: %w", err)
		}
	}
	return f, nil
}

// compile turns an OCI seccomp configuration into a filter, the way
// runc's libcontainer/seccomp does, with allow and deny taking
// precedence over the configuration's rules for those calls.
func compile(cfg *specs.LinuxSeccomp, allow, deny []string) (Program, error) {
	def, err := action(cfg.DefaultAction, cfg.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	f, err := newFilter(def)
	if err != nil {
		return nil, err
	}
	defer f.Release()
	override := func(name string) bool { return slices.Contains(allow, name) || slices.Contains(deny, name) }
	for _, call := range cfg.Syscalls {
		act, err := action(call.Action, call.ErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue
		}
		conds := make([]libseccomp.ScmpCondition, 0, len(call.Args))
		perArg := map[uint]int{}
		for _, a := range call.Args {
			c, err := condition(a)
			if err != nil {
				return nil, err
			}
			conds = append(conds, c)
			perArg[a.Index]++
		}
		// libseccomp takes one comparison per argument in a rule; like
		// runc, more than one on an argument become separate rules.
		multi := false
		for _, n := range perArg {
			multi = multi || n > 1
		}
		for _, name := range call.Names {
			if override(name) {
				continue
			}
			nr, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue // newer than this libseccomp or not of this architecture
			}
			switch {
			case len(conds) == 0:
				err = f.AddRule(nr, act)
			case multi:
				for _, c := range conds {
					if err = f.AddRuleConditional(nr, act, []libseccomp.ScmpCondition{c}); err != nil {
						break
					}
				}
			default:
				err = f.AddRuleConditional(nr, act, conds)
			}
			if err != nil {
				return nil, fmt.Errorf("seccomp: rule for %s: %w", name, err)
			}
		}
	}
	eperm := libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	for _, list := range []struct {
		names []string
		act   libseccomp.ScmpAction
	}{{allow, libseccomp.ActAllow}, {deny, eperm}} {
		for _, name := range list.names {
			nr, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				return nil, fmt.Errorf("seccomp: unknown system call %q", name)
			}
			if list.act == def {
				continue // the profile's default already does it
			}
			if err := f.AddRule(nr, list.act); err != nil {
				return nil, fmt.Errorf("seccomp: rule for %s: %w", name, err)
			}
		}
	}
	return export(f)
}

func action(a specs.LinuxSeccompAction, errno *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActErrno:
		code := int16(unix.EPERM)
		if errno != nil {
			code = int16(*errno)
		}
		return libseccomp.ActErrno.SetReturnCode(code), nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("seccomp: action %s is not supported", a)
}

func condition(a specs.LinuxSeccompArg) (libseccomp.ScmpCondition, error) {
	ops := map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
		specs.OpNotEqual:     libseccomp.CompareNotEqual,
		specs.OpLessThan:     libseccomp.CompareLess,
		specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
		specs.OpEqualTo:      libseccomp.CompareEqual,
		specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
		specs.OpGreaterThan:  libseccomp.CompareGreater,
		specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
	}
	op, ok := ops[a.Op]
	if !ok {
		return libseccomp.ScmpCondition{}, fmt.Errorf("seccomp: operator %s is not supported", a.Op)
	}
	if op == libseccomp.CompareMaskedEqual {
		return libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
	}
	return libseccomp.MakeCondition(a.Index, op, a.Value)
}

// export returns f's BPF program (libseccomp writes it to a descriptor).
func export(f *libseccomp.ScmpFilter) (Program, error) {
	fd, err := unix.MemfdCreate("seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	file := os.NewFile(uintptr(fd), "seccomp")
	defer file.Close()
	if err := f.ExportBPF(file); err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	raw, err := io.ReadAll(io.NewSectionReader(file, 0, 1<<24))
	if err != nil {
		return nil, fmt.Errorf("seccomp: export: %w", err)
	}
	const insn = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(raw) == 0 || len(raw)%insn != 0 || len(raw)/insn > 4096 {
		return nil, fmt.Errorf("seccomp: export: %d bytes is not a BPF program", len(raw))
	}
	prog := make(Program, len(raw)/insn)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(raw)), raw)
	return prog, nil
}
