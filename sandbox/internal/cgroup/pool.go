package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Reuse of request cgroups.
//
// Making a cgroup (mkdir) and removing it (rmdir) were most of the cost
// of a cgroup per spawn, so request cgroups are kept in a pool (one per
// setup) and serve one request after another. The rules:
//
// Hand-out takes the idle cgroup that has waited longest (FIFO), or
// makes one (mkdir) when none is idle. A background goroutine, started
// when there is work, keeps cgPoolMin cgroups made ahead and removes
// those that are not to be reused; at most cgPoolMax wait idle, the
// surplus is removed. Idle cgroups hold no descriptor.
//
// At hand-out the cgroup must read "populated 0" and "frozen 0" in
// cgroup.events: it holds no process, of an earlier request or any
// other; else it is killed and removed and another is taken. Its limit
// files get the spec's values, and those the spec leaves unset go back
// to a new cgroup's ("max"; cpu.max "max 100000"); a lone cpu.max quota
// is written with the default period, as a new cgroup has it. Values
// already in place are not written again.
//
// Statistics are the request's own: cpu.stat's usage_usec and
// memory.events' oom_kill, which only grow, are read at hand-out and
// subtracted at the end; the kill count is kept per request; memory.peak
// is read through a descriptor opened at hand-out on which the peak was
// reset (writing to memory.peak resets the peak seen through that
// descriptor, since Linux 6.12); pids.peak cannot be reset, which the
// reuse rule below makes harmless.
//
// After its request (the leader reaped, the cgroup read empty, its
// statistics read) a cgroup goes back to the pool unless:
//
//   - it did not empty within the drain timeout (Lingering): removed
//     once empty, in the background, as before;
//   - sockwarden wrote its cgroup.kill (Kill, or Wait finding processes
//     left): the kernel (seen on 6.18; see TestCgroupKilledKillsNewborns)
//     kills at birth every child that clone3 puts into a cgroup killed
//     before (CLONE_INTO_CGROUP compares the kill sequence number of the
//     target cgroup with that of the parent's own), so a killed cgroup
//     is removed, never reused; so is the cgroup of a spawn that failed
//     (discard);
//   - its pids.peak is above 1: the peak cannot be reset, and a later
//     request that stays below it would report it (at 1 it is exact for
//     any request: the leader counts);
//   - memory.peak exists and cannot be reset (before Linux 6.12);
//   - more memory is still charged to it (memory.current) than the
//     kernel's per-CPU charge caches hold (64 pages a CPU), or any swap
//     (memory.swap.current): page cache or tmpfs files of the request
//     would count against the next request's memory.max and in its peak;
//     removed, the cgroup hands that charge to its parent, as before. A
//     reused cgroup's MemoryPeak thus includes at most that much of an
//     earlier request's memory;
//   - it was changed behind the server's back: frozen, a sub-cgroup made
//     in it, its mode or owner changed (only a child running as root can
//     do that; such a child can also change limit files the pool does
//     not track, as it can change any cgroup on the host).
//
// [Spawner.Close] removes the
// idle cgroups; a cgroup still in use is removed when its request ends.
// Pooled cgroups keep the names req-<server pid>-<n>, so those a dead
// server left behind are removed by the next setup, as before.

const (
	// cgPoolMin cgroups are kept idle, made ahead by the background
	// refill.
	cgPoolMin = 4
	// cgPoolMax cgroups at most wait idle; the surplus is removed.
	cgPoolMax = 8
)

// memcgChargeBatch is the kernel's MEMCG_CHARGE_BATCH: the pages a CPU
// charges to a memory cgroup ahead of need and keeps cached after the
// processes are gone.
const memcgChargeBatch = 64

// cgDefaultLimits are the limit files' values in a new cgroup.
var cgDefaultLimits = map[string]string{
	"memory.max":      "max",
	"memory.swap.max": "max",
	"pids.max":        "max",
	"cpu.max":         "max 100000",
}

// cgSlot is a request cgroup between requests.
type cgSlot struct {
	path string
	uses int // hand-outs so far
	// last is the cumulative statistics read when the previous request
	// finished, once the cgroup was empty: the base of the next request
	// (nothing runs in an empty cgroup), so that a hand-out need not
	// read them again. haveLast is false until then.
	last     cgCumulative
	haveLast bool
	// limits are the limit files set to other values than a new
	// cgroup's, as written.
	limits map[string]string
	// the directory's mode and owner as made
	mode, uid, gid uint32
	// dirfd, events and cpuStat are descriptors of the directory, its
	// cgroup.events and its cpu.stat, opened by the first hand-out and
	// kept while the slot serves and waits in the pool (fdsOpen), so
	// that a hand-out opens nothing and the statistics are one pread:
	// seven system calls less per request. They are closed when the
	// slot leaves the pool for good (closeFDs).
	dirfd, events, cpuStat int
	fdsOpen                bool
}

// openFDs opens the slot's descriptors (cpuStat is -1 where the kernel
// has no cpu.stat).
func (sl *cgSlot) openFDs() error {
	fd, err := unix.Open(sl.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	events, err := unix.Openat(fd, "cgroup.events", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("opening cgroup.events: %w", err)
	}
	cpuStat, err := unix.Openat(fd, "cpu.stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		cpuStat = -1
	}
	sl.dirfd, sl.events, sl.cpuStat, sl.fdsOpen = fd, events, cpuStat, true
	return nil
}

// closeFDs closes the slot's descriptors, if open.
func (sl *cgSlot) closeFDs() {
	if sl == nil || !sl.fdsOpen {
		return
	}
	for _, fd := range []int{sl.cpuStat, sl.events, sl.dirfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	sl.fdsOpen = false
}

// doomedCgroup is a cgroup to remove in the background.
type doomedCgroup struct {
	path string
}

// cgPool keeps the request cgroups of one setup for reuse.
type cgPool struct {
	parent       string
	memory, pids bool
	min, max     int
	memLeftMax   int64 // the most memory left charged for reuse

	mu      sync.Mutex
	idle    []*cgSlot // oldest first
	doomed  []doomedCgroup
	working bool       // the background goroutine runs
	done    *sync.Cond // signalled when it stops
	retired bool       // not in force: keep nothing idle
	seq     uint64     // names made so far
	linger  *lingerSet
	// counters, for tests and reports
	created, reused, removed int
}

func newCgPool(parent string, memory, pids bool, linger *lingerSet) *cgPool {
	p := &cgPool{parent: parent, memory: memory, pids: pids, min: cgPoolMin, max: cgPoolMax, linger: linger,
		memLeftMax: int64(memcgChargeBatch * os.Getpagesize() * runtime.NumCPU())}
	p.done = sync.NewCond(&p.mu)
	return p
}

// pool returns the setup's pool of request cgroups.
func (s *Manager) pool() *cgPool {
	s.poolOnce.Do(func() {
		s.cgPool = newCgPool(s.report.Parent, s.enabled["memory"], s.enabled["pids"], s.linger)
	})
	return s.cgPool
}

// Close removes the idle cgroups, and those that come back later (from
// requests still running). A later Acquire makes new ones again.
func (s *Manager) Close() {
	if s.report.Available {
		s.pool().retire()
	}
}

func (p *cgPool) retire() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = true
	for _, sl := range p.idle {
		sl.closeFDs()
		p.doomed = append(p.doomed, doomedCgroup{sl.path})
	}
	clear(p.idle)
	p.idle = p.idle[:0]
	p.kickLocked()
	for p.working {
		p.done.Wait()
	}
}

// take returns the idle cgroup that waited longest, or nil.
func (p *cgPool) take() *cgSlot {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retired = false // in use (again)
	var sl *cgSlot
	if len(p.idle) > 0 {
		sl = p.idle[0]
		p.idle[0] = nil
		p.idle = p.idle[1:]
	}
	if len(p.idle) < p.min {
		p.kickLocked()
	}
	return sl
}

// put takes back a cgroup after its request (or a hand-out that came to
// nothing): for reuse, or to be removed.
func (p *cgPool) put(sl *cgSlot, reuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if reuse && !p.retired && len(p.idle) < p.max {
		p.idle = append(p.idle, sl)
		return
	}
	sl.closeFDs()
	p.doomed = append(p.doomed, doomedCgroup{sl.path})
	p.kickLocked()
}

func (p *cgPool) kickLocked() {
	if !p.working {
		p.working = true
		go p.work()
	}
}

// work removes the doomed cgroups and makes new ones until min are idle,
// then ends.
func (p *cgPool) work() {
	p.mu.Lock()
	for {
		if n := len(p.doomed); n > 0 {
			d := p.doomed[n-1]
			p.doomed = p.doomed[:n-1]
			p.mu.Unlock()
			if rmdirCgroup(d.path) != nil {
				// Not empty (processes, or sub-cgroups a child running
				// as root made): kill, drain, remove, else keep trying
				// in the background.
				p.linger.removeCgroup(d.path, cgroupStaleTimeout)
			}
			p.mu.Lock()
			p.removed++
			continue
		}
		if p.retired || len(p.idle) >= p.min {
			break
		}
		p.mu.Unlock()
		sl, err := p.create()
		p.mu.Lock()
		if err != nil {
			break // the next hand-out says why
		}
		if p.retired || len(p.idle) >= p.max {
			p.doomed = append(p.doomed, doomedCgroup{sl.path})
			continue
		}
		p.idle = append(p.idle, sl)
	}
	p.working = false
	p.done.Broadcast()
	p.mu.Unlock()
}

// create makes a new request cgroup.
func (p *cgPool) create() (*cgSlot, error) {
	for {
		p.mu.Lock()
		p.seq++
		n := p.seq
		p.mu.Unlock()
		path := filepath.Join(p.parent, fmt.Sprintf("%s%d-%d", cgroupPrefix, os.Getpid(), n))
		err := unix.Mkdir(path, 0o755)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sandbox: creating cgroup %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			unix.Rmdir(path)
			return nil, fmt.Errorf("sandbox: creating cgroup %s: %w", path, err)
		}
		p.mu.Lock()
		p.created++
		p.mu.Unlock()
		return &cgSlot{path: path, mode: st.Mode, uid: st.Uid, gid: st.Gid}, nil
	}
}

// counts returns how many cgroups the pool made, handed out again and
// removed, and how many are idle.
func (p *cgPool) counts() (created, reused, removed, idle int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.created, p.reused, p.removed, len(p.idle)
}

// errCgroupBusy: a cgroup to be handed out is not empty.
var errCgroupBusy = errors.New("not empty or frozen")

// acquire hands out a request cgroup: a pooled one if one is fit, else a
// new one.
func (p *cgPool) acquire() (*Cgroup, error) {
	for tries := 0; ; tries++ {
		var sl *cgSlot
		if tries < 3 {
			sl = p.take()
		}
		fresh := sl == nil
		if fresh {
			var err error
			if sl, err = p.create(); err != nil {
				return nil, err
			}
		}
		cg, err := p.open(sl)
		if err == nil {
			if !fresh {
				p.mu.Lock()
				p.reused++
				p.mu.Unlock()
			}
			return cg, nil
		}
		p.put(sl, false)
		if fresh {
			return nil, fmt.Errorf("sandbox: cgroup %s: %w", sl.path, err)
		}
	}
}

// open prepares sl for a request: checks that it is empty, reads the
// cumulative statistics to subtract and resets the memory peak.
func (p *cgPool) open(sl *cgSlot) (*Cgroup, error) {
	if !sl.fdsOpen {
		if err := sl.openFDs(); err != nil {
			return nil, err
		}
	}
	fd := sl.dirfd
	cg := &Cgroup{path: sl.path, dirfd: fd, events: sl.events, peak: -1, memory: p.memory, pids: p.pids, pool: p, slot: sl}
	populated, frozen, err := readEvents(cg.events)
	if err == nil && (populated || frozen) {
		err = errCgroupBusy
	}
	if err != nil {
		cg.close()
		return nil, err
	}
	used := sl.uses > 0
	if used {
		if sl.haveLast {
			cg.base = sl.last
		} else {
			cg.base = readCumulative(fd, sl.cpuStat, p.memory)
		}
	}
	if p.memory {
		if err := cg.openPeak(used); err != nil {
			cg.close()
			return nil, err
		}
	}
	sl.uses++
	return cg, nil
}

// openPeak opens memory.peak for the request. On a cgroup that served
// before, the peak seen through the descriptor is reset (Linux 6.12);
// where the kernel cannot, the cgroup is not handed out (nor kept: see
// reuseBlocker).
func (cg *Cgroup) openPeak(reset bool) error {
	fd, err := unix.Openat(cg.dirfd, "memory.peak", unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT: // no memory.peak (before Linux 5.19): nothing to reset
		cg.peakPerRequest = true
		return nil
	case err != nil: // read-only: no per-descriptor reset
		if reset {
			return fmt.Errorf("memory.peak cannot be reset: %w", err)
		}
		return nil // read by name at the end: the whole life of a new cgroup
	}
	if reset {
		if err := writeFd(fd, "reset"); err != nil {
			unix.Close(fd)
			return fmt.Errorf("resetting memory.peak: %w", err)
		}
	}
	cg.peak, cg.peakPerRequest = fd, true
	return nil
}

// setLimits sets the limit files of cg to the values of apply and the
// others that an earlier request set back to a new cgroup's. It returns
// the files the kernel lacks when bestEffort; slotErr is true when the
// cgroup itself is at fault (a file could not be set back).
func (cg *Cgroup) setLimits(apply []cgroupLimit, bestEffort bool) (downgraded []string, slotErr bool, err error) {
	sl := cg.slot
	want := make(map[string]string, len(apply))
	for _, l := range apply {
		want[l.file] = limitValue(l)
	}
	for file := range sl.limits {
		if _, ok := want[file]; ok {
			continue
		}
		if err := writeAt(cg.dirfd, file, cgDefaultLimits[file]); err != nil {
			return nil, true, fmt.Errorf("sandbox: cgroup %s: setting %s back to %q: %w", cg.path, file, cgDefaultLimits[file], err)
		}
		delete(sl.limits, file)
	}
	for _, l := range apply {
		v := want[l.file]
		cur, set := sl.limits[l.file]
		if !set {
			cur = cgDefaultLimits[l.file]
		}
		if cur == v {
			continue
		}
		err := writeAt(cg.dirfd, l.file, v)
		switch {
		case err == nil:
			if v == cgDefaultLimits[l.file] {
				delete(sl.limits, l.file)
			} else {
				if sl.limits == nil {
					sl.limits = map[string]string{}
				}
				sl.limits[l.file] = v
			}
		case err == unix.ENOENT && bestEffort:
			downgraded = append(downgraded, l.file)
		case err == unix.ENOENT:
			why := "the kernel does not provide " + l.file
			if l.file == "memory.swap.max" {
				why += " (no swap accounting)"
			}
			return nil, false, &UnsupportedError{Missing: []string{l.file}, Reason: why}
		default:
			return nil, false, fmt.Errorf("sandbox: cgroup %s = %q: %w", l.file, v, err)
		}
	}
	return downgraded, false, nil
}

// limitValue is the value written for l: a lone cpu.max quota gets the
// default period, which a new cgroup has and a reused one may not.
func limitValue(l cgroupLimit) string {
	if l.file == "cpu.max" {
		if f := strings.Fields(l.value); len(f) == 1 {
			return f[0] + " 100000"
		}
	}
	return l.value
}

// unused gives back a cgroup handed out for a child that was never
// started (a spec the kernel cannot enforce): nothing ran in it.
func (cg *Cgroup) unused() {
	cg.close()
	cg.pool.put(cg.slot, true)
}

// close closes the request's descriptors; those of its slot stay open
// with the slot (see cgSlot), and are the slot's to close.
func (cg *Cgroup) close() {
	fds := []*int{&cg.peak, &cg.events, &cg.dirfd}
	if cg.slot != nil && cg.slot.fdsOpen {
		fds = fds[:1]
		cg.events, cg.dirfd = -1, -1
	}
	for _, fd := range fds {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// cgCumulative are the statistics a cgroup accumulates over its life.
type cgCumulative struct {
	cpuUsec  int64 // cpu.stat usage_usec
	oomKills int64 // memory.events oom_kill
}

// since returns the growth from base (never negative).
func (c cgCumulative) since(base cgCumulative) cgCumulative {
	return cgCumulative{cpuUsec: max(0, c.cpuUsec-base.cpuUsec), oomKills: max(0, c.oomKills-base.oomKills)}
}

// readCumulative reads the cumulative statistics of the cgroup dirfd
// (memory.events only with the memory controller), cpu.stat through
// cpuStat when it is open (>= 0); missing files read as 0.
func readCumulative(dirfd, cpuStat int, memory bool) cgCumulative {
	var c cgCumulative
	if cpuStat >= 0 {
		if b, err := preadAll(cpuStat); err == nil {
			c.cpuUsec = keyedValue(b, "usage_usec")
		}
	} else if b, err := readAt(dirfd, "cpu.stat"); err == nil {
		c.cpuUsec = keyedValue(b, "usage_usec")
	}
	if memory {
		if b, err := readAt(dirfd, "memory.events"); err == nil {
			c.oomKills = keyedValue(b, "oom_kill")
		}
	}
	return c
}

// readInt reads a single-value file of the cgroup dirfd; ok is false
// when it cannot be read.
func readInt(dirfd int, name string) (n int64, ok bool) {
	b, err := readAt(dirfd, name)
	if err != nil {
		return 0, false
	}
	n, err = strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return n, err == nil
}

// readPeak reads the request's memory peak.
func (cg *Cgroup) readPeak() int64 {
	if cg.peak < 0 {
		n, _ := readInt(cg.dirfd, "memory.peak")
		return n
	}
	var buf [32]byte
	for {
		n, err := unix.Pread(cg.peak, buf[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0
		}
		v, _ := strconv.ParseInt(string(bytes.TrimSpace(buf[:n])), 10, 64)
		return v
	}
}

// cgLeft is what a cgroup's request left in it, read after the request:
// what decides whether it may serve another one.
type cgLeft struct {
	memory, pids bool // controllers enabled
	pidsPeak     int64
	// peakPerRequest: memory.peak is absent or was read through a
	// descriptor that can be reset for the next request.
	peakPerRequest bool
	memCurrent     int64 // memory.current
	swapCurrent    int64 // memory.swap.current (0 without swap accounting)
	frozen         bool  // cgroup.events
	changed        bool  // sub-cgroups, other mode or owner
	killed         bool  // cgroup.kill was written
}

// reuseBlocker says why a cgroup that emptied may not serve another
// request ("" when it may), memLeftMax being the memory it may keep
// charged.
func reuseBlocker(l cgLeft, memLeftMax int64) string {
	switch {
	case l.killed:
		return "killed (cgroup.kill)"
	case l.frozen:
		return "frozen"
	case l.changed:
		return "changed (sub-cgroups, mode or owner)"
	case l.pids && l.pidsPeak > 1:
		return "pids.peak " + strconv.FormatInt(l.pidsPeak, 10) + " cannot be reset"
	case l.memory && !l.peakPerRequest:
		return "memory.peak cannot be reset"
	case l.memory && l.memCurrent > memLeftMax:
		return "memory left charged: " + strconv.FormatInt(l.memCurrent, 10)
	case l.memory && l.swapCurrent > 0:
		return "swap left charged: " + strconv.FormatInt(l.swapCurrent, 10)
	}
	return ""
}

// left reads what the request left in the emptied cgroup.
func (cg *Cgroup) left(pidsPeak int64) cgLeft {
	l := cgLeft{memory: cg.memory, pids: cg.pids, pidsPeak: pidsPeak, peakPerRequest: cg.peakPerRequest, killed: cg.killSent}
	if cg.empty {
		// KillRest read the flags after the last exit. Whatever freezes
		// the cgroup since, its next hand-out reads them again (open).
		l.frozen = cg.emptyFrozen
	} else {
		_, frozen, err := readEvents(cg.events)
		l.frozen = frozen || err != nil
	}
	var st unix.Stat_t
	sl := cg.slot
	l.changed = unix.Fstat(cg.dirfd, &st) != nil || st.Nlink != 2 || st.Mode != sl.mode || st.Uid != sl.uid || st.Gid != sl.gid
	if cg.memory {
		l.memCurrent, _ = readInt(cg.dirfd, "memory.current")
		l.swapCurrent, _ = readInt(cg.dirfd, "memory.swap.current")
	}
	return l
}

// release ends the request's use of the cgroup: back to the pool when it
// emptied and may serve again, else removed (in the background; once
// empty if it did not empty).
func (cg *Cgroup) release(drained bool, pidsPeak int64) {
	if !drained {
		cg.close()
		cg.slot.closeFDs()
		cg.pool.linger.add(cg.path)
		return
	}
	reuse := reuseBlocker(cg.left(pidsPeak), cg.pool.memLeftMax) == ""
	cg.close()
	cg.pool.put(cg.slot, reuse)
}

// readEvents reads the populated and frozen flags of the cgroup.events
// file fd.
func readEvents(fd int) (populated, frozen bool, err error) {
	var buf [128]byte
	for {
		n, err := unix.Pread(fd, buf[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, false, err
		}
		b := buf[:n]
		return !bytes.Contains(b, []byte("populated 0")), bytes.Contains(b, []byte("frozen 1")), nil
	}
}

// writeFd writes value to the open file fd.
func writeFd(fd int, value string) error {
	for {
		_, err := unix.Write(fd, []byte(value))
		if err != unix.EINTR {
			return err
		}
	}
}

// Figures of the pool, for tests and reports.

// PoolCounts returns how many cgroups m's pool made, handed out again and
// removed, and how many are idle.
func (m *Manager) PoolCounts() (created, reused, removed, idle int) {
	return m.pool().counts()
}

// PoolIdle reports whether the cgroup at path waits idle in m's pool.
func (m *Manager) PoolIdle(path string) bool {
	p := m.pool()
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.ContainsFunc(p.idle, func(sl *cgSlot) bool { return sl.path == path })
}

// SetPoolSize changes how many idle cgroups m's pool makes ahead (min)
// and keeps at most (max); min 0, max 1 makes every request reuse the
// cgroup of the one before, when it may.
func (m *Manager) SetPoolSize(min, max int) {
	p := m.pool()
	p.mu.Lock()
	p.min, p.max = min, max
	p.mu.Unlock()
}

// Lingering returns how many cgroups are being removed in the background.
func (m *Manager) Lingering() int {
	n := 0
	m.linger.m.Range(func(any, any) bool { n++; return true })
	return n
}

// PoolMax is how many idle cgroups a pool keeps at most by default,
// each holding three descriptors (see cgSlot).
const PoolMax = cgPoolMax

// Prefix starts the name of every request cgroup: req-<server pid>-<n>.
const Prefix = cgroupPrefix

// Remove kills what is in the cgroup dir and removes it, its sub-cgroups
// first, waiting up to timeout for it to empty; if it does not, the
// removal goes on in the background.
func Remove(dir string, timeout time.Duration) {
	(&lingerSet{}).removeCgroup(dir, timeout)
}

// Locate returns the cgroup2 mount point and the calling process's
// cgroup directory.
func Locate() (mount, own string, err error) {
	loc, err := locateCgroup2()
	if err != nil {
		return "", "", err
	}
	return loc.mount, loc.own, nil
}

// DirOf returns the directory of the cgroup that procCgroup (the
// contents of a /proc/PID/cgroup) names, on the calling process's cgroup2
// mount.
func DirOf(procCgroup string) (string, error) {
	loc, err := locateCgroup2()
	if err != nil {
		return "", err
	}
	l, err := findCgroup2("0 0 0:0 "+loc.root+" "+loc.mount+" rw - cgroup2 cgroup2 rw\n", procCgroup)
	if err != nil {
		return "", err
	}
	return l.own, nil
}

// preadAll reads the whole of the open file fd from its start (a
// cgroup's flat-keyed file: small). A cgroup file's read is made from
// one rendering of it, so a read that does not fill the buffer has all of
// it: no second read for the end of the file.
func preadAll(fd int) ([]byte, error) {
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := unix.Pread(fd, b[len(b):cap(b)], int64(len(b)))
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
		if len(b) < cap(b) {
			return b, nil
		}
	}
}
