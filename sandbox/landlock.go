package sandbox

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Landlock is the Landlock confinement of a child. A non-nil Landlock
// denies by default: the child may use the file system only beneath RO
// and RW, and (unless UnrestrictedTCP) may bind and connect TCP sockets
// only on the listed ports.
//
// Nothing is added implicitly: a dynamically linked program needs its
// loader and libraries (typically /usr, /lib, /lib64, /etc/ld.so.cache)
// in RO, and a program that opens /dev/null needs it in RW. Paths must
// exist when [Spawner.Start] is called; a rule on a directory covers everything
// beneath it, a rule on a file covers that file.
//
// Landlock governs execve(2) and open(2); it is not a boundary against a
// program that maps readable code itself (running ld.so on a file in an
// RW path, interpreters reading scripts, or an executable memfd).
type Landlock struct {
	// RO lists hierarchies the child may read and execute from.
	RO []string
	// RW lists hierarchies the child may read, write, truncate, create and
	// remove files and directories in (and connect to UNIX sockets in,
	// where the kernel controls that). RW does not grant execute (list
	// the path in RO too for that), ioctl on device files, or moving and
	// linking files between directories.
	RW []string
	// ConnectTCP and BindTCP list the TCP ports the child may connect to
	// and bind to (Landlock ABI 4). Empty means none. The restriction
	// comes with the network filter (see [Seccomp]), which closes the
	// ways around Landlock's TCP rules: other IP protocols, TCP Fast Open
	// and io_uring.
	ConnectTCP, BindTCP []uint16
	// UDP lets plain UDP sockets through the network filter when TCP is
	// restricted; Landlock itself has no UDP rules.
	UDP bool
	// UnrestrictedTCP leaves TCP alone (ConnectTCP and BindTCP must then
	// be empty); such a spec works without Landlock ABI 4.
	UnrestrictedTCP bool
	// Scope isolates the child's Landlock domain (ABI 6): it may not
	// connect to abstract UNIX sockets nor send signals outside of it.
	Scope bool
	// BestEffort runs the child with whatever the kernel can enforce
	// instead of failing with an [*UnsupportedError]; what could not be
	// enforced is listed in [Process].Landlock.Downgraded.
	BestEffort bool
}

// LandlockReport tells how a child's Landlock confinement was applied.
type LandlockReport struct {
	// ABI is the kernel's Landlock ABI version (0: no Landlock).
	ABI int
	// Enforced is true when a Landlock ruleset was applied to the child.
	Enforced bool
	// BestEffort repeats [Landlock].BestEffort.
	BestEffort bool
	// Downgraded lists what the spec asked for and the kernel could not
	// enforce (only ever non-empty with BestEffort), e.g.
	// "tcp (needs ABI 4)".
	Downgraded []string
}

// UnsupportedError is returned by [Spawner.Start] when the kernel cannot enforce
// the Landlock confinement of a spec that is not BestEffort.
type UnsupportedError struct {
	// ABI is the kernel's Landlock ABI version.
	ABI int
	// Missing lists what cannot be enforced, as in [LandlockReport].
	Missing []string
}

// Error lists what cannot be enforced.
func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("sandbox: Landlock ABI %d cannot enforce %s (set BestEffort to run with less)",
		e.ABI, strings.Join(e.Missing, ", "))
}

// LandlockABI returns the Landlock ABI version of the running kernel, 0
// when Landlock is unsupported or disabled.
func LandlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// Access rights of the rules.
const (
	accessRO = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir
	accessRW = ll.AccessFSReadFile | ll.AccessFSReadDir | ll.AccessFSWriteFile |
		ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock |
		ll.AccessFSMakeFifo | ll.AccessFSMakeBlock | ll.AccessFSMakeSym |
		ll.AccessFSTruncate | ll.AccessFSResolveUnix
	// accessFile are the rights that apply to a non-directory.
	accessFile = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile |
		ll.AccessFSTruncate | ll.AccessFSIoctlDev
)

// handledFS is the set of file-system rights a kernel of Landlock ABI abi
// can restrict (rights newer than this package are left alone).
func handledFS(abi int) uint64 {
	switch {
	case abi >= 9:
		return 1<<17 - 1
	case abi >= 5:
		return 1<<16 - 1
	case abi >= 3:
		return 1<<15 - 1
	case abi == 2:
		return 1<<14 - 1
	case abi == 1:
		return 1<<13 - 1
	}
	return 0
}

// landlockPlan is a prepared Landlock confinement: a ruleset fd to apply
// in the child, and whether TCP is restricted (which needs the network
// filter).
type landlockPlan struct {
	rulesetFD   int    // -1: nothing to apply; borrowed from the cache
	put         func() // gives rulesetFD back
	restrictTCP bool
	report      LandlockReport
}

func (p *landlockPlan) close() {
	if p != nil && p.rulesetFD >= 0 {
		p.put()
		p.rulesetFD = -1
	}
}

// landlockMissing lists what of l a kernel of Landlock ABI abi cannot
// enforce, as [LandlockReport].Downgraded names it.
func landlockMissing(l *Landlock, abi int) []string {
	restrictTCP := !l.UnrestrictedTCP
	var missing []string
	if abi < 1 {
		missing = append(missing, "landlock (not supported by the kernel)")
	} else if abi < 3 {
		missing = append(missing, "truncate (needs ABI 3)")
	}
	if restrictTCP && abi < 4 {
		missing = append(missing, "tcp (needs ABI 4)")
	}
	if l.Scope && abi < 6 {
		missing = append(missing, "scope (needs ABI 6)")
	}
	return missing
}

// prepareLandlock checks l against the Landlock ABI in use and builds its
// ruleset. The returned plan is nil when l is nil.
func (s *Spawner) prepareLandlock(l *Landlock) (*landlockPlan, error) {
	if l == nil {
		return nil, nil
	}
	if l.UnrestrictedTCP && (len(l.ConnectTCP) > 0 || len(l.BindTCP) > 0) {
		return nil, errors.New("sandbox: Landlock UnrestrictedTCP with TCP port rules")
	}
	abi := s.caps.LandlockABI
	missing := landlockMissing(l, abi)
	if len(missing) > 0 && !l.BestEffort {
		return nil, &UnsupportedError{ABI: abi, Missing: missing}
	}
	plan := &landlockPlan{
		rulesetFD: -1,
		report:    LandlockReport{ABI: abi, BestEffort: l.BestEffort, Downgraded: missing},
	}
	if abi < 1 {
		return plan, nil
	}

	restrictTCP := !l.UnrestrictedTCP && abi >= 4
	plan.restrictTCP = restrictTCP
	key, err := s.rulesetKey(l, abi, restrictTCP)
	if err != nil {
		return nil, err
	}
	fd, put, err := s.rulesets.get(key, func() (int, error) { return buildRuleset(l, abi, restrictTCP) })
	if err != nil {
		return nil, err
	}
	plan.rulesetFD, plan.put = fd, put
	plan.report.Enforced = true
	return plan, nil
}

// buildRuleset creates the ruleset of l for a kernel of ABI abi.
func buildRuleset(l *Landlock, abi int, restrictTCP bool) (int, error) {
	fsMask := handledFS(abi)
	attr := ll.RulesetAttr{HandledAccessFS: fsMask}
	if restrictTCP {
		attr.HandledAccessNet = ll.AccessNetBindTCP | ll.AccessNetConnectTCP
	}
	if l.Scope && abi >= 6 {
		attr.Scoped = ll.ScopeAbstractUnixSocket | ll.ScopeSignal
	}
	fd, err := ll.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return -1, fmt.Errorf("sandbox: landlock_create_ruleset: %w", err)
	}
	for _, r := range []struct {
		paths  []string
		access uint64
	}{{l.RO, accessRO}, {l.RW, accessRW}} {
		for _, path := range r.paths {
			if err := addPathRule(fd, path, r.access&fsMask); err != nil {
				unix.Close(fd)
				return -1, err
			}
		}
	}
	if restrictTCP {
		for _, r := range []struct {
			ports  []uint16
			access uint64
		}{{l.ConnectTCP, ll.AccessNetConnectTCP}, {l.BindTCP, ll.AccessNetBindTCP}} {
			for _, port := range r.ports {
				na := ll.NetPortAttr{AllowedAccess: r.access, Port: uint64(port)}
				if err := ll.LandlockAddNetPortRule(fd, &na, 0); err != nil {
					unix.Close(fd)
					return -1, fmt.Errorf("sandbox: landlock rule for TCP port %d: %w", port, err)
				}
			}
		}
	}
	return fd, nil
}

// rulesetKey identifies the ruleset of l: its options and, for every
// path, the file it names now (device and inode). A ruleset refers to
// the files its paths named when it was built, so a path that now names
// another file gives another key.
func (s *Spawner) rulesetKey(l *Landlock, abi int, restrictTCP bool) (string, error) {
	b := make([]byte, 0, 256)
	b = append(b, "abi="...)
	b = strconv.AppendInt(b, int64(abi), 10)
	b = append(b, " tcp="...)
	b = strconv.AppendBool(b, restrictTCP)
	b = append(b, " scope="...)
	b = strconv.AppendBool(b, l.Scope)
	for _, r := range []struct {
		tag   string
		paths []string
	}{{"ro", l.RO}, {"rw", l.RW}} {
		for _, path := range r.paths {
			if !strings.HasPrefix(path, "/") {
				return "", fmt.Errorf("sandbox: landlock path %q is not absolute", path)
			}
			id := s.pathID(path)
			if id.err != nil {
				return "", fmt.Errorf("sandbox: landlock path %q: %w", path, id.err)
			}
			b = append(b, ' ')
			b = append(b, r.tag...)
			b = append(b, ':')
			b = strconv.AppendUint(b, id.dev, 10)
			b = append(b, ':')
			b = strconv.AppendUint(b, id.ino, 10)
		}
	}
	if restrictTCP {
		b = append(b, " connect:"...)
		for _, p := range l.ConnectTCP {
			b = strconv.AppendUint(append(b, ','), uint64(p), 10)
		}
		b = append(b, " bind:"...)
		for _, p := range l.BindTCP {
			b = strconv.AppendUint(append(b, ','), uint64(p), 10)
		}
	}
	return string(b), nil
}

// rulesetCache keeps recently built rulesets by key. A ruleset can be
// enforced any number of times, each landlock_restrict_self(2) making a
// new domain, so reusing one shares nothing between children.
//
// A child's fork plan borrows the cached descriptor itself (no dup(2)):
// a borrowed entry evicted meanwhile is closed when its last borrower
// gives it back.
type rulesetCache struct {
	mu      sync.Mutex
	entries map[string]*rulesetEntry
	clock   uint64
}

type rulesetEntry struct {
	fd      int
	used    uint64
	refs    int  // borrowers
	evicted bool // out of entries: closed once refs is 0
}

// rulesetCacheSize bounds the descriptors the cache holds (plus those
// evicted while borrowed).
const rulesetCacheSize = 32

// get returns the ruleset descriptor for key, building it with build on
// a miss, and the function that gives it back (the caller must not
// close the descriptor, and must call put once the child has forked).
func (c *rulesetCache) get(key string, build func() (int, error)) (fd int, put func(), err error) {
	c.mu.Lock()
	c.clock++
	if e, ok := c.entries[key]; ok {
		e.used = c.clock
		e.refs++
		c.mu.Unlock()
		return e.fd, func() { c.put(e) }, nil
	}
	c.mu.Unlock()
	fd, err = build()
	if err != nil {
		return -1, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok { // built concurrently
		unix.Close(fd)
		e.refs++
		return e.fd, func() { c.put(e) }, nil
	}
	if len(c.entries) >= rulesetCacheSize {
		var oldK string
		var old *rulesetEntry
		for k, e := range c.entries {
			if old == nil || e.used < old.used {
				oldK, old = k, e
			}
		}
		delete(c.entries, oldK)
		old.evicted = true
		if old.refs == 0 {
			unix.Close(old.fd)
		}
	}
	e := &rulesetEntry{fd: fd, used: c.clock, refs: 1}
	if c.entries == nil {
		c.entries = map[string]*rulesetEntry{}
	}
	c.entries[key] = e
	return fd, func() { c.put(e) }, nil
}

// put gives back a borrowed entry.
func (c *rulesetCache) put(e *rulesetEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		unix.Close(e.fd)
	}
}

// close closes the cached rulesets (a borrowed one once given back).
func (c *rulesetCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		delete(c.entries, k)
		e.evicted = true
		if e.refs == 0 {
			unix.Close(e.fd)
		}
	}
}

func addPathRule(rulesetFD int, path string, access uint64) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("sandbox: landlock path %q is not absolute", path)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox: landlock path %q: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("sandbox: landlock path %q: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		access &= accessFile
	}
	if access == 0 {
		return nil
	}
	pb := ll.PathBeneathAttr{AllowedAccess: access, ParentFd: fd}
	if err := ll.LandlockAddPathBeneathRule(rulesetFD, &pb, 0); err != nil {
		return fmt.Errorf("sandbox: landlock rule for %q: %w", path, err)
	}
	return nil
}
