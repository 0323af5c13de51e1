package sandbox

import (
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/ttlcache"
	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
)

// Options configure a [Spawner].
type Options struct {
	// Cgroups configure the per-request cgroups.
	Cgroups CgroupOptions
	// LandlockABI, when above 0, caps the Landlock ABI the Spawner uses
	// below the kernel's: a fleet of mixed kernels can be held to the
	// same rules, and tests can mimic an older kernel. 0 uses the
	// kernel's; a negative value uses none, as on a kernel without
	// Landlock.
	LandlockABI int
	// DynamicUIDs is the range of uids DynamicUser specs take theirs
	// from; the zero range turns dynamic uids off. New refuses a range
	// that /etc/passwd uses.
	DynamicUIDs UIDRange
	// TmpDir is the parent of the private temporary directories of
	// TmpDir specs ([DefaultTmpDir] when empty; "-" for none).
	TmpDir string
	// Denials, when set, reports each Landlock-confined child's
	// denials ([Process.Denials]); it needs Landlock ABI 7.
	Denials *DenialWatcher
}

// A Spawner starts sandboxed children ([Spawner.Start]). It holds what
// the children of one server share: the per-request cgroup setup and its
// pool, the Landlock rulesets built so far, and the facts about the host
// probed once by [New]. Several Spawners may live in one process, each
// with its own cgroup parent.
type Spawner struct {
	caps    Capabilities
	cgroups *cgroup.Manager
	pid     int // the server's, which the children's parent-death check compares with

	rulesets rulesetCache
	// pathIDs caches the identity of Landlock paths for a second: a
	// ruleset is keyed by the files its paths named when it was built,
	// so that a path replaced by another file gets a new ruleset, at
	// most a second later. Until then the children get the ruleset of
	// the file the path named a moment ago, which grants nothing on the
	// new one. A path that does not exist is cached as such.
	pathIDs *ttlcache.Cache[string, pathID]
	// hardLimits caches the server's own hard rlimits for a second:
	// every spec with rlimits compares its limits with them (two
	// getrlimit calls per limit per request otherwise).
	hardLimits *ttlcache.Cache[int, hardLimit]

	// Probed by New.
	sysResource      bool         // CAP_SYS_RESOURCE in the effective set
	closeRange       bool         // close_range(2) with CLOSE_RANGE_CLOEXEC
	startNofile      *unix.Rlimit // the soft RLIMIT_NOFILE the process started with, when Go raised it
	inheritedIgnored uint64       // SigIgn of /proc/self/status

	filters filterCache // compiled seccomp filters
	netns   emptyNetns  // for NoNetwork children
	uids    *uidPool    // nil: no dynamic uids
	tmp     tmpDirs
	denials *DenialWatcher // nil: denials are not reported

	noNetworkFilter bool // tests: show the gaps the network filter closes
}

func (o Options) tmpDir() string {
	switch o.TmpDir {
	case "":
		return DefaultTmpDir
	case "-":
		return ""
	}
	return o.TmpDir
}

// landlockABI is the Landlock ABI a Spawner made with o uses.
func (o Options) landlockABI() int {
	abi := LandlockABI()
	switch {
	case o.LandlockABI < 0:
		return 0
	case o.LandlockABI > 0 && o.LandlockABI < abi:
		return o.LandlockABI
	}
	return abi
}

// Capabilities is what containment a [Spawner] can give its children on
// this host.
type Capabilities struct {
	// LandlockABI is the Landlock ABI in use, 0 without Landlock.
	LandlockABI int
	// Cgroups reports the per-request cgroups.
	Cgroups CgroupReport
	// SetID is true when children can run as other users and groups
	// than the server's (it is root, or has CAP_SETUID and CAP_SETGID).
	SetID bool
	// Namespaces is true when children can get an IPC namespace of their
	// own and the empty network namespace (CAP_SYS_ADMIN).
	Namespaces bool
	// DynamicUIDs is the range of dynamic uids (zero: none, because none
	// was configured or the server cannot switch users); DynamicUIDsHeld
	// counts those of its uids that processes were running as when the
	// Spawner was made, kept out of use until they are gone.
	DynamicUIDs     UIDRange
	DynamicUIDsHeld int
	// TmpDir is the parent of the private temporary directories, ""
	// when there are none (TmpDirReason says why).
	TmpDir, TmpDirReason string
	// Denials is true when each Landlock-confined child's denials are
	// reported ([Options].Denials and Landlock ABI 7).
	Denials bool
}

// pathIDTTL bounds how stale the Spawner's view of a Landlock path is.
const pathIDTTL = time.Second

// New probes the host, sets up the per-request cgroups as o says (which
// may create the parent cgroup, enable controllers, move the process into
// a leaf cgroup to do so, and remove the request cgroups that dead
// servers left under the parent; see the package documentation) and
// returns a Spawner. Nothing of the sort happens later, on a Start.
//
// The error reports an unusable explicit cgroup parent; problems with the
// defaults only show in [Spawner.Capabilities].
func New(o Options) (*Spawner, error) {
	s := &Spawner{
		pid:              os.Getpid(),
		rulesets:         rulesetCache{entries: map[string]*rulesetEntry{}},
		pathIDs:          ttlcache.New[string, pathID](pathIDTTL, 1024),
		hardLimits:       ttlcache.New[int, hardLimit](time.Second, 64),
		sysResource:      hasSysResource(),
		closeRange:       haveCloseRange(),
		startNofile:      probeStartNofile(),
		inheritedIgnored: readSigIgn(),
	}
	s.caps.LandlockABI = o.landlockABI()
	s.caps.SetID = canSetID()
	s.caps.Namespaces = hasSysAdmin()
	if o.Denials != nil && s.caps.LandlockABI >= 7 {
		s.denials = o.Denials
		s.caps.Denials = true
	}
	if o.DynamicUIDs.First != 0 && s.caps.SetID {
		pool, held, err := newUIDPool(o.DynamicUIDs, UIDLockDir)
		if err != nil {
			return nil, err
		}
		s.uids = pool
		s.caps.DynamicUIDs, s.caps.DynamicUIDsHeld = o.DynamicUIDs, len(held)
	}
	s.tmp = setupTmpDirs(o.tmpDir())
	s.caps.TmpDir = s.tmp.parent
	if s.tmp.err != nil {
		s.caps.TmpDirReason = s.tmp.err.Error()
	}
	cg, err := cgroup.Setup(o.Cgroups, false)
	s.cgroups = cg
	s.caps.Cgroups = cg.Report()
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Probe reports what containment a Spawner made by New(o) would give its
// children, without changing anything on the host: no cgroup is made, no
// controller enabled, no process moved (`sockwarden check` uses it). A
// relative cgroup parent is taken relative to the calling process's own
// cgroup.
func Probe(o Options) Capabilities {
	c := Capabilities{LandlockABI: o.landlockABI(), SetID: canSetID(), Namespaces: hasSysAdmin()}
	if c.SetID {
		c.DynamicUIDs = o.DynamicUIDs
	}
	c.TmpDir = o.tmpDir()
	cg, _ := cgroup.Setup(o.Cgroups, true)
	c.Cgroups = cg.Report()
	return c
}

// Capabilities reports what containment s gives its children.
func (s *Spawner) Capabilities() Capabilities {
	c := s.caps
	c.Cgroups = c.Cgroups.Clone()
	return c
}

// Close removes the idle request cgroups kept for reuse and closes the
// cached Landlock rulesets. Call it once every child was waited for (the
// cgroup of a child still running is removed when it is waited for). A
// Start after Close works, and makes new cgroups again.
func (s *Spawner) Close() error {
	s.cgroups.Close()
	s.rulesets.close()
	s.netns.close()
	return nil
}

// Existing returns the paths that exist, in order, through the same
// cache as the identities of Landlock rulesets: a policy written for many
// hosts lists some that a given host lacks (/lib64 on arm64), and
// Landlock can only grant access to what exists. Dropping a path only
// ever takes access away.
func (s *Spawner) Existing(paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if s.pathID(p).err == nil {
			out = append(out, p)
		}
	}
	return out
}

// pathID is the identity of the file a path names (device and inode), or
// why it has none.
type pathID struct {
	dev, ino uint64
	err      error
}

func (s *Spawner) pathID(path string) pathID {
	return s.pathIDs.Get(path, func() pathID {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return pathID{err: err}
		}
		return pathID{dev: st.Dev, ino: st.Ino}
	})
}

// Check returns the error [Spawner.Start] would return for spec because
// this host cannot give what it asks for: an [*UnsupportedError] for its
// Landlock rules, a [*CgroupUnsupportedError] for its cgroup. It does not
// look at the program or the credentials.
func (c Capabilities) Check(spec *Spec) error {
	if l := spec.Landlock; l != nil {
		if missing := landlockMissing(l, c.LandlockABI); len(missing) > 0 && !l.BestEffort {
			return &UnsupportedError{ABI: c.LandlockABI, Missing: missing}
		}
	}
	if err := spec.Cgroup.Validate(); err != nil {
		return err
	}
	return c.Cgroups.Check(spec.Cgroup)
}

// canSetID reports whether the process may change a child's uid, gid and
// supplementary groups: CAP_SETUID and CAP_SETGID in its effective set.
func canSetID() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SETUID) && has(unix.CAP_SETGID)
}

// hasSysResource reports whether the process has CAP_SYS_RESOURCE in its
// effective set.
func hasSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return true // try, and fail with EPERM if not
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}

// haveCloseRange reports whether the kernel has close_range(2) with
// CLOSE_RANGE_CLOEXEC (Linux 5.11), with which the child marks every
// descriptor from 3 up close-on-exec itself.
func haveCloseRange() bool {
	// An empty range above any descriptor: a no-op where supported.
	err := unix.CloseRange(^uint(0)>>33, ^uint(0)>>33, unix.CLOSE_RANGE_CLOEXEC)
	return err == nil
}

// readSigIgn returns the SigIgn mask of /proc/self/status: every child
// gets those signals back at their default.
func readSigIgn() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			mask, _ := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return mask
		}
	}
	return 0
}

// probeStartNofile returns the soft RLIMIT_NOFILE the process was
// started with when the Go runtime raised it at start-up (it then sets
// the soft limit to the hard limit minus one, and keeps the original for
// the children of os/exec only), nil otherwise. The original is read off
// a child that syscall.ForkExec starts, stopped by ptrace before its
// first instruction.
func probeStartNofile() *unix.Rlimit {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Max == 0 || lim.Cur != lim.Max-1 {
		return nil
	}
	orig, err := probeNofile()
	if err != nil {
		return nil
	}
	if orig.Cur == lim.Cur && orig.Max == lim.Max {
		return nil
	}
	return orig
}

// hardLimit returns the server's own hard limit of resource (read at
// most once a second), and false when it cannot be read.
func (s *Spawner) hardLimit(resource int) (uint64, bool) {
	v := s.hardLimits.Get(resource, func() hardLimit {
		var cur unix.Rlimit
		err := unix.Getrlimit(resource, &cur)
		return hardLimit{cur.Max, err == nil}
	})
	return v.max, v.ok
}

// hardLimit is a cached hard rlimit; ok is false when it could not be
// read.
type hardLimit struct {
	max uint64
	ok  bool
}
