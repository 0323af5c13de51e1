package sandbox

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/seccomp"
)

// Seccomp profile names.
const (
	// SeccompDefault is Docker's default seccomp profile, as for a
	// container without capabilities: it refuses namespace creation and
	// entry, the mount family, bpf, perf_event_open, userfaultfd, the
	// keyring calls, kexec and module loading, the io_uring calls and
	// personality changes that turn off ASLR, among others.
	SeccompDefault = seccomp.Default
	// SeccompNone applies no profile (only [Seccomp].Deny).
	SeccompNone = seccomp.None
)

// Seccomp is the system call filter of a child. A refused call fails with
// EPERM; nothing is killed. The filter needs no_new_privs, which Start
// then sets.
//
// Apart from it, a child whose Landlock rules restrict TCP always gets the
// network filter: it refuses IP sockets that are not plain TCP (UDP unless
// [Landlock].UDP), packet sockets, TCP Fast Open's MSG_FASTOPEN, the
// io_uring calls and the 32-bit socketcall(2), the ways around Landlock's
// TCP rules. An MPTCP socket fails with EPROTONOSUPPORT, as on a kernel
// without MPTCP, so that programs fall back to TCP.
type Seccomp struct {
	// Profile is SeccompDefault or SeccompNone.
	Profile string
	// Allow are system calls allowed whatever the profile says.
	Allow []string
	// Deny are system calls refused whatever the profile says.
	Deny []string
}

// SeccompReport says which filters a child got.
type SeccompReport struct {
	// Profile is the profile applied ("" without a Seccomp spec).
	Profile string
	// Allow and Deny repeat the spec's.
	Allow, Deny []string
	// Network is true when the network filter was applied; UDP when it
	// let UDP through.
	Network, UDP bool
}

// filterCache holds the compiled filters of a Spawner by rule set:
// compiling Docker's profile takes tens of milliseconds.
type filterCache struct {
	mu    sync.Mutex
	progs map[string]*filterEntry
}

type filterEntry struct {
	once sync.Once
	prog seccomp.Program
	err  error
}

func (c *filterCache) get(key string, build func() (seccomp.Program, error)) (seccomp.Program, error) {
	c.mu.Lock()
	if c.progs == nil {
		c.progs = map[string]*filterEntry{}
	}
	e := c.progs[key]
	if e == nil {
		e = &filterEntry{}
		c.progs[key] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.prog, e.err = build() })
	return e.prog, e.err
}

// CheckSeccomp reports what is wrong with s for a child whose TCP is
// restricted or not: an unknown profile or system call, or an allowed call
// that would bypass the TCP rules.
func CheckSeccomp(s *Seccomp, restrictTCP bool) error {
	if s == nil {
		return nil
	}
	if s.Profile != SeccompDefault && s.Profile != SeccompNone {
		return fmt.Errorf("seccomp profile %q is not %q or %q", s.Profile, SeccompDefault, SeccompNone)
	}
	if s.Profile == SeccompNone && len(s.Allow) > 0 {
		return errors.New(`seccomp allow needs a profile: "none" refuses nothing`)
	}
	if err := seccomp.Check(slices.Concat(s.Allow, s.Deny)); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	if b := seccomp.Bypasses(s.Allow); restrictTCP && len(b) > 0 {
		return fmt.Errorf("seccomp allows %s, which would bypass the TCP rules", strings.Join(b, ", "))
	}
	return nil
}

// prepareFilters compiles (or takes from the cache) the filters of a child
// with spec s, whose TCP Landlock restricts or not.
func (sp *Spawner) prepareFilters(s *Seccomp, restrictTCP, udp bool) ([]seccomp.Program, SeccompReport, error) {
	var progs []seccomp.Program
	var rep SeccompReport
	if err := CheckSeccomp(s, restrictTCP); err != nil {
		return nil, rep, fmt.Errorf("sandbox: %w", err)
	}
	if s != nil && s.Profile == SeccompDefault && restrictTCP && !sp.noNetworkFilter {
		// Both as one filter, which costs a child about half as much to
		// install as two; not when the decision's deny touches the
		// network filter's calls.
		key := fmt.Sprintf("merged\x00%v\x00%s\x00%s", udp, strings.Join(s.Allow, ","), strings.Join(s.Deny, ","))
		prog, err := sp.filters.get(key, func() (seccomp.Program, error) {
			return seccomp.CompileDefaultWithNetwork(s.Allow, s.Deny, udp)
		})
		switch {
		case err == nil:
			rep = SeccompReport{Profile: s.Profile, Allow: s.Allow, Deny: s.Deny, Network: true, UDP: udp}
			return []seccomp.Program{prog}, rep, nil
		case !errors.Is(err, seccomp.ErrNotMergeable):
			return nil, rep, fmt.Errorf("sandbox: %w", err)
		}
	}
	if s != nil {
		rep.Profile, rep.Allow, rep.Deny = s.Profile, s.Allow, s.Deny
		key := s.Profile + "\x00" + strings.Join(s.Allow, ",") + "\x00" + strings.Join(s.Deny, ",")
		prog, err := sp.filters.get(key, func() (seccomp.Program, error) {
			return seccomp.CompileProfile(s.Profile, s.Allow, s.Deny)
		})
		if err != nil {
			return nil, rep, fmt.Errorf("sandbox: %w", err)
		}
		if len(prog) > 0 {
			progs = append(progs, prog)
		}
	}
	if restrictTCP && !sp.noNetworkFilter {
		key := "network"
		if udp {
			key += "+udp"
		}
		prog, err := sp.filters.get(key, func() (seccomp.Program, error) { return seccomp.CompileNetwork(udp) })
		if err != nil {
			return nil, rep, fmt.Errorf("sandbox: %w", err)
		}
		progs = append(progs, prog)
		rep.Network, rep.UDP = true, udp
	}
	return progs, rep, nil
}

// CompileFilters compiles the filters most children get (the default
// profile and the network filters) ahead of the first request, and
// reports a host where they cannot be built.
func (sp *Spawner) CompileFilters() error {
	if _, _, err := sp.prepareFilters(&Seccomp{Profile: SeccompDefault}, true, false); err != nil {
		return err
	}
	_, _, err := sp.prepareFilters(nil, true, true)
	return err
}

// fprogs returns progs as seccomp(2) takes them.
func fprogs(progs []seccomp.Program) []unix.SockFprog {
	out := make([]unix.SockFprog, len(progs))
	for i, p := range progs {
		out[i] = p.Fprog()
	}
	return out
}
