package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dynamic uids.
//
// A spec with DynamicUser runs its child as a uid (and the gid of the
// same number, without supplementary groups) of its own, taken from the
// Spawner's [UIDRange] for the child's lifetime, as systemd's
// DynamicUser= does: no two live children share one, so RLIMIT_NPROC,
// the user keyring, signals, ptrace, /proc and file ownership are per
// request. A uid goes back to the pool when its child has been waited
// for, once nothing of the request is left: its cgroup empty (without
// cgroups, every process of the uid killed), and its System V IPC
// objects and its files in /dev/shm and /dev/mqueue removed. The pool
// hands out the uid unused the longest, so a uid is reused as late as
// possible. Servers on one host may share a range: a uid in use is
// locked (flock(2) on a file of its own in [UIDLockDir]) for as long as
// its request lives, and a server skips the uids another one holds.

// UIDLockDir holds a lock file per dynamic uid in use.
const UIDLockDir = "/run/sockwarden/dynamic-uids"

// DefaultUIDRange is systemd's range for dynamic users.
var DefaultUIDRange = UIDRange{First: 61184, Last: 65519}

// UIDRange is an inclusive range of uids.
type UIDRange struct{ First, Last uint32 }

// ParseUIDRange parses "FIRST-LAST".
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if !ok || err1 != nil || err2 != nil || first == 0 || last < first || last >= 1<<31 {
		return UIDRange{}, fmt.Errorf("%q is not a uid range FIRST-LAST (0 < FIRST <= LAST < 2^31)", s)
	}
	return UIDRange{uint32(first), uint32(last)}, nil
}

// String returns "FIRST-LAST".
func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// ErrNoDynamicUID is returned by [Spawner.Start] for a DynamicUser spec
// when every uid of the range is in use.
var ErrNoDynamicUID = errors.New("sandbox: every dynamic uid is in use")

// uidPool hands out the uids of a range.
type uidPool struct {
	mu    sync.Mutex
	r     UIDRange
	dir   string               // lock files
	free  []uint32             // least recently released first
	busy  map[uint32]*lockFile // in use, with its lock
	stuck map[uint32]*lockFile // processes of the uid outlived their request (with its lock, if ours)
	shm   sharedDir            // /dev/shm
}

// newUIDPool checks r against /etc/passwd (a user in the range is an
// error) and against the running processes (their uids are kept out of
// the pool, and returned to say so).
func newUIDPool(r UIDRange, dir string) (*uidPool, []uint32, error) {
	if r.First == 0 {
		return nil, nil, nil
	}
	if err := checkPasswd("/etc/passwd", r); err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("sandbox: dynamic uids: %w", err)
	}
	p := &uidPool{r: r, dir: dir, busy: map[uint32]*lockFile{}, stuck: map[uint32]*lockFile{}, shm: newSharedDir("/dev/shm")}
	running := processUIDs(r)
	for uid := r.First; ; uid++ {
		if running[uid] {
			p.stuck[uid] = nil
		} else {
			p.free = append(p.free, uid)
		}
		if uid == r.Last {
			break
		}
	}
	var held []uint32
	for uid := range p.stuck {
		held = append(held, uid)
	}
	return p, held, nil
}

func checkPasswd(path string, r UIDRange) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("sandbox: dynamic uids: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 {
			continue
		}
		for _, id := range fields[2:4] {
			if n, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(n) >= r.First && uint32(n) <= r.Last {
				return fmt.Errorf("sandbox: dynamic uids %v: %s has user %q with id %d in the range", r, path, fields[0], n)
			}
		}
	}
	return sc.Err()
}

// processUIDs returns the uids in r that running processes have (the
// owner of /proc/PID, their effective uid).
func processUIDs(r UIDRange) map[uint32]bool {
	out := map[uint32]bool{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) == nil && st.Uid >= r.First && st.Uid <= r.Last {
			out[st.Uid] = true
		}
	}
	return out
}

func (p *uidPool) acquire() (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		p.retryStuck()
	}
	// Each free uid at most once: one another server holds goes to the
	// back of the queue.
	for range len(p.free) {
		uid := p.free[0]
		p.free = p.free[1:]
		lock, err := p.lock(uid)
		if err == nil {
			p.busy[uid] = lock
			return uid, nil
		}
		p.free = append(p.free, uid)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return 0, err
		}
	}
	return 0, ErrNoDynamicUID
}

// lockFile is a held lock: the descriptor of a uid's lock file, locked.
// A plain descriptor: an *os.File would cost an fcntl and a refused
// epoll registration at every request.
type lockFile struct{ fd int }

// Close releases the lock.
func (l *lockFile) Close() error { return unix.Close(l.fd) }

// lock takes the lock file of uid.
func (p *uidPool) lock(uid uint32) (*lockFile, error) {
	fd, err := unix.Open(filepath.Join(p.dir, strconv.FormatUint(uint64(uid), 10)), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: dynamic uid lock: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &lockFile{fd}, nil
}

// retryStuck frees the stuck uids whose processes are gone.
func (p *uidPool) retryStuck() {
	if len(p.stuck) == 0 {
		return
	}
	running := processUIDs(p.r)
	for uid, lock := range p.stuck {
		if !running[uid] {
			if lock != nil {
				lock.Close()
			}
			delete(p.stuck, uid)
			p.free = append(p.free, uid)
		}
	}
}

// release cleans up after the request of uid and puts it back; hadCgroup
// says whether the request's cgroup (now empty) held all its processes,
// privateIPC whether its IPC objects died with its namespace.
func (p *uidPool) release(uid uint32, hadCgroup, privateIPC bool) {
	clean := true
	if !hadCgroup {
		clean = killUID(uid)
	}
	if !privateIPC {
		removeSysVIPC(uid)
	}
	if !p.shm.empty() {
		removeOwned(p.shm.path, uid)
	}
	removeOwned("/dev/mqueue", uid)
	p.mu.Lock()
	defer p.mu.Unlock()
	lock := p.busy[uid]
	delete(p.busy, uid)
	if clean {
		if lock != nil {
			lock.Close()
		}
		p.free = append(p.free, uid)
	} else {
		p.stuck[uid] = lock // still ours until its processes are gone
	}
}

// killUID kills every process of uid and reports whether none is left.
func killUID(uid uint32) bool {
	for range 3 {
		ents, _ := os.ReadDir("/proc")
		found := false
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Stat("/proc/"+e.Name(), &st) == nil && st.Uid == uid {
				found = true
				unix.Kill(pid, syscall.SIGKILL)
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// removeSysVIPC removes the System V shared memory segments, semaphore
// sets and message queues that uid owns or created (in the server's IPC
// namespace), as systemd's RemoveIPC= does.
func removeSysVIPC(uid uint32) {
	for _, k := range []struct {
		file   string
		idCol  int
		uidCol []int
		rm     func(id int)
	}{
		// Columns of /proc/sysvipc/*: key id perms ... uid gid cuid cgid.
		{"shm", 1, []int{7, 9}, func(id int) { unix.SysvShmCtl(id, unix.IPC_RMID, nil) }},
		{"sem", 1, []int{4, 6}, func(id int) { unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID, 0, 0, 0) }},
		{"msg", 1, []int{7, 9}, func(id int) { unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_RMID, 0) }},
	} {
		b, err := os.ReadFile("/proc/sysvipc/" + k.file)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] {
			f := strings.Fields(line)
			if len(f) <= k.uidCol[1] {
				continue
			}
			for _, c := range k.uidCol {
				if f[c] == strconv.FormatUint(uint64(uid), 10) {
					if id, err := strconv.Atoi(f[k.idCol]); err == nil {
						k.rm(id)
					}
					break
				}
			}
		}
	}
}

// sharedDir is a directory where every uid may leave files, and the
// device of its tmpfs, if it is one (else 0).
type sharedDir struct {
	path string
	dev  uint64
}

// tmpfsDirent is the size a tmpfs directory counts per entry, "." and
// ".." included: an empty one is 40 bytes.
const tmpfsDirent = 20

func newSharedDir(path string) sharedDir {
	var fs unix.Statfs_t
	var st unix.Stat_t
	if unix.Statfs(path, &fs) != nil || fs.Type != unix.TMPFS_MAGIC || unix.Stat(path, &st) != nil {
		return sharedDir{path: path}
	}
	return sharedDir{path: path, dev: st.Dev}
}

// empty reports whether d is an empty directory of the tmpfs it was on
// when the pool was made, with one stat(2) rather than the open, two
// getdents(2) and close of a listing. Another file system mounted there
// since has another device, and is listed.
func (d sharedDir) empty() bool {
	var st unix.Stat_t
	return d.dev != 0 && unix.Stat(d.path, &st) == nil && st.Dev == d.dev && st.Size == 2*tmpfsDirent
}

// removeOwned removes the entries of dir that uid owns (POSIX shared
// memory and message queues).
func removeOwned(dir string, uid uint32) {
	// Raw system calls: os.ReadDir would add an fcntl and a refused
	// epoll registration, at every request.
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	unix.Close(fd)
	for _, name := range names {
		var st unix.Stat_t
		path := filepath.Join(dir, name)
		if unix.Lstat(path, &st) == nil && st.Uid == uid {
			os.RemoveAll(path)
		}
	}
}
