package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
)

// cgroupRemoved waits up to timeout for the cgroup at path to be gone.
func cgroupRemoved(path string, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// pooledIdle reports whether path is idle in the pool of the setup in
// force.
func pooledIdle(path string) bool { return testSpawner.cgroups.PoolIdle(path) }

// populated reports whether the cgroup at path holds a process.
func populated(path string) bool {
	return !strings.Contains(readString(filepath.Join(path, "cgroup.events")), "populated 0")
}

// cgroupReleased waits up to timeout for the cgroup of a finished request
// to be either removed or idle in the pool, and empty.
func cgroupReleased(path string, timeout time.Duration) error {
	for end := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		_, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil
		case pooledIdle(path):
			if populated(path) {
				return fmt.Errorf("idle cgroup %s holds %v", path, readPids(filepath.Join(path, "cgroup.procs")))
			}
			return nil
		case time.Now().After(end):
			return fmt.Errorf("cgroup %s neither removed nor idle in the pool: %v", path, err)
		}
	}
}

// ownPool gives the test a setup of its own, with a pool of min and max
// idle cgroups; min 0, max 1 makes every request reuse the cgroup of the
// one before, when it may. Not for parallel tests.
func ownPool(t *testing.T, min, max int) *cgroup.Manager {
	t.Helper()
	r := needCgroups(t)
	withCgroups(t, CgroupOptions{Parent: r.Parent})
	m := testSpawner.cgroups
	m.SetPoolSize(min, max)
	return m
}

// The same cgroup serves one request after another; each finds it empty,
// gets its own statistics, and leaves it empty and idle.
func TestCgroupReuse(t *testing.T) {
	p := ownPool(t, 0, 1)
	specs := []*Spec{
		{Path: "/bin/true", Args: []string{"true"}},
		{Path: "/bin/true", Args: []string{"true"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}},
		{Path: "/bin/sh", Args: []string{"sh", "-c", "exit 3"}, Cgroup: &CgroupSpec{}},
	}
	if os.Geteuid() == 0 {
		specs = append(specs, fullCgroupSpec("/bin/true", []string{"true"}))
	}
	const n = 20
	var first string
	for i := range n {
		spec := specs[i%len(specs)]
		proc, err := testSpawner.Start(spec)
		if err != nil {
			t.Fatal(err)
		}
		r := collect(t, proc)
		if i == 0 {
			first = r.state.Cgroup.Path
		}
		if r.state.Cgroup.Path != first || r.state.Cgroup.Killed != 0 || r.state.Cgroup.Lingering {
			t.Errorf("request %d: %+v, want the cgroup %s again", i, r.state.Cgroup, first)
		}
		if want := map[bool]int{true: 3, false: 0}[spec.Path == "/bin/sh"]; r.state.ExitCode != want {
			t.Errorf("request %d: %+v (stderr %q)", i, r.state, r.stderr)
		}
		if !pooledIdle(first) || populated(first) {
			t.Errorf("after request %d: %s idle %v, populated %v", i, first, pooledIdle(first), populated(first))
		}
	}
	created, reused, _, idle := p.PoolCounts()
	if created != 1 || reused != n-1 || idle != 1 {
		t.Errorf("pool: %d made, %d handed out again, %d idle; want 1, %d, 1", created, reused, idle, n-1)
	}
}

// The CPU time of a request in a reused cgroup is its own, not the
// cgroup's total.
func TestCgroupReuseCPU(t *testing.T) {
	ownPool(t, 0, 1)
	burn, burnArgs := sh(`i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`)
	p := mustStart(t, &Spec{Path: burn, Args: burnArgs})
	r1 := collect(t, p)
	p = mustStart(t, &Spec{Path: "/bin/true", Args: []string{"true"}})
	r2 := collect(t, p)
	c1, c2 := r1.state.Cgroup, r2.state.Cgroup
	t.Logf("burner: %v in %s; true: %v in %s", c1.CPU, c1.Path, c2.CPU, c2.Path)
	if c1.Path != c2.Path {
		t.Fatalf("not reused: %s, then %s", c1.Path, c2.Path)
	}
	if c1.CPU < 50*time.Millisecond {
		t.Errorf("burner CPU %v: the test proves nothing", c1.CPU)
	}
	if c2.CPU <= 0 || c2.CPU > 20*time.Millisecond {
		t.Errorf("true's CPU %v after the burner's %v in the same cgroup", c2.CPU, c1.CPU)
	}
	// The cgroup's own counter holds both.
	total := cpuUsage(t, c1.Path)
	if sum := (c1.CPU + c2.CPU).Microseconds(); total < sum {
		t.Errorf("cpu.stat usage_usec %d < %d, the sum of the requests'", total, sum)
	}
}

func mustOpenDir(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// A request that leaves an escapee (setsid, in the background) has it
// killed by Wait, with the kill counted for that request only; its
// cgroup, killed, is never reused (a kernel that kills every child
// cloned into a cgroup once killed: see internal/cgroup/pool.go). A cgroup that
// served a request that Kill ended is not reused either. Kill counts are
// per request.
func TestCgroupReuseAfterEscapee(t *testing.T) {
	p := ownPool(t, 0, 1)
	clean := func() CgroupStats {
		t.Helper()
		proc := mustStart(t, &Spec{Path: "/bin/true", Args: []string{"true"}})
		r := collect(t, proc)
		if r.state.ExitCode != 0 || r.state.Cgroup.Killed != 0 {
			t.Errorf("true: %+v", r.state)
		}
		return r.state.Cgroup
	}
	c0 := clean()
	path, args := escapeScript("read x; exit 0") // exits when stdin closes
	proc := mustStart(t, &Spec{Path: path, Args: args})
	esc := readPid(t, proc.Stdout)
	if proc.Cgroup.Path != c0.Path {
		t.Fatalf("the escapee's request got %s, not the idle %s", proc.Cgroup.Path, c0.Path)
	}
	proc.Stdin.Close()
	st, err := proc.Wait()
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("leader: %+v %v", st, err)
	}
	if !goneNow(esc) {
		t.Errorf("escapee %d outlived Wait", esc)
		unix.Kill(esc, unix.SIGKILL)
	}
	if st.Cgroup.Killed != 1 || st.Cgroup.Lingering {
		t.Errorf("escapee's request: %+v, want 1 killed", st.Cgroup)
	}
	if pooledIdle(c0.Path) {
		t.Errorf("killed cgroup %s back in the pool", c0.Path)
	}
	c1 := clean()
	if c1.Path == c0.Path {
		t.Errorf("killed cgroup %s reused", c0.Path)
	}
	if !cgroupRemoved(c0.Path, 5*time.Second) {
		t.Errorf("killed cgroup %s not removed", c0.Path)
	}
	if c2 := clean(); c2.Path != c1.Path {
		t.Errorf("clean cgroup %s not reused (got %s)", c1.Path, c2.Path)
	}

	// Ended by Kill: not reused.
	proc = mustStart(t, &Spec{Path: "/bin/sleep", Args: []string{"sleep", "1000"}})
	if proc.Cgroup.Path != c1.Path {
		t.Fatalf("got %s, not the idle %s", proc.Cgroup.Path, c1.Path)
	}
	proc.Kill()
	r := collect(t, proc)
	if r.state.Signal != syscall.SIGKILL || r.state.Cgroup.Killed != 1 {
		t.Errorf("killed sleep: %+v", r.state)
	}
	if c3 := clean(); c3.Path == c1.Path {
		t.Errorf("killed cgroup %s reused", c1.Path)
	}
	created, reused, _, _ := p.PoolCounts()
	t.Logf("pool: %d made, %d handed out again", created, reused)
}

// An idle cgroup that holds a process at hand-out (put there behind the
// pool's back) is not handed out: it is killed and removed, and the
// request gets another.
func TestCgroupHandOutChecksEmpty(t *testing.T) {
	needRoot(t)
	p := ownPool(t, 0, 1)
	r := collect(t, mustStart(t, &Spec{Path: "/bin/true", Args: []string{"true"}}))
	idle := r.state.Cgroup.Path
	if !pooledIdle(idle) {
		t.Fatalf("%s not idle", idle)
	}
	fd := mustOpenDir(t, idle)
	intruder := exec.Command("/bin/sleep", "1000")
	intruder.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Setsid: true}
	if err := intruder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { intruder.Process.Kill(); intruder.Wait() })
	r = collect(t, mustStart(t, &Spec{Path: "/bin/true", Args: []string{"true"}}))
	if r.state.Cgroup.Path == idle || r.state.ExitCode != 0 {
		t.Errorf("handed out %s, which holds the intruder: %+v", r.state.Cgroup.Path, r.state)
	}
	done := make(chan error, 1)
	go func() { done <- intruder.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("intruder: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the intruder survives in the cgroup taken out of the pool")
	}
	if !cgroupRemoved(idle, 5*time.Second) {
		t.Errorf("%s not removed", idle)
	}
	if _, _, removed, _ := p.PoolCounts(); removed != 1 {
		t.Errorf("%d removed, want 1", removed)
	}
}

// Concurrent spawns share the pool without handing a cgroup to two
// requests at once: every child finds its cgroup holding itself only.
func TestCgroupPoolConcurrent(t *testing.T) {
	p := ownPool(t, 2, 4)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				proc, err := testSpawner.Start(&Spec{Path: "/bin/sleep", Args: []string{"sleep", "0.005"}})
				if err != nil {
					t.Error(err)
					return
				}
				cg := proc.Cgroup.Path
				if procs := readPids(filepath.Join(cg, "cgroup.procs")); len(procs) > 1 || len(procs) == 1 && procs[0] != proc.Pid {
					t.Errorf("%s holds %v, child %d", cg, procs, proc.Pid)
				}
				r := collect(t, proc)
				if r.state.ExitCode != 0 || r.state.Cgroup.Path != cg || r.state.Cgroup.Killed != 0 {
					t.Errorf("child: %+v", r.state)
				}
			}
		}()
	}
	wg.Wait()
	created, reused, removed, idle := p.PoolCounts()
	t.Logf("pool: %d made, %d handed out again, %d removed, %d idle", created, reused, removed, idle)
	if reused < workers*each/2 {
		t.Errorf("only %d of %d hand-outs reused a cgroup", reused, workers*each)
	}
}
