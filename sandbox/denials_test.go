package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/kaudit/kaudittest"
)

// denialSpawner returns a Spawner reporting denials, with the kernel's
// audit on for the rest of the test.
func denialSpawner(t *testing.T) *Spawner {
	t.Helper()
	needRoot(t)
	needABI(t, 7)
	kaudittest.Set(t, true)
	w, err := WatchDenials()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	o := Options{Denials: w, Cgroups: CgroupOptions{Disabled: true}}
	if testCgroupParent != "" {
		o.Cgroups = CgroupOptions{Parent: testCgroupParent}
	}
	sp := newTestSpawner(t, o)
	if !sp.Capabilities().Denials {
		t.Fatal("Capabilities().Denials is false with a watcher on Landlock ABI 7")
	}
	return sp
}

// finalDenials runs spec on sp and returns its output and final report.
func finalDenials(t *testing.T, sp *Spawner, spec *Spec) (result, DenialReport) {
	t.Helper()
	p, err := sp.Start(spec)
	if err != nil {
		t.Fatalf("Start(%v): %v", spec.Args, err)
	}
	r := collect(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 2*DenialFinalWait)
	defer cancel()
	rep, ok := p.WaitDenials(ctx)
	if !ok {
		t.Fatal("Denials not reported")
	}
	if !rep.Final {
		t.Fatalf("report not final after %v: %+v", 2*DenialFinalWait, rep)
	}
	return r, rep
}

// deniedDirs makes a directory the children may not write to, holding
// an executable (a copy of true) they may not run.
func deniedDir(t *testing.T) string {
	t.Helper()
	dir := worldDir(t, 0o777) // DAC would allow everything: only Landlock refuses
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prog"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDenialReport: a child's denied write, exec and TCP connect are
// named in its report, with the kernel's count; the same attempts
// succeed without Landlock (the control), and a child with no denials
// gets an empty, complete report.
func TestDenialReport(t *testing.T) {
	sp := denialSpawner(t)
	dir := deniedDir(t)
	_, port := listen(t)
	script := fmt.Sprintf("echo x > %[1]s/new; %[1]s/prog; %[2]s dial 127.0.0.1:%[3]d; echo done",
		dir, testprog, port)
	path, args := sh(script)
	// /proc and /sys: the Go runtime of testprog reads there, and would
	// add harmless denials of its own.
	ll := &Landlock{RO: append([]string{binDir, "/proc", "/sys"}, sysRO...), RW: []string{"/dev/null"}}

	// The control: nothing stops the three.
	r := run(t, &Spec{Path: path, Args: args, Credential: nobody})
	if r.stderr != "" || r.stdout != "ok\ndone\n" {
		t.Fatalf("without Landlock: stdout %q stderr %q", r.stdout, r.stderr)
	}
	os.Remove(filepath.Join(dir, "new"))

	r, rep := finalDenials(t, sp, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
	if !strings.Contains(r.stderr, "Permission denied") || !strings.Contains(r.stdout, "permission denied") {
		t.Fatalf("not denied: stdout %q stderr %q", r.stdout, r.stderr)
	}
	want := []Denial{
		{Access: "fs.make_reg", Target: dir, Count: 1},
		{Access: "fs.execute,fs.read_file", Target: dir + "/prog", Count: 1},
		{Access: "net.connect_tcp", Target: fmt.Sprintf("127.0.0.1:%d", port), Count: 1},
	}
	if fmt.Sprint(rep.Denials) != fmt.Sprint(want) {
		t.Errorf("denials:\n got %v\nwant %v", rep.Denials, want)
	}
	if !rep.Complete || rep.Total != 3 || rep.Received != 3 || rep.Unlisted != 0 {
		t.Errorf("report %+v, want complete, total 3", rep)
	}
	if s := want[1].String(); s != "fs.execute,fs.read_file on "+dir+"/prog" {
		t.Errorf("String() = %q", s)
	}

	path, args = sh("cat /etc/hostname > /dev/null; echo fine")
	r, rep = finalDenials(t, sp, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
	if r.stdout != "fine\n" || len(rep.Denials) != 0 || !rep.Complete || rep.Total != 0 {
		t.Errorf("no denials: stdout %q, report %+v", r.stdout, rep)
	}
}

// TestDenialReportsApart: eight children at once, each refused on a
// directory of its own, each get their own denials only; one more with
// none gets none.
func TestDenialReportsApart(t *testing.T) {
	sp := denialSpawner(t)
	ll := &Landlock{RO: sysRO, RW: []string{"/dev/null"}}
	const n = 8
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = deniedDir(t)
	}
	reps := make([]DenialReport, n+1)
	var wg sync.WaitGroup
	for i := 0; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := "sleep 0.2; true"
			if i < n {
				// Repeated, spread over the time the others run.
				script = fmt.Sprintf("for i in 1 2 3; do echo x > %s/f$i; sleep 0.1; done 2>/dev/null", dirs[i])
			}
			path, args := sh(script)
			_, reps[i] = finalDenials(t, sp, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		want := []Denial{{Access: "fs.make_reg", Target: dirs[i], Count: 3}}
		if fmt.Sprint(reps[i].Denials) != fmt.Sprint(want) || !reps[i].Complete {
			t.Errorf("child %d: %+v, want %v, complete", i, reps[i], want)
		}
	}
	if len(reps[n].Denials) != 0 || reps[n].Total != 0 || !reps[n].Complete {
		t.Errorf("child without denials: %+v", reps[n])
	}
}

// TestDenialBurstIncomplete: when the kernel drops records in a burst
// (its backlog held to 8 here), the report says it is incomplete and
// gives the kernel's count, rather than passing for the whole story.
func TestDenialBurstIncomplete(t *testing.T) {
	sp := denialSpawner(t)
	kaudittest.SetBacklogLimit(t, 8)
	dir := deniedDir(t)
	const each, procs = 1000, 4
	// Four processes of the same child at once, each creating 1000
	// files where it may not.
	script := fmt.Sprintf(`cd %s && for p in 1 2 3 4; do touch $(seq -f "$p-%%g" %d) 2>/dev/null & done; wait`, dir, each)
	path, args := sh(script)
	ll := &Landlock{RO: sysRO, RW: []string{"/dev/null"}}
	start := time.Now()
	_, rep := finalDenials(t, sp, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
	t.Logf("received %d of %d in %v", rep.Received, rep.Total, time.Since(start))
	if rep.Total != each*procs {
		t.Errorf("kernel's count %d, want %d", rep.Total, each*procs)
	}
	if rep.Complete || rep.Received >= rep.Total {
		t.Errorf("burst report %+v claims to be complete", rep)
	}
	if len(rep.Denials) != 1 || rep.Denials[0].Target != dir {
		t.Errorf("denials %v", rep.Denials)
	}
}

// TestDenialsNotReported: without a watcher, or with the kernel's audit
// off, nothing is reported (and the children still run).
func TestDenialsNotReported(t *testing.T) {
	needRoot(t)
	needABI(t, 7)
	dir := deniedDir(t)
	path, args := sh("echo x > " + dir + "/f")
	ll := &Landlock{RO: sysRO, RW: []string{"/dev/null"}}
	p := mustStartOn(t, testSpawner, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
	collect(t, p)
	if _, ok := p.Denials(); ok {
		t.Error("denials reported by a Spawner without a watcher")
	}

	kaudittest.Set(t, false)
	w, err := WatchDenials()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sp := newTestSpawner(t, Options{Denials: w, Cgroups: CgroupOptions{Disabled: true}})
	r, rep := finalDenials(t, sp, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
	if !strings.Contains(r.stderr, "Permission denied") {
		t.Fatalf("not denied: %q", r.stderr)
	}
	if rep.Received != 0 || rep.Complete || rep.Total != -1 {
		t.Errorf("with the kernel's audit off: %+v", rep)
	}
}
