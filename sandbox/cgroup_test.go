package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
)

// testCgroupParent is where this test binary's request cgroups go: a
// cgroup of its own, removed at the end (see setupTestCgroups).
var testCgroupParent string

// testSpawner is the Spawner the tests start children with: made by
// setupTestCgroups, replaced for the rest of a test by withCgroups.
var testSpawner *Spawner

// newTestSpawner returns a Spawner closed at the end of the test.
func newTestSpawner(t testing.TB, o Options) *Spawner {
	t.Helper()
	sp, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// setupTestCgroups makes testSpawner, whose request cgroups (and those
// of the helper processes this test binary runs, through
// SANDBOX_TEST_CGROUP) go under a parent of this run,
// sandbox-test-PID in the test's own cgroup, so that no test touches the
// default parent. It returns the function that removes that parent and
// everything in it. SANDBOX_TEST_CGROUP=none leaves the defaults (for
// helpers that test them).
func setupTestCgroups() func() {
	parent := os.Getenv("SANDBOX_TEST_CGROUP")
	if parent == "none" {
		// The helper makes the Spawner it tests.
		testSpawner = mustNew(Options{Cgroups: CgroupOptions{Disabled: true}})
		return func() { testSpawner.Close() }
	}
	owner := parent == ""
	if owner {
		_, own, err := cgroup.Locate()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sandbox tests run without cgroups:", err)
			testSpawner = mustNew(Options{Cgroups: CgroupOptions{Disabled: true}})
			return func() { testSpawner.Close() }
		}
		// Parents of earlier runs that died before removing theirs.
		if ents, err := os.ReadDir(own); err == nil {
			for _, e := range ents {
				if p, ok := strings.CutPrefix(e.Name(), "sandbox-test-"); ok {
					if pid, err := strconv.Atoi(p); err == nil && unix.Kill(pid, 0) == unix.ESRCH {
						cgroup.Remove(filepath.Join(own, e.Name()), time.Second)
					}
				}
			}
		}
		parent = filepath.Join(own, fmt.Sprintf("sandbox-test-%d", os.Getpid()))
		os.Setenv("SANDBOX_TEST_CGROUP", parent)
	}
	testCgroupParent = parent
	sp, err := New(Options{Cgroups: CgroupOptions{Parent: parent}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox tests run without cgroups:", err)
		sp = mustNew(Options{Cgroups: CgroupOptions{Disabled: true}})
	}
	testSpawner = sp
	if !owner {
		return func() { sp.Close() }
	}
	return func() {
		sp.Close()
		cgroup.Remove(parent, 5*time.Second)
	}
}

func mustNew(o Options) *Spawner {
	sp, err := New(o)
	if err != nil {
		panic(err)
	}
	return sp
}

// withCgroups runs the rest of the test with a Spawner configured by o,
// and puts the previous one back at the end. Not for parallel tests.
func withCgroups(t testing.TB, o CgroupOptions) CgroupReport {
	t.Helper()
	prev := testSpawner
	sp := newTestSpawner(t, Options{Cgroups: o})
	testSpawner = sp
	t.Cleanup(func() { testSpawner = prev })
	return sp.Capabilities().Cgroups
}

func needCgroups(t testing.TB) CgroupReport {
	t.Helper()
	r := testSpawner.Capabilities().Cgroups
	if !r.Available {
		t.Skip("no per-request cgroups on this host: " + r.Reason)
	}
	return r
}

func needController(t testing.TB, c string) {
	t.Helper()
	r := needCgroups(t)
	if !slices.Contains(r.Controllers, c) {
		t.Skipf("the %s controller is not available to request cgroups on this host (%s)", c, r.Reason)
	}
}

// escapeScript is a leader that double-forks a process that calls
// setsid(2), leaving the leader's session and process group, prints its
// pid and sleeps; the leader then runs rest.
func escapeScript(rest string) (string, []string) {
	return sh(`(setsid sh -c 'echo $$; exec sleep 1000' &); ` + rest)
}

// readPid reads the escapee's pid from the child's stdout.
func readPid(t *testing.T, r io.Reader) int {
	t.Helper()
	buf := make([]byte, 32)
	n, _ := r.Read(buf)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("escapee pid %q", buf[:n])
	}
	return pid
}

// goneNow reports whether pid has exited (missing or a zombie).
func goneNow(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	return strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z")
}

// sessionOf returns the session ID of pid.
func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid pgrp session
	sid, _ := strconv.Atoi(f[3])
	return sid
}

func mustStart(t *testing.T, spec *Spec) *Process {
	t.Helper()
	return mustStartOn(t, testSpawner, spec)
}

// mustStartOn starts spec on sp; the test's end kills the child, waits
// for it and closes its pipes.
func mustStartOn(t *testing.T, sp *Spawner, spec *Spec) *Process {
	t.Helper()
	p, err := sp.Start(spec)
	if err != nil {
		t.Fatalf("Start(%v): %v", spec.Args, err)
	}
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
		p.Stdin.Close()
		p.Stdout.Close()
		p.Stderr.Close()
	})
	return p
}

func fullCgroupSpec(path string, args []string) *Spec {
	return &Spec{Path: path, Args: args, Env: []string{"PATH=/usr/bin:/bin"},
		Credential: nobody, NoNewPrivs: true, Umask: u32(0o077),
		Rlimits:  []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 64, Max: 64}},
		Landlock: &Landlock{RO: append([]string{"/proc"}, sysRO...), RW: []string{"/dev/null"}, BestEffort: true}}
}

// The server's timeout and disconnect paths: TERM (which reaches the
// process group only), then Kill, then Wait. The escapee, in a session of
// its own, survives the TERM and dies by the Kill, before Wait.
func TestCgroupKillReachesSetsidEscapee(t *testing.T) {
	t.Parallel()
	needCgroups(t)
	for _, term := range []bool{false, true} {
		t.Run(fmt.Sprintf("term=%v", term), func(t *testing.T) {
			path, args := escapeScript("exec sleep 1000")
			p := mustStart(t, &Spec{Path: path, Args: args})
			esc := readPid(t, p.Stdout)
			if sid := sessionOf(t, esc); sid == p.Pid {
				t.Fatalf("the escapee %d is still in the leader's session", esc)
			}
			wantKilled, wantSig := 2, syscall.SIGKILL // the leader and the escapee
			if term {
				if err := p.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				if goneNow(esc) {
					t.Fatal("TERM reached the escapee (it should reach the group only)")
				}
				wantKilled, wantSig = 1, syscall.SIGTERM // the leader died by TERM
			}
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if !gone(esc, 5*time.Second) {
				t.Fatalf("escapee %d survived Kill", esc)
			}
			st, err := p.Wait()
			if err != nil || st.Signal != wantSig {
				t.Fatalf("leader: %+v %v", st, err)
			}
			if st.Cgroup.Path != p.Cgroup.Path || st.Cgroup.Killed != wantKilled || st.Cgroup.Lingering {
				t.Errorf("State.Cgroup = %+v, want path %s and %d killed", st.Cgroup, p.Cgroup.Path, wantKilled)
			}
			// Killed: never reused (see internal/cgroup/pool.go), removed.
			if !cgroupRemoved(p.Cgroup.Path, 5*time.Second) {
				t.Errorf("killed cgroup %s not removed (idle in the pool: %v)", p.Cgroup.Path, pooledIdle(p.Cgroup.Path))
			}
		})
	}
}

// The leader exits by itself and leaves an escapee behind: Wait kills it.
func TestCgroupWaitKillsSetsidEscapee(t *testing.T) {
	t.Parallel()
	needCgroups(t)
	path, args := escapeScript("read x; exit 0") // exits when stdin closes
	specs := map[string]*Spec{"plain": {Path: path, Args: args}}
	if os.Geteuid() == 0 {
		specs["full"] = fullCgroupSpec(path, args)
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := mustStart(t, spec)
			esc := readPid(t, p.Stdout)
			p.Stdin.Close()
			st, err := p.Wait()
			if err != nil || st.ExitCode != 0 {
				t.Fatalf("leader: %+v %v", st, err)
			}
			if !goneNow(esc) {
				t.Errorf("escapee %d outlived Wait", esc)
				unix.Kill(esc, unix.SIGKILL)
			}
			if st.Cgroup.Killed != 1 || st.Cgroup.Path == "" || st.Cgroup.Lingering {
				t.Errorf("State.Cgroup = %+v, want 1 killed", st.Cgroup)
			}
			if !cgroupRemoved(st.Cgroup.Path, 5*time.Second) {
				t.Errorf("killed cgroup %s not removed (idle in the pool: %v)", st.Cgroup.Path, pooledIdle(st.Cgroup.Path))
			}
			if err := p.Kill(); err != nil {
				t.Errorf("Kill after Wait: %v", err)
			}
		})
	}
}

// A child runs in a cgroup of its own from its first instruction: what it
// reads in /proc/self/cgroup is Process.Cgroup.Path.
func TestCgroupOwn(t *testing.T) {
	t.Parallel()
	r := needCgroups(t)
	script := `cat /proc/self/cgroup; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done`
	path, args := sh(script)
	specs := map[string]*Spec{"plain": {Path: path, Args: args}, "rlimits": {Path: path, Args: args,
		Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}}}
	if os.Geteuid() == 0 {
		specs["full"] = fullCgroupSpec(path, args)
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, err := testSpawner.Start(spec)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(p.Cgroup.Path) != r.Parent {
				t.Errorf("Process.Cgroup.Path %q is not under %s", p.Cgroup.Path, r.Parent)
			}
			res := collect(t, p)
			got, _ := cgroup.DirOf(res.stdout)
			if got == "" || got != p.Cgroup.Path || res.state.Cgroup.Path != got {
				t.Errorf("child in %q (from %q), Process.Cgroup.Path %q, State.Cgroup.Path %q",
					got, res.stdout, p.Cgroup.Path, res.state.Cgroup.Path)
			}
			if res.state.ExitCode != 0 || res.state.Cgroup.Killed != 0 {
				t.Errorf("state %+v, stderr %q", res.state, res.stderr)
			}
			if res.state.Cgroup.CPU <= 0 {
				t.Errorf("cgroup CPU time %v", res.state.Cgroup.CPU)
			}
			if err := cgroupReleased(got, 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
}

// Many concurrent Start/Wait cycles, failures to exec and killed
// children included, leave no cgroup behind but the idle ones of the
// pool (at most cgroup.PoolMax, all empty), and none once the pool is
// released. Cgroups are reused.
func TestCgroupNoStale(t *testing.T) {
	// Not parallel: it counts the parent's entries.
	r := needCgroups(t)
	withCgroups(t, CgroupOptions{Parent: r.Parent}) // a pool of its own
	m := testSpawner.cgroups
	escapee, escArgs := escapeScript("exit 0")
	specs := []*Spec{
		{Path: "/bin/true", Args: []string{"true"}},
		{Path: "/nonexistent", Args: []string{"x"}},
		{Path: "/bin/true", Args: []string{"true"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}},
		{Path: "/nonexistent", Args: []string{"x"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}},
		{Path: escapee, Args: escArgs},                                               // killed by Wait: not reused
		{Path: "/bin/sleep", Args: []string{"sleep", "1000"}, Cgroup: &CgroupSpec{}}, // killed by Kill
	}
	if os.Geteuid() == 0 {
		specs = append(specs, fullCgroupSpec("/bin/true", []string{"true"}))
	}
	const cycles = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	paths := map[string]bool{}
	sem := make(chan struct{}, 8)
	for i := range cycles {
		wg.Add(1)
		sem <- struct{}{}
		go func(spec *Spec) {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := testSpawner.Start(spec)
			if err != nil {
				var se *SpawnError
				if !errors.As(err, &se) {
					t.Error(err)
				}
				return
			}
			if spec.Path == "/bin/sleep" {
				p.Kill()
			}
			res := collectNoEOF(t, p)
			mu.Lock()
			paths[res.state.Cgroup.Path] = true
			mu.Unlock()
		}(specs[i%len(specs)])
	}
	wg.Wait()
	created, reused, removed, idle := m.PoolCounts()
	t.Logf("%d distinct cgroups for %d spawns; pool: %d made, %d handed out again, %d removed, %d idle",
		len(paths), cycles, created, reused, removed, idle)
	if paths[""] || reused == 0 || len(paths) >= cycles/2 {
		t.Errorf("no reuse (or an empty path: %v)", paths[""])
	}
	mine := fmt.Sprintf("%s%d-", cgroup.Prefix, os.Getpid())
	left := func() []string {
		var out []string
		ents, err := os.ReadDir(r.Parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), mine) {
				out = append(out, filepath.Join(r.Parent, e.Name()))
			}
		}
		return out
	}
	// The background removals end; what is left is idle in the pool.
	var stray []string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stray = stray[:0]
		for _, d := range left() {
			if !pooledIdle(d) {
				stray = append(stray, d)
			}
		}
		if len(stray) == 0 || time.Now().After(end) {
			break
		}
	}
	if len(stray) > 0 {
		t.Errorf("stale cgroups: %v", stray)
	}
	if _, _, _, idle := m.PoolCounts(); idle > cgroup.PoolMax {
		t.Errorf("%d idle cgroups, more than %d", idle, cgroup.PoolMax)
	}
	for _, d := range left() {
		if populated(d) {
			t.Errorf("idle cgroup %s holds %v", d, readPids(filepath.Join(d, "cgroup.procs")))
		}
	}
	m.Close()
	if l := left(); len(l) > 0 {
		t.Errorf("left after the pool's release: %v", l)
	}
	if n := m.Lingering(); n > 0 {
		t.Errorf("%d cgroups lingering", n)
	}
}

// A limit whose controller is missing is an error naming it, unless
// BestEffort; never silently ignored.
func TestCgroupUnsupportedOnThisHost(t *testing.T) {
	t.Parallel()
	var ue *CgroupUnsupportedError
	// For real, with whichever controllers this host lacks.
	r := needCgroups(t)
	asks := map[string]CgroupSpec{"memory": {MemoryMax: 64 << 20}, "pids": {PidsMax: 64}, "cpu": {CPUMax: "50000 100000"}}
	files := map[string]string{"memory": "memory.max", "pids": "pids.max", "cpu": "cpu.max"}
	tested := false
	for c, cs := range asks {
		if slices.Contains(r.Controllers, c) {
			continue
		}
		tested = true
		_, err := testSpawner.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, Cgroup: &cs})
		if !errors.As(err, &ue) || !slices.Equal(ue.Missing, []string{files[c]}) || !strings.Contains(err.Error(), "controller "+c) {
			t.Errorf("%s: err = %v, want a *CgroupUnsupportedError for %s", c, err, files[c])
			continue
		}
		t.Logf("%s: %v", c, err)
		cs.BestEffort = true
		p, err := testSpawner.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, Cgroup: &cs})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Cgroup.Downgraded, []string{files[c]}) || p.Cgroup.Path == "" || !p.Cgroup.BestEffort {
			t.Errorf("%s best effort: Process.Cgroup = %+v", c, p.Cgroup)
		}
		collect(t, p)
	}
	if !tested {
		t.Log("this host has every controller: only the simulated cases ran")
	}
}

func TestCgroupInvalidSpecs(t *testing.T) {
	t.Parallel()
	neg := int64(-1)
	for _, cs := range []CgroupSpec{{MemoryMax: -1}, {PidsMax: -2}, {MemorySwapMax: &neg}, {CPUMax: "half"},
		{CPUMax: "50000 100000 1"}, {CPUMax: "10 100000"}, {CPUMax: "max 2000000"}} {
		p, err := testSpawner.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, Cgroup: &cs})
		if err == nil {
			collect(t, p)
		}
		var ue *CgroupUnsupportedError
		if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "sandbox: cgroup") {
			t.Errorf("%+v: err = %v, want an invalid-spec error", cs, err)
		}
	}
	for _, ok := range []string{"max", "50000", "max 100000", " 50000  100000 ", "1000 1000", "2000000 1000000"} {
		if err := ValidateCPUMax(ok); err != nil {
			t.Errorf("ValidateCPUMax(%q): %v", ok, err)
		}
	}
}

// Without cgroups (disabled here), kills reach the process group only, as
// before: the escapee survives; a spec asking for a cgroup fails unless
// BestEffort.
func TestCgroupDisabled(t *testing.T) {
	// Not parallel: it changes the configuration.
	r := withCgroups(t, CgroupOptions{Disabled: true})
	if r.Available || r.Reason != "disabled by configuration" {
		t.Fatalf("report %+v", r)
	}
	_, err := testSpawner.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, Cgroup: &CgroupSpec{}})
	var ue *CgroupUnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "cgroup cgroup: disabled by configuration") {
		t.Errorf("err = %v", err)
	}
	p, err := testSpawner.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, Cgroup: &CgroupSpec{MemoryMax: 1 << 30, BestEffort: true}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Cgroup.Path != "" || !slices.Equal(p.Cgroup.Downgraded, []string{"cgroup", "memory.max"}) {
		t.Errorf("best effort: %+v", p.Cgroup)
	}
	collect(t, p)

	path, args := escapeScript("exec sleep 1000")
	p = mustStart(t, &Spec{Path: path, Args: args})
	esc := readPid(t, p.Stdout)
	defer unix.Kill(esc, unix.SIGKILL)
	if p.Cgroup.Path != "" {
		t.Fatalf("a cgroup while disabled: %+v", p.Cgroup)
	}
	p.Kill()
	st, err := p.Wait()
	if err != nil || st.Signal != syscall.SIGKILL || st.Cgroup != (CgroupStats{}) {
		t.Errorf("leader: %+v %v", st, err)
	}
	if gone(esc, 200*time.Millisecond) {
		t.Error("the escapee died without a cgroup: the test proves nothing")
	}
}

// Setting up removes the cgroups (and kills the processes) that a dead
// server left under the parent, and nothing else.
func TestCgroupStaleRemoved(t *testing.T) {
	// Not parallel: it sets up again.
	needRoot(t)
	r := needCgroups(t)
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(r.Parent, fmt.Sprintf("%s%d-1", cgroup.Prefix, dead.Process.Pid))
	alive := filepath.Join(r.Parent, fmt.Sprintf("%s%d-1", cgroup.Prefix, 1))
	other := filepath.Join(r.Parent, "not-a-request")
	for _, d := range []string{stale, alive, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cgroup.Remove(d, time.Second) })
	}
	fd, err := unix.Open(stale, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	orphan := exec.Command("/bin/sleep", "1000")
	orphan.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Setsid: true}
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { orphan.Process.Kill(); orphan.Wait() })
	withCgroups(t, CgroupOptions{Parent: r.Parent})
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale cgroup %s not removed: %v", stale, err)
	}
	if err := orphan.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the stale cgroup's process: %v", err)
	}
	for _, d := range []string{alive, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
}

// layoutResult is what TestCgroupLayoutHelper reports.
type layoutResult struct {
	Report CgroupReport
	Err    string
	Child  string // the child's /proc/self/cgroup
	Path   string // its Process.Cgroup.Path
	Stats  CgroupStats
	Self   string // the helper's /proc/self/cgroup after the setup
}

// The default layout, run by a helper "server" placed in a cgroup T of
// its own: request cgroups go under T/sockwarden; to enable a controller
// for them T must hold no process (the no-internal-process rule), so the
// server moves into the leaf T/server, unless T holds other processes.
// The controller is one this host can delegate to T: the test parent's,
// else hugetlb (enabled for the test in the root cgroup when the test runs
// there, and disabled again), else none (no move then).
func TestCgroupLayout(t *testing.T) {
	// Not parallel: it may change the root cgroup's subtree_control.
	needRoot(t)
	r := needCgroups(t)
	mount, own, err := cgroup.Locate()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(r.Parent) != own {
		t.Skipf("the test parent %s is not in the test's cgroup %s", r.Parent, own)
	}
	ctl := r.Controllers
	if len(ctl) == 0 && own == mount && fieldSet(readString(filepath.Join(mount, "cgroup.controllers")))["hugetlb"] {
		rootSC := filepath.Join(mount, "cgroup.subtree_control")
		if !fieldSet(readString(rootSC))["hugetlb"] {
			if err := os.WriteFile(rootSC, []byte("+hugetlb"), 0); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := os.WriteFile(rootSC, []byte("-hugetlb"), 0); err != nil {
					t.Errorf("restoring %s: %v", rootSC, err)
				}
			})
		}
		sc := filepath.Join(r.Parent, "cgroup.subtree_control")
		if err := os.WriteFile(sc, []byte("+hugetlb"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(sc, []byte("-hugetlb"), 0) })
		ctl = []string{"hugetlb"}
	}
	t.Logf("controller(s) for the layout: %v", ctl)

	run := func(t *testing.T, name string, crowd bool) (string, layoutResult) {
		T := filepath.Join(r.Parent, name)
		if err := os.Mkdir(T, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cgroup.Remove(T, 5*time.Second) })
		fd, err := unix.Open(T, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if crowd { // another process in T
			other := exec.Command("/bin/sleep", "1000")
			other.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
			if err := other.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { other.Process.Kill(); other.Wait() })
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCgroupLayoutHelper$")
		cmd.Env = append(os.Environ(), "SANDBOX_TEST_CGROUP=none", "SANDBOX_TEST_LAYOUT=ctl:"+strings.Join(ctl, " "))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		var res layoutResult
		for _, line := range strings.Split(string(out), "\n") {
			if j, ok := strings.CutPrefix(line, "LAYOUT "); ok {
				if err := json.Unmarshal([]byte(j), &res); err != nil {
					t.Fatal(err)
				}
			}
		}
		if res.Err != "" || !res.Report.Available {
			t.Fatalf("helper: %+v\n%s", res, out)
		}
		t.Logf("%s: %v", name, res.Report)
		return T, res
	}
	cgOf := func(procCgroup string) string {
		dir, err := cgroup.DirOf(procCgroup)
		if err != nil {
			t.Fatalf("%q: %v", procCgroup, err)
		}
		return dir
	}

	t.Run("alone", func(t *testing.T) {
		T, res := run(t, "layout", false)
		if res.Report.Parent != filepath.Join(T, "sockwarden") {
			t.Errorf("parent %s, want %s/sockwarden", res.Report.Parent, T)
		}
		if child := cgOf(res.Child); child != res.Path || filepath.Dir(child) != res.Report.Parent || res.Stats.Path != child {
			t.Errorf("child in %s, Process.Cgroup.Path %s, stats %+v", child, res.Path, res.Stats)
		}
		wantServer := T
		if len(ctl) > 0 {
			wantServer = filepath.Join(T, "server")
			if !slices.Equal(res.Report.Controllers, ctl) || res.Report.Reason != "" {
				t.Errorf("controllers %v (%s), want %v", res.Report.Controllers, res.Report.Reason, ctl)
			}
			for _, d := range []string{T, res.Report.Parent} {
				if sc := fieldSet(readString(filepath.Join(d, "cgroup.subtree_control"))); !sc[ctl[0]] {
					t.Errorf("%s/cgroup.subtree_control lacks %s", d, ctl[0])
				}
			}
			if procs := readPids(filepath.Join(T, "cgroup.procs")); len(procs) != 0 {
				t.Errorf("%s still holds %v", T, procs)
			}
		}
		if got := cgOf(res.Self); got != wantServer || res.Report.Server != wantServer {
			t.Errorf("server in %s (report: %s), want %s", got, res.Report.Server, wantServer)
		}
	})
	if len(ctl) == 0 {
		return
	}
	t.Run("crowded", func(t *testing.T) {
		T, res := run(t, "layout-crowded", true)
		if len(res.Report.Controllers) != 0 || !strings.Contains(res.Report.Reason, "also holds process") {
			t.Errorf("controllers %v, reason %q", res.Report.Controllers, res.Report.Reason)
		}
		if got := cgOf(res.Self); got != T {
			t.Errorf("server moved to %s", got)
		}
		if child := cgOf(res.Child); filepath.Dir(child) != filepath.Join(T, "sockwarden") {
			t.Errorf("child in %s", child)
		}
	})
}

func TestCgroupLayoutHelper(t *testing.T) {
	spec, ok := strings.CutPrefix(os.Getenv("SANDBOX_TEST_LAYOUT"), "ctl:")
	if !ok {
		t.Skip("helper of TestCgroupLayout")
	}
	var res layoutResult
	var err error
	var sp *Spawner
	sp, err = New(Options{Cgroups: CgroupOptions{Controllers: strings.Fields(spec)}})
	if err == nil {
		defer sp.Close()
		res.Report = sp.Capabilities().Cgroups
		var p *Process
		if p, err = sp.Start(&Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/cgroup"}}); err == nil {
			r := collect(t, p)
			res.Child, res.Path, res.Stats = r.stdout, p.Cgroup.Path, r.state.Cgroup
		}
	}
	if err != nil {
		res.Err = err.Error()
	}
	res.Self = readString("/proc/self/cgroup")
	b, _ := json.Marshal(res)
	fmt.Printf("LAYOUT %s\n", b)
}

func TestCgroupMemoryLimit(t *testing.T) {
	t.Parallel()
	needController(t, "memory")
	swap := int64(0)
	p, err := testSpawner.Start(&Spec{Path: testprog, Args: []string{"testprog", "alloc", "256"},
		Cgroup: &CgroupSpec{MemoryMax: 32 << 20, MemorySwapMax: &swap, BestEffort: true}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(p.Cgroup.Downgraded, "memory.max") {
		t.Fatalf("memory.max downgraded: %+v", p.Cgroup)
	}
	r := collect(t, p)
	if r.state.Signal != syscall.SIGKILL || r.state.Cgroup.OOMKills < 1 {
		t.Errorf("state %+v, stdout %q: want an OOM kill", r.state, r.stdout)
	}
	if pk := r.state.Cgroup.MemoryPeak; pk <= 0 || pk > 33<<20 {
		t.Errorf("memory peak %d with memory.max 32 MiB", pk)
	}
}

func TestCgroupPidsLimit(t *testing.T) {
	t.Parallel()
	needController(t, "pids")
	const max = 16
	// A fork bomb, stopped by the limit (or at 200 without it).
	path, args := sh(`i=0; while [ $i -lt 200 ]; do sleep 1000 & echo $!; i=$((i+1)); done`)
	p, err := testSpawner.Start(&Spec{Path: path, Args: args, Cgroup: &CgroupSpec{PidsMax: max}})
	if err != nil {
		t.Fatal(err)
	}
	r := collectNoEOF(t, p)
	pids := map[string]bool{}
	for _, f := range strings.Fields(r.stdout) {
		pids[f] = true
	}
	if len(pids) == 0 || len(pids) >= max {
		t.Errorf("%d processes started with pids.max %d (stderr %q)", len(pids), max, r.stderr)
	}
	if r.state.Cgroup.Killed != len(pids) {
		t.Errorf("killed %d, want the %d sleeps", r.state.Cgroup.Killed, len(pids))
	}
	if pk := r.state.Cgroup.PidsPeak; pk > max {
		t.Errorf("pids peak %d over pids.max %d", pk, max)
	}
}

func TestCgroupCPULimit(t *testing.T) {
	t.Parallel()
	needController(t, "cpu")
	p, err := testSpawner.Start(&Spec{Path: testprog, Args: []string{"testprog", "spin"},
		Cgroup: &CgroupSpec{CPUMax: "10000 100000"}}) // 10% of a CPU
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	p.Kill()
	r := collect(t, p)
	if cpu := r.state.Cgroup.CPU; cpu <= 0 || cpu > 300*time.Millisecond {
		t.Errorf("CPU time %v in 1 s at 10%%", cpu)
	}
}

// readString returns the contents of the file at path, "" when it cannot
// be read.
func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// readPids returns the pids listed in a cgroup.procs file.
func readPids(path string) []int {
	var out []int
	for _, f := range strings.Fields(readString(path)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// fieldSet returns the words of s as a set.
func fieldSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(s) {
		m[f] = true
	}
	return m
}

// cpuUsage reads usage_usec from the cpu.stat of the cgroup at dir.
func cpuUsage(t *testing.T, dir string) int64 {
	t.Helper()
	for _, line := range strings.Split(readString(filepath.Join(dir, "cpu.stat")), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no usage_usec in %s/cpu.stat", dir)
	return 0
}
