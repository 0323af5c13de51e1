package sandbox

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/kaudit"
	"github.com/sockwarden/sockwarden/internal/kaudit/kaudittest"
)

// Run with:
//
//	go test -run '^$' -bench 'Spawn' -count 5 ./sandbox/
//
// BenchmarkSpawn runs 8 spawners (SetParallelism(4) x GOMAXPROCS 2) of
// /bin/true with three pipes; BenchmarkSpawnLatency runs one at a time
// and reports the median. The -cgroup cases give every spawn a cgroup of
// its own (the default where cgroup v2 is available), the others run
// with cgroups disabled.

var benchLimits = []Rlimit{
	{Resource: unix.RLIMIT_NOFILE, Cur: 256, Max: 256},
	{Resource: unix.RLIMIT_NPROC, Cur: 512, Max: 512},
	{Resource: unix.RLIMIT_CPU, Cur: 10, Max: 11},
	{Resource: unix.RLIMIT_AS, Cur: 1 << 30, Max: 1 << 30},
	{Resource: unix.RLIMIT_FSIZE, Cur: 16 << 20, Max: 16 << 20},
	{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
	{Resource: unix.RLIMIT_STACK, Cur: 8 << 20, Max: 8 << 20},
}

func fullSpec(b *testing.B) *Spec {
	needRoot(b)
	ll := &Landlock{RO: sysRO, RW: []string{"/dev/null"}, ConnectTCP: []uint16{80}, Scope: LandlockABI() >= 6, BestEffort: true}
	return &Spec{
		Path: "/bin/true", Args: []string{"true"}, Env: []string{"PATH=/usr/bin:/bin"},
		Credential: nobody, NoNewPrivs: true, Umask: u32(0o077), Rlimits: benchLimits, Landlock: ll,
	}
}

// cHelperSpec is candidate (b): fullSpec without Rlimits, exec'ing a
// static C helper that sets them and execs /bin/true.
func cHelperSpec(b *testing.B) *Spec {
	if _, err := exec.LookPath("cc"); err != nil {
		b.Skip("no C compiler")
	}
	dir := worldDir(b, 0o755)
	helper := filepath.Join(dir, "rlimit_helper")
	if out, err := exec.Command("cc", "-static", "-O2", "-o", helper, "testdata/rlimit_helper.c").CombinedOutput(); err != nil {
		b.Skipf("cc -static: %v\n%s", err, out)
	}
	spec := fullSpec(b)
	spec.Rlimits = nil
	spec.Landlock.RO = append([]string{dir}, spec.Landlock.RO...)
	spec.Path = helper
	spec.Args = []string{"rlimit_helper"}
	for _, r := range benchLimits {
		spec.Args = append(spec.Args, fmt.Sprint(r.Resource), fmt.Sprint(r.Cur), fmt.Sprint(r.Max))
	}
	spec.Args = append(spec.Args, "--", "/bin/true", "true")
	return spec
}

func spawnOSExec() error {
	cmd := exec.Command("/bin/true")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	errp, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	in.Close()
	io.Copy(io.Discard, out)
	io.Copy(io.Discard, errp)
	return cmd.Wait()
}

func spawnSandbox(spec *Spec) error {
	p, err := testSpawner.Start(spec)
	if err != nil {
		return err
	}
	p.Stdin.Close()
	io.Copy(io.Discard, p.Stdout)
	io.Copy(io.Discard, p.Stderr)
	p.Stdout.Close()
	p.Stderr.Close()
	st, err := p.Wait()
	if err == nil && st.ExitCode != 0 {
		err = fmt.Errorf("exit %d signal %v", st.ExitCode, st.Signal)
	}
	return err
}

type benchCase struct {
	name  string
	spawn func(b *testing.B) func() error
	// cgroup: each spawn gets a cgroup of its own (created and removed);
	// the other cases run with cgroups disabled, as before.
	cgroup bool
}

// benchCgroups sets the cgroup configuration for one case.
func benchCgroups(b *testing.B, on bool) {
	if on {
		needCgroups(b)
		return
	}
	withCgroups(b, CgroupOptions{Disabled: true})
}

var benchCases = []benchCase{
	{"bare-osexec", func(*testing.B) func() error { return spawnOSExec }, false},
	{"sandbox-minimal", func(*testing.B) func() error {
		spec := &Spec{Path: "/bin/true", Args: []string{"true"}}
		return func() error { return spawnSandbox(spec) }
	}, false},
	{"sandbox-minimal-cgroup", func(*testing.B) func() error {
		spec := &Spec{Path: "/bin/true", Args: []string{"true"}}
		return func() error { return spawnSandbox(spec) }
	}, true},
	{"sandbox-full", func(b *testing.B) func() error {
		spec := fullSpec(b)
		return func() error { return spawnSandbox(spec) }
	}, false},
	{"sandbox-full-cgroup", func(b *testing.B) func() error {
		spec := fullSpec(b)
		return func() error { return spawnSandbox(spec) }
	}, true},
	{"sandbox-full-no-rlimits", func(b *testing.B) func() error {
		spec := fullSpec(b)
		spec.Rlimits = nil
		return func() error { return spawnSandbox(spec) }
	}, false},
	// Ablations: full without the MPTCP seccomp filter (TCP left alone),
	// and the part of full that runs on a reused thread (no Landlock,
	// no_new_privs nor umask, so no thread per spawn).
	{"sandbox-full-unrestricted-tcp", func(b *testing.B) func() error {
		spec := fullSpec(b)
		spec.Landlock.ConnectTCP, spec.Landlock.UnrestrictedTCP = nil, true
		return func() error { return spawnSandbox(spec) }
	}, false},
	{"sandbox-creds-rlimits", func(b *testing.B) func() error {
		spec := fullSpec(b)
		spec.Landlock, spec.NoNewPrivs, spec.Umask = nil, false, nil
		return func() error { return spawnSandbox(spec) }
	}, false},
	{"candidate-c-helper", func(b *testing.B) func() error {
		spec := cHelperSpec(b)
		return func() error { return spawnSandbox(spec) }
	}, false},
	// The containment layers, one on top of the other, each spawn with a
	// cgroup: layers-0 is the full sandbox as it was before them (its
	// seccomp filter only refused MPTCP sockets: no network filter),
	// layers-6 is the example policy's web profile.
	{"layers-0-full-before", layered(0), true},
	{"layers-1-network-filter", layered(1), true},
	{"layers-2-seccomp-default", layered(2), true},
	{"layers-3-ipc-namespace", layered(3), true},
	{"layers-4-network-none", layered(4), true},
	{"layers-5-dynamic-uid", layered(5), true},
	{"layers-6-tmpdir", layered(6), true},
}

// layered returns the spawn of the full spec with the first n containment
// layers on, on a Spawner with dynamic uids and temporary directories.
func layered(n int) func(b *testing.B) func() error {
	return func(b *testing.B) func() error {
		needCgroups(b)
		base, err := os.MkdirTemp("", "sockwarden-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
		os.Chmod(base, 0o711)
		prev := testSpawner
		sp := newTestSpawner(b, Options{Cgroups: CgroupOptions{Parent: testCgroupParent},
			DynamicUIDs: UIDRange{58000, 58999}, TmpDir: filepath.Join(base, "tmp")})
		testSpawner = sp
		b.Cleanup(func() { testSpawner = prev })
		sp.noNetworkFilter = n < 1
		spec := fullSpec(b)
		spec.Landlock.ConnectTCP, spec.Landlock.BindTCP = []uint16{}, []uint16{}
		if n >= 2 {
			spec.Seccomp = &Seccomp{Profile: SeccompDefault}
		}
		spec.PrivateIPC = n >= 3
		spec.NoNetwork = n >= 4
		if n >= 5 {
			spec.Credential, spec.DynamicUser = nil, true
		}
		spec.TmpDir = n >= 6
		return func() error { return spawnSandbox(spec) }
	}
}

func BenchmarkSpawn(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			benchCgroups(b, bc.cgroup)
			f := bc.spawn(b)
			if err := f(); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := f(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spawns/s")
		})
	}
}

func BenchmarkSpawnLatency(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			benchCgroups(b, bc.cgroup)
			f := bc.spawn(b)
			if err := f(); err != nil {
				b.Fatal(err)
			}
			d := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := f(); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			slices.Sort(d)
			b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
		})
	}
}

// BenchmarkSpawnDenials measures what reporting denials costs a spawn,
// one spawn at a time: with the kernel's audit off (no reports), on but
// not reporting (the kernel's own cost: a per-task audit context), and
// on and reporting (the LOG flag, the deliberate first denial and its
// records):
//
//	go test -run '^$' -bench 'SpawnDenials' -benchtime 2s -count 5 ./sandbox/
func BenchmarkSpawnDenials(b *testing.B) {
	needRoot(b)
	needABI(b, 7)
	kaudittest.Set(b, true)
	w, err := WatchDenials()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	for _, bc := range []struct {
		name            string
		audit, reported bool
	}{{"audit=off", false, false}, {"audit=on", true, false}, {"audit=on,reported", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			if err := kaudit.SetEnabled(bc.audit); err != nil {
				b.Fatal(err)
			}
			o := Options{Cgroups: CgroupOptions{Disabled: true}}
			if bc.reported {
				o.Denials = w
			}
			sp := newTestSpawner(b, o)
			prev := testSpawner
			testSpawner = sp
			b.Cleanup(func() { testSpawner = prev })
			spec := fullSpec(b)
			d := make([]time.Duration, 0, b.N)
			for range b.N {
				t0 := time.Now()
				if err := spawnSandbox(spec); err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
			}
			slices.Sort(d)
			b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
		})
	}
}
