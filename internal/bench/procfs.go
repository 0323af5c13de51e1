package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procStats are a process's figures read from /proc.
type procStats struct {
	RSSKiB  int64
	FDs     int
	Threads int
}

// readProcStats reads VmRSS and Threads from /proc/PID/status and counts
// /proc/PID/fd.
func readProcStats(pid int) (procStats, error) {
	var s procStats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range bytes.Lines(b) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(val)
		if len(f) == 0 {
			continue
		}
		switch string(key) {
		case "VmRSS":
			s.RSSKiB, _ = strconv.ParseInt(string(f[0]), 10, 64)
		case "Threads":
			s.Threads, _ = strconv.Atoi(string(f[0]))
		}
	}
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(4096)
		s.FDs += len(names)
		if err != nil || len(names) == 0 {
			break
		}
	}
	return s, nil
}

// children returns the pids of pid's children, from the children files of
// all its threads (/proc/PID/task/TID/children), or, on kernels without
// them, by scanning every /proc/N/stat for the parent pid. buf is reused
// between calls: a server with thousands of threads has as many files.
func children(pid int, buf *[]byte) ([]int, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	tids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	var out []int
	seen := false
	for _, tid := range tids {
		b, err := readSmall(dir+tid+"/children", buf)
		if err != nil {
			if errors.Is(err, unix.ENOENT) && !seen {
				if _, err := os.Stat(dir + tid); err == nil {
					return childrenByScan(pid) // no children files
				}
			}
			continue // the thread exited
		}
		seen = true
		for _, f := range bytes.Fields(b) {
			if n, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// readSmall reads a whole /proc file into *buf (grown as needed) with the
// fewest system calls: open, read until EOF, close.
func readSmall(path string, buf *[]byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if len(*buf) == 0 {
		*buf = make([]byte, 4<<10)
	}
	n := 0
	for {
		if n == len(*buf) {
			*buf = append(*buf, make([]byte, len(*buf))...)
		}
		m, err := unix.Read(fd, (*buf)[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return (*buf)[:n], nil
		}
		n += m
	}
}

// threadsTotal returns the number of threads on the system, the fourth
// field of /proc/loadavg ("0.01 0.05 0.10 2/611 4242"): one read, a cheap
// hint that many processes have started or ended.
func threadsTotal() int {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := bytes.Fields(b)
	if len(f) < 4 {
		return -1
	}
	_, tot, ok := bytes.Cut(f[3], []byte("/"))
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(string(tot))
	if err != nil {
		return -1
	}
	return n
}

func childrenByScan(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := parentOf(n); err == nil && pp == pid {
			out = append(out, n)
		}
	}
	return out, nil
}

// parentOf returns the parent pid from /proc/PID/stat.
func parentOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, errors.New("bad stat")
	}
	return strconv.Atoi(string(f[1]))
}

// comm returns /proc/PID/comm without the newline.
func (pc *programCounter) commOfPID(pid int) string {
	b, err := readSmall("/proc/"+strconv.Itoa(pid)+"/comm", &pc.buf)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSuffix(b, []byte("\n")))
}

// commOf is the comm the kernel gives a process that executed path: its
// base name, cut to 15 bytes.
func commOf(path string) string {
	c := filepath.Base(path)
	if len(c) > 15 {
		c = c[:15]
	}
	return c
}

// programCounter counts the descendants of a server that run a given
// program. A child is looked through (for a helper that forks the
// program) down to maxDepth levels while its comm does not match. Matches
// are cached, so each poll reads only the new children's comm files.
type programCounter struct {
	pid     int
	comm    string
	matched map[int]bool
	buf     []byte
}

const maxDepth = 3

func newProgramCounter(pid int, program string) *programCounter {
	return &programCounter{pid: pid, comm: commOf(program), matched: make(map[int]bool)}
}

// running returns the pids running the program now.
func (pc *programCounter) running() (map[int]bool, error) {
	now := make(map[int]bool)
	var walk func(pid, depth int) error
	walk = func(pid, depth int) error {
		kids, err := children(pid, &pc.buf)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if pc.matched[k] {
				now[k] = true
				continue
			}
			if pc.commOfPID(k) == pc.comm {
				now[k] = true
				continue
			}
			if depth < maxDepth {
				walk(k, depth+1) // it may have exited meanwhile
			}
		}
		return nil
	}
	if err := walk(pc.pid, 1); err != nil {
		return nil, err
	}
	pc.matched = now
	return now, nil
}

// waitFor polls until done(n) holds, n being the number of descendants
// running the program that are not in before, or until the deadline; it
// returns the last n.
//
// A walk of the server's descendants reads one file per server thread
// (sockwarden has one per running child), which would perturb the server
// if done continuously. So between walks it watches the system's thread
// total, a single read, and walks again only when that total has moved by
// at least need(n) since the last walk (the change done is waiting for),
// or when the last walk is older than max(walkEvery, 10 times its cost).
func (pc *programCounter) waitFor(ctx context.Context, deadline time.Time, before map[int]bool, need func(n int) int, done func(n int) bool) (int, error) {
	var (
		n        int
		total    = -1
		lastWalk time.Time
		cost     time.Duration
	)
	for {
		tot := threadsTotal()
		moved := tot - total
		if moved < 0 {
			moved = -moved
		}
		now := time.Now()
		if lastWalk.IsZero() || tot < 0 || moved >= need(n) || now.After(deadline) ||
			now.Sub(lastWalk) >= max(walkEvery, 10*cost) {
			running, err := pc.running()
			if err != nil {
				return n, err
			}
			lastWalk = time.Now()
			cost = lastWalk.Sub(now)
			total = tot
			n = countNew(running, before)
			if done(n) || now.After(deadline) {
				return n, nil
			}
		}
		if err := sleepCtx(ctx, idlePoll); err != nil {
			return n, err
		}
	}
}

// countNew counts the pids of now not in before.
func countNew(now, before map[int]bool) int {
	n := 0
	for p := range now {
		if !before[p] {
			n++
		}
	}
	return n
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// processCPU returns the user and system CPU time process pid has spent,
// over all its threads (living and exited), from /proc/PID/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: the fields
	// start after the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}
