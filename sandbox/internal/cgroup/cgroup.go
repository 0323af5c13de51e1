// Package cgroup gives each sandboxed child a cgroup v2 of its own: it
// sets up where request cgroups go and which controllers they have
// ([Setup], a [Manager]), hands out a cgroup per child from a pool
// ([Manager.Acquire]), kills every process in it ([Cgroup.Kill]), and
// reads its statistics and releases it once the child is gone
// ([Cgroup.Finish]). The layout and the rules it follows are in package
// sandbox's documentation, section "Cgroups"; the pool's in pool.go.
//
// It is sandbox's, as runc keeps its cgroup code apart from its process
// set-up: sandbox re-exports the types its API uses.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Spec asks for a cgroup of the child's own with resource limits.
// A nil *Spec (sandbox.Spec.Cgroup) still gives the child a cgroup when
// the host has cgroup v2 (for the kill), without limits and without
// failing when it has not; a non-nil one, even empty, requires the
// cgroup.
//
// Zero values mean "no limit" (the kernel's "max").
type Spec struct {
	// MemoryMax is memory.max in bytes: above it the kernel reclaims,
	// then OOM-kills a process of the cgroup. Needs the memory
	// controller.
	MemoryMax int64
	// MemorySwapMax is memory.swap.max in bytes; nil leaves swap alone,
	// a pointer to 0 forbids it. Needs the memory controller (and swap
	// accounting).
	MemorySwapMax *int64
	// PidsMax is pids.max: how many processes and threads the cgroup may
	// hold at once (the child counts); fork and clone fail with EAGAIN
	// beyond it. Needs the pids controller.
	PidsMax int64
	// CPUMax is cpu.max, "QUOTA PERIOD" in microseconds ("50000 100000":
	// half a CPU) or "max PERIOD"; a lone "QUOTA" keeps the period
	// (100 ms). Needs the cpu controller.
	CPUMax string
	// BestEffort runs the child with what the host can enforce instead
	// of failing with a [*UnsupportedError]; what was left out is
	// listed in [ProcessInfo].Downgraded.
	BestEffort bool
}

// Options configure the per-request cgroups; see [Setup].
type Options struct {
	// Disabled turns per-request cgroups off: kills then reach the
	// process group only, and a Spec with a Cgroup fails unless
	// BestEffort.
	Disabled bool
	// Parent is the cgroup under which request cgroups are made: an
	// absolute directory on the cgroup2 mount, or a path relative to the
	// server's own cgroup. Empty means "sockwarden", i.e.
	// <server's cgroup>/sockwarden. It is created if missing; it may not
	// be the root cgroup.
	Parent string
	// Controllers are the controllers to enable for request cgroups; nil
	// means cpu, memory and pids. Empty (non-nil) enables none.
	Controllers []string
}

// Report tells what per-request cgroup containment is available.
type Report struct {
	// Available is true when children get a cgroup of their own.
	Available bool
	// Mount is the cgroup2 mount point (also when not Available, if one
	// was found).
	Mount string
	// Parent is the directory under which request cgroups are made.
	Parent string
	// Server is the cgroup directory of the server process, which may
	// have been moved to a leaf (see sandbox's package documentation).
	Server string
	// Controllers lists the controllers enabled for request cgroups,
	// sorted: what limits a [Spec] may set (and which statistics
	// [Stats] carries).
	Controllers []string
	// Reason says why cgroups are not available, or why wanted
	// controllers are missing; empty when everything is there.
	Reason string

	why map[string]string // controller -> why it is missing (read-only)
}

// String summarises the report in one line.
func (r Report) String() string {
	if !r.Available {
		return "no per-request cgroups: " + r.Reason
	}
	c := "none"
	if len(r.Controllers) > 0 {
		c = strings.Join(r.Controllers, ", ")
	}
	s := fmt.Sprintf("per-request cgroups under %s (controllers: %s)", r.Parent, c)
	if r.Reason != "" {
		s += "; " + r.Reason
	}
	return s
}

// ProcessInfo describes a running child's cgroup.
type ProcessInfo struct {
	// Path is the cgroup's directory (the cgroup2 mount point joined
	// with the path /proc/PID/cgroup shows); empty when the child has
	// no cgroup of its own and kills reach its process group only.
	Path string
	// BestEffort repeats [Spec].BestEffort.
	BestEffort bool
	// Downgraded lists what the spec asked for and could not be
	// enforced (only ever non-empty with BestEffort): interface files
	// such as "memory.max", or "cgroup" when there was no cgroup at all.
	Downgraded []string
}

// Stats is what Wait learned from a child's cgroup before releasing
// it (for reuse by a later child, or removal). Every statistic is the
// child's own, also in a reused cgroup. A zero statistic means "not
// measured" (its controller is not enabled, or the kernel lacks the
// file), except OOMKills.
type Stats struct {
	// Path is the cgroup's directory; empty when the child had none (and
	// the other fields are zero).
	Path string
	// Killed counts the processes that were still in the cgroup when
	// sockwarden killed it (by [Process.Kill] or in Wait after the
	// leader's exit), the leader included if it was still running.
	Killed int
	// MemoryPeak is memory.peak in bytes (memory controller, Linux 5.19):
	// in a reused cgroup, the peak since the reset at hand-out, which
	// includes the little memory an earlier request may have left
	// charged (at most the kernel's per-CPU charge caches).
	MemoryPeak int64
	// OOMKills is the oom_kill count of memory.events: processes the
	// kernel killed for exceeding memory.max.
	OOMKills int64
	// PidsPeak is pids.peak (pids controller, Linux 6.13).
	PidsPeak int64
	// CPU is cpu.stat's usage_usec: the CPU time of every process that
	// ran in the cgroup, escaped and orphaned descendants included
	// (in a reused cgroup, the growth since hand-out).
	CPU time.Duration
	// Lingering is true when processes of the cgroup had not died within
	// a few seconds of the kill (stuck in the kernel); the cgroup is
	// then removed in the background once they are gone, never reused.
	Lingering bool
}

// UnsupportedError is returned by [Manager.Acquire] (and so by
// sandbox.Spawner.Start) when a Spec
// cannot be enforced and is not BestEffort.
type UnsupportedError struct {
	// Missing lists what cannot be enforced: interface files such as
	// "memory.max", or "cgroup" when no per-request cgroup can be made.
	Missing []string
	// Reason says why.
	Reason string
}

// Error says what is missing and why.
func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("sandbox: cannot enforce cgroup %s: %s (set BestEffort to run without)",
		strings.Join(e.Missing, ", "), e.Reason)
}

const (
	cgroupDefaultParent = "sockwarden"
	cgroupServerLeaf    = "server"
	cgroupPrefix        = "req-"
)

// defaultControllers are the controllers enabled for request cgroups when
// the options name none.
func defaultControllers() []string { return []string{"cpu", "memory", "pids"} }

// Bounds of the wait for a killed cgroup to empty: in Wait, and when
// removing stale cgroups at setup.
const (
	cgroupDrainTimeout = 5 * time.Second
	cgroupStaleTimeout = time.Second
)

// Manager is one configuration of per-request cgroups: where request
// cgroups go, which controllers they have, and the pool of idle ones.
// Make it with [Setup].
type Manager struct {
	report  Report
	enabled map[string]bool

	poolOnce sync.Once
	cgPool   *cgPool // request cgroups for reuse (see pool.go)
	linger   *lingerSet
}

// Report says what containment m gives.
func (m *Manager) Report() Report { return m.report.Clone() }

// Clone returns a copy of r that shares nothing mutable with it.
func (r Report) Clone() Report {
	r.Controllers = slices.Clone(r.Controllers)
	return r
}

// Check returns the *UnsupportedError that [Manager.Acquire] would return
// for spec on the host r describes, or nil.
func (r *Report) Check(spec *Spec) error {
	_, _, err := r.check(spec)
	return err
}

// check returns the limits of spec this host can apply and those it
// cannot (for BestEffort), or the error a spec that is not BestEffort
// gets.
func (r *Report) check(spec *Spec) (apply []cgroupLimit, missing []string, err error) {
	limits := spec.limits()
	if !r.Available {
		if spec == nil {
			return nil, nil, nil
		}
		missing = []string{"cgroup"}
		for _, l := range limits {
			missing = append(missing, l.file)
		}
		if !spec.BestEffort {
			return nil, nil, &UnsupportedError{Missing: []string{"cgroup"}, Reason: r.Reason}
		}
		return nil, missing, nil
	}
	var why []string
	for _, l := range limits {
		if slices.Contains(r.Controllers, l.controller) {
			apply = append(apply, l)
			continue
		}
		missing = append(missing, l.file)
		w := fmt.Sprintf("controller %s is not available (%s)", l.controller, r.why[l.controller])
		if r.why[l.controller] == "" {
			w = fmt.Sprintf("controller %s is not enabled by the configuration", l.controller)
		}
		if !slices.Contains(why, w) {
			why = append(why, w)
		}
	}
	if len(missing) > 0 && !spec.BestEffort {
		return nil, nil, &UnsupportedError{Missing: missing, Reason: strings.Join(why, "; ")}
	}
	return apply, missing, nil
}

// Setup sets up the request cgroups as o says. With probe, it
// changes nothing on the host (no cgroup made, no controller enabled, no
// process moved, nothing removed) and reports what a setup would give.
func Setup(o Options, probe bool) (*Manager, error) {
	s := &Manager{enabled: map[string]bool{}, linger: &lingerSet{}}
	s.report.why = map[string]string{}
	fail := func(explicit bool, format string, args ...any) (*Manager, error) {
		s.report.Available = false
		s.report.Controllers = nil
		s.report.Reason = fmt.Sprintf(format, args...)
		if explicit {
			return s, errors.New("sandbox: cgroups: " + s.report.Reason)
		}
		return s, nil
	}
	if o.Disabled {
		return fail(false, "disabled by configuration")
	}
	loc, err := locateCgroup2()
	if err != nil {
		return fail(false, "%v", err)
	}
	s.report.Mount = loc.mount
	home := homeCgroup(loc.own)
	explicit := o.Parent != ""
	parent := o.Parent
	if parent == "" {
		parent = cgroupDefaultParent
	}
	if !filepath.IsAbs(parent) {
		parent = filepath.Join(home, parent)
	}
	parent = filepath.Clean(parent)
	s.report.Parent = parent
	if !within(parent, loc.mount) {
		return fail(explicit, "parent %s is not on the cgroup2 mount %s", parent, loc.mount)
	}
	if parent == loc.mount {
		return fail(explicit, "parent %s is the root cgroup", parent)
	}
	if _, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0); e == unix.ENOSYS {
		// A seccomp filter (container runtimes) hides clone3, without
		// which a child cannot be born into its cgroup.
		return fail(explicit, "clone3(2) is not available (a seccomp filter?)")
	}
	killDir := parent
	if probe {
		if _, err := os.Stat(parent); err != nil {
			d := filepath.Dir(parent)
			for !within(loc.mount, d) {
				if _, err := os.Stat(d); err == nil {
					break
				}
				d = filepath.Dir(d)
			}
			if err := unix.Access(d, unix.W_OK); err != nil {
				return fail(explicit, "creating the parent: %s: %v", d, err)
			}
			killDir = d
		}
	} else if err := os.MkdirAll(parent, 0o755); err != nil {
		return fail(explicit, "creating the parent: %v", err)
	}
	// The request cgroups are made in the parent: a server that may not
	// write there (not root, no delegation) has none.
	if err := unix.Access(killDir, unix.W_OK); err != nil {
		return fail(explicit, "cannot make cgroups in %s: %v (not root, and not delegated to uid %d)", killDir, err, os.Geteuid())
	}
	if _, err := os.Stat(filepath.Join(killDir, "cgroup.kill")); err != nil && killDir != loc.mount {
		return fail(explicit, "the kernel has no cgroup.kill (needs Linux 5.14)")
	}

	// Enable the controllers from the server's own cgroup (when the
	// parent is inside it: it is the server's to manage, delegated to
	// it) or from the parent itself down to the parent.
	base := parent
	if within(parent, home) {
		base = home
	}
	chain := []string{base}
	if rel, _ := filepath.Rel(base, parent); rel != "." {
		d := base
		for _, e := range strings.Split(rel, "/") {
			d = filepath.Join(d, e)
			chain = append(chain, d)
		}
	}
	want := o.Controllers
	if want == nil {
		want = defaultControllers()
	}
	avail := fieldSet(readString(filepath.Join(base, "cgroup.controllers")))
	for _, c := range want {
		if !avail[c] {
			switch {
			case loc.v1[c] != "":
				s.report.why[c] = "bound to the cgroup v1 hierarchy at " + loc.v1[c]
			default:
				s.report.why[c] = "not delegated to " + base
			}
			continue
		}
		if probe {
			s.enabled[c] = true // would be enabled
			continue
		}
		if err := s.enable(c, chain, home); err != nil {
			s.report.why[c] = err.Error()
		}
	}
	// What request cgroups get is what the parent enables for its
	// children, including what someone else enabled there.
	for c := range fieldSet(readString(filepath.Join(parent, "cgroup.subtree_control"))) {
		s.enabled[c] = true
	}
	for c := range s.enabled {
		s.report.Controllers = append(s.report.Controllers, c)
		delete(s.report.why, c)
	}
	slices.Sort(s.report.Controllers)
	var reasons []string
	for _, c := range want {
		if w := s.report.why[c]; w != "" {
			reasons = append(reasons, c+": "+w)
		}
	}
	s.report.Reason = strings.Join(reasons, "; ")
	s.report.Available = true
	s.report.Server = home
	if own, err := ownCgroupDir(loc); err == nil {
		s.report.Server = own
	}
	if !probe {
		s.linger.removeStale(parent)
	}
	return s, nil
}

// homeCgroup is the cgroup a setup starts from: the process's own, or,
// when the process sits in the leaf <home>/server that an earlier setup
// moved it into (see moveServer), that leaf's parent, which then holds no
// process and enables controllers for its children.
func homeCgroup(own string) string {
	if filepath.Base(own) != cgroupServerLeaf {
		return own
	}
	home := filepath.Dir(own)
	if len(readPids(filepath.Join(home, "cgroup.procs"))) == 0 &&
		strings.TrimSpace(readString(filepath.Join(home, "cgroup.subtree_control"))) != "" {
		return home
	}
	return own
}

// enable enables controller c in the subtree_control of every cgroup of
// chain, which ends with the parent. A non-root cgroup that holds
// processes cannot enable a domain controller for its children (the
// no-internal-process rule); when that cgroup is the server's own and
// holds the server alone, the server moves into the leaf
// <own>/server first.
func (s *Manager) enable(c string, chain []string, home string) error {
	for _, dir := range chain {
		sc := filepath.Join(dir, "cgroup.subtree_control")
		if fieldSet(readString(sc))[c] {
			continue
		}
		err := os.WriteFile(sc, []byte("+"+c), 0)
		if errors.Is(err, unix.EBUSY) && dir == home && !isRootCgroup(home) {
			if merr := moveServer(home); merr != nil {
				return fmt.Errorf("%s holds processes, so it cannot enable %s for its children, and the server could not move out: %v", home, c, merr)
			}
			err = os.WriteFile(sc, []byte("+"+c), 0)
		}
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%s holds processes, so it cannot enable %s for its children", dir, c)
			}
			return fmt.Errorf("enabling in %s: %v", sc, err)
		}
	}
	return nil
}

// isRootCgroup reports whether dir is the root of the whole hierarchy,
// which may hold processes and enable controllers at once. The root of a
// cgroup namespace (a container's "/") is not: it has the files the real
// root lacks, such as cgroup.type.
func isRootCgroup(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.type"))
	return errors.Is(err, os.ErrNotExist)
}

// moveServer moves the server process into the leaf <home>/server, so
// that home holds no process and may enable controllers. It refuses when
// home holds other processes: they would keep it busy anyway.
func moveServer(home string) error {
	self := os.Getpid()
	for _, pid := range readPids(filepath.Join(home, "cgroup.procs")) {
		if pid != self {
			return fmt.Errorf("it also holds process %d", pid)
		}
	}
	leaf := filepath.Join(home, cgroupServerLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(self)), 0)
}

// removeStale kills and removes the request cgroups under parent that
// belong to servers that are gone (named req-PID-N, PID not running):
// the descendants of a server that was SIGKILLed, which the parent-death
// signal does not reach.
func (ls *lingerSet) removeStale(parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, ok := cgroupOwner(e.Name())
		if !ok || !e.IsDir() || pid == self || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		ls.removeCgroup(filepath.Join(parent, e.Name()), cgroupStaleTimeout)
	}
}

// cgroupOwner parses a request cgroup's name, req-PID-N.
func cgroupOwner(name string) (pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, cgroupPrefix)
	if !ok {
		return 0, false
	}
	p, n, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if _, err2 := strconv.ParseUint(n, 10, 64); err != nil || err2 != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// removeCgroup kills what is in the cgroup dir and removes it (its
// sub-cgroups first), waiting up to timeout for it to empty; if it does
// not, the removal goes on in the background.
func (ls *lingerSet) removeCgroup(dir string, timeout time.Duration) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			ls.removeCgroup(filepath.Join(dir, e.Name()), timeout)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	writeAt(fd, "cgroup.kill", "1")
	if !drainCgroup(fd, timeout) || rmdirCgroup(dir) != nil {
		ls.add(dir)
	}
}

// cgroupLoc is where the cgroup2 hierarchy is mounted and where the
// server is in it.
type cgroupLoc struct {
	mount string            // mount point
	root  string            // the hierarchy path mounted there ("/" mostly)
	rel   string            // the server's cgroup, from /proc/self/cgroup
	own   string            // mount + rel, the server's cgroup directory
	v1    map[string]string // v1 controller -> its mount point (hybrid)
}

func locateCgroup2() (*cgroupLoc, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	return findCgroup2(string(mi), string(cg))
}

// findCgroup2 locates the cgroup2 mount and the server's cgroup in the
// contents of /proc/self/mountinfo and /proc/self/cgroup.
func findCgroup2(mountinfo, procCgroup string) (*cgroupLoc, error) {
	rel, ok := "", false
	for _, line := range strings.Split(procCgroup, "\n") {
		if p, found := strings.CutPrefix(line, "0::"); found {
			rel, ok = strings.TrimSuffix(p, " (deleted)"), true
			break
		}
	}
	loc := &cgroupLoc{v1: map[string]string{}}
	var best *mountEntry
	mounts := parseMountinfo(mountinfo)
	for i, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			if ok && within(rel, m.root) && (best == nil || len(m.root) > len(best.root)) {
				best = &mounts[i]
			}
		case "cgroup":
			for _, opt := range m.super {
				switch {
				case opt == "rw" || opt == "ro" || strings.Contains(opt, "=") ||
					opt == "xattr" || opt == "noprefix" || opt == "clone_children" ||
					opt == "cpuset_v2_mode" || opt == "favordynmods" || opt == "none":
				default:
					if loc.v1[opt] == "" {
						loc.v1[opt] = m.point
					}
				}
			}
		}
	}
	switch {
	case !ok:
		return nil, errors.New("the server is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")
	case best == nil:
		return nil, errors.New("no cgroup2 file system is mounted")
	}
	loc.mount, loc.root, loc.rel = best.point, best.root, rel
	r, _ := filepath.Rel(best.root, rel)
	loc.own = filepath.Join(best.point, r)
	return loc, nil
}

// ownCgroupDir reads the server's current cgroup directory.
func ownCgroupDir(loc *cgroupLoc) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	l, err := findCgroup2("0 0 0:0 "+loc.root+" "+loc.mount+" rw - cgroup2 cgroup2 rw\n", string(b))
	if err != nil {
		return "", err
	}
	return l.own, nil
}

type mountEntry struct {
	root, point, fstype string
	super               []string
}

// parseMountinfo parses /proc/PID/mountinfo (proc(5)).
func parseMountinfo(s string) []mountEntry {
	var out []mountEntry
	for _, line := range strings.Split(s, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, mountEntry{root: unescapeMount(f[3]), point: unescapeMount(f[4]),
			fstype: g[0], super: strings.Split(g[2], ",")})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space...) of
// mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// within reports whether path p is dir or beneath it (both clean).
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func fieldSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(s) {
		m[f] = true
	}
	return m
}

func readPids(path string) []int {
	var out []int
	for _, f := range strings.Fields(readString(path)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// cgroupLimit is one interface file a spec writes.
type cgroupLimit struct {
	file, value, controller string
}

func (c *Spec) Validate() error {
	if c == nil {
		return nil
	}
	switch {
	case c.MemoryMax < 0:
		return fmt.Errorf("sandbox: cgroup memory.max %d is negative", c.MemoryMax)
	case c.MemorySwapMax != nil && *c.MemorySwapMax < 0:
		return fmt.Errorf("sandbox: cgroup memory.swap.max %d is negative", *c.MemorySwapMax)
	case c.PidsMax < 0:
		return fmt.Errorf("sandbox: cgroup pids.max %d is negative", c.PidsMax)
	}
	if c.CPUMax != "" {
		if err := ValidateCPUMax(c.CPUMax); err != nil {
			return fmt.Errorf("sandbox: cgroup cpu.max: %w", err)
		}
	}
	return nil
}

// ValidateCPUMax checks a cpu.max value: "QUOTA PERIOD", "max PERIOD",
// "QUOTA" or "max", in microseconds; the kernel takes a quota of at
// least 1000 and a period from 1000 to 1000000.
func ValidateCPUMax(s string) error {
	f := strings.Fields(s)
	if len(f) < 1 || len(f) > 2 {
		return fmt.Errorf("%q: want \"QUOTA PERIOD\" in microseconds, e.g. \"50000 100000\"", s)
	}
	if f[0] != "max" {
		q, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || q < 1000 {
			return fmt.Errorf("%q: the quota must be \"max\" or a whole number of microseconds >= 1000", s)
		}
	}
	if len(f) == 2 {
		p, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || p < 1000 || p > 1000000 {
			return fmt.Errorf("%q: the period must be a whole number of microseconds from 1000 to 1000000", s)
		}
	}
	return nil
}

func (c *Spec) limits() []cgroupLimit {
	if c == nil {
		return nil
	}
	var out []cgroupLimit
	if c.MemoryMax > 0 {
		out = append(out, cgroupLimit{"memory.max", strconv.FormatInt(c.MemoryMax, 10), "memory"})
	}
	if c.MemorySwapMax != nil {
		out = append(out, cgroupLimit{"memory.swap.max", strconv.FormatInt(*c.MemorySwapMax, 10), "memory"})
	}
	if c.PidsMax > 0 {
		out = append(out, cgroupLimit{"pids.max", strconv.FormatInt(c.PidsMax, 10), "pids"})
	}
	if c.CPUMax != "" {
		out = append(out, cgroupLimit{"cpu.max", strings.Join(strings.Fields(c.CPUMax), " "), "cpu"})
	}
	return out
}

// Cgroup is a child's cgroup, for one request. Its kill bookkeeping
// is guarded by the Process's sigMu.
type Cgroup struct {
	path         string
	dirfd        int
	events       int  // cgroup.events, opened at hand-out
	peak         int  // memory.peak, opened at hand-out (and reset); else -1
	empty        bool // killRest found it empty
	emptyFrozen  bool // and its frozen flag then
	memory, pids bool // controllers enabled: statistics to read
	killed       map[int]struct{}
	killSent     bool // cgroup.kill was written

	pool           *cgPool
	slot           *cgSlot
	base           cgCumulative // cumulative statistics at hand-out
	peakPerRequest bool         // memory.peak is absent, or peak was reset for this request
}

// Acquire hands out the cgroup of a child about to be started with
// spec: a pooled one, or a new one (see pool.go). It returns nil
// (and no error) when the child runs without one.
func (s *Manager) Acquire(spec *Spec) (*Cgroup, ProcessInfo, error) {
	var pc ProcessInfo
	if spec != nil {
		pc.BestEffort = spec.BestEffort
	}
	apply, missing, err := s.report.check(spec)
	if err != nil {
		return nil, pc, err
	}
	pc.Downgraded = missing
	if !s.report.Available {
		return nil, pc, nil
	}

	p := s.pool()
	for {
		cg, err := p.acquire()
		if err != nil {
			return nil, pc, err
		}
		downgraded, slotErr, err := cg.setLimits(apply, spec != nil && spec.BestEffort)
		switch {
		case slotErr: // this cgroup is at fault: another one
			cg.Discard()
			continue
		case err != nil:
			cg.unused()
			return nil, pc, err
		}
		pc.Downgraded = append(pc.Downgraded, downgraded...)
		pc.Path = cg.path
		return cg, pc, nil
	}
}

// DirFD is a descriptor of the cgroup's directory, for
// clone3(CLONE_INTO_CGROUP); it is the Cgroup's.
func (cg *Cgroup) DirFD() int { return cg.dirfd }

// Discard removes the cgroup of a child that was not started (or that
// failed to exec and was reaped), in the background: it is not reused.
func (cg *Cgroup) Discard() {
	writeAt(cg.dirfd, "cgroup.kill", "1")
	drained := drainEvents(cg.events, cgroupDrainTimeout)
	cg.close()
	if !drained {
		cg.slot.closeFDs()
		cg.pool.linger.add(cg.path)
		return
	}
	cg.pool.put(cg.slot, false)
}

// Kill kills every process of the cgroup, counting those that were in it
// (but not except, the pid of a leader that exited by itself). The
// caller serialises it with KillRest and Finish (sandbox.Process's
// signal lock).
func (cg *Cgroup) Kill(except int) error {
	pids := cg.procs()
	for _, pid := range pids {
		if pid != except {
			if cg.killed == nil {
				cg.killed = map[int]struct{}{}
			}
			cg.killed[pid] = struct{}{}
		}
	}
	if len(pids) == 0 {
		return nil // empty, and nothing left to fork into it
	}
	cg.killSent = true // never to be reused: see pool.go
	if err := writeAt(cg.dirfd, "cgroup.kill", "1"); err != nil {
		return fmt.Errorf("sandbox: killing cgroup %s: %w", cg.path, err)
	}
	return nil
}

// KillRest kills what the leader left in the cgroup after its exit;
// usually nothing, which one read of cgroup.events tells. Called with the
// Process's sigMu held.
func (cg *Cgroup) KillRest(leader int) {
	if populated, frozen, err := readEvents(cg.events); err == nil && !populated {
		cg.empty, cg.emptyFrozen = true, frozen
		return
	}
	cg.Kill(leader)
}

func (cg *Cgroup) procs() []int {
	b, err := readAt(cg.dirfd, "cgroup.procs")
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range bytes.Fields(b) {
		if pid, err := strconv.Atoi(string(f)); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// Finish waits for the killed cgroup to empty, reads its statistics
// (the request's own: see pool.go) and releases it, for reuse or
// removal.
func (cg *Cgroup) Finish() Stats {
	st := Stats{Path: cg.path, Killed: len(cg.killed)}
	if !cg.empty {
		st.Lingering = !drainEvents(cg.events, cgroupDrainTimeout)
	}
	cpuStat := -1
	if cg.slot != nil && cg.slot.fdsOpen {
		cpuStat = cg.slot.cpuStat
	}
	now := readCumulative(cg.dirfd, cpuStat, cg.memory)
	d := now.since(cg.base)
	if cg.slot != nil {
		// Empty now (or lingering, in which case it is not reused).
		cg.slot.last, cg.slot.haveLast = now, !st.Lingering
	}
	st.CPU = time.Duration(d.cpuUsec) * time.Microsecond
	st.OOMKills = d.oomKills
	if cg.memory {
		st.MemoryPeak = cg.readPeak()
	}
	if cg.pids {
		st.PidsPeak, _ = readInt(cg.dirfd, "pids.peak")
	}
	cg.release(!st.Lingering, st.PidsPeak)
	return st
}

// keyedValue returns the value of key in a flat-keyed file
// ("key value" lines), or 0.
func keyedValue(b []byte, key string) int64 {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if ok && string(k) == key {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// drainCgroup waits up to timeout until the cgroup of dirfd has no
// process left, watching cgroup.events ("populated 0"). Zombies do not
// count: a process leaves its cgroup when it exits.
func drainCgroup(dirfd int, timeout time.Duration) bool {
	fd, err := unix.Openat(dirfd, "cgroup.events", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return drainEvents(fd, timeout)
}

// readPopulated reads the populated flag of the cgroup.events file fd.
func readPopulated(fd int) (bool, error) {
	populated, _, err := readEvents(fd)
	return populated, err
}

// drainEvents is drainCgroup on an open cgroup.events.
func drainEvents(fd int, timeout time.Duration) bool {
	end := time.Now().Add(timeout)
	for {
		populated, err := readPopulated(fd)
		if err != nil {
			return false
		}
		if !populated {
			return true
		}
		left := time.Until(end)
		if left <= 0 {
			return false
		}
		// kernfs signals a change of the file with POLLPRI (since the
		// read above).
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		unix.Poll(pfd, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
	}
}

// rmdirCgroup removes an empty cgroup; EBUSY may briefly follow the
// last exit.
func rmdirCgroup(path string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = unix.Rmdir(path)
		if err != unix.EBUSY {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// lingerSet removes cgroups that would not empty, in the background.
type lingerSet struct {
	m sync.Map // path -> struct{}: cgroups being removed in the background
}

// add keeps killing the cgroup at path and trying to remove it, in the
// background, until it is gone.
func (ls *lingerSet) add(path string) {
	if _, dup := ls.m.LoadOrStore(path, struct{}{}); dup {
		return
	}
	go func() {
		defer ls.m.Delete(path)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 30*time.Second) {
			time.Sleep(wait)
			os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
			if err := unix.Rmdir(path); err == nil || err == unix.ENOENT {
				return
			}
		}
	}()
}

// writeAt writes value to the file name of the directory dirfd.
func writeAt(dirfd int, name, value string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		_, err = unix.Write(fd, []byte(value))
		if err != unix.EINTR {
			return err
		}
	}
}

// readAt reads the file name of the directory dirfd.
func readAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 256)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}
