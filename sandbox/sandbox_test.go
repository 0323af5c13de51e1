package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/testutil/fdcount"
	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
)

// testprog is testdata/testprog, built into binDir (world-readable, so
// that children running as nobody can execute it).
var (
	binDir   string
	testprog string
)

// sysRO are the read-only paths a dynamically linked program needs.
var sysRO = []string{"/usr", "/lib", "/lib64", "/bin", "/etc"}

var nobody = &Credential{UID: 65534, GID: 65534}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sandbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	binDir = dir
	testprog = filepath.Join(dir, "testprog")
	cmd := exec.Command("go", "build", "-o", testprog, "./testdata/testprog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building testprog: %v\n%s", err, out)
		return 1
	}
	defer setupTestCgroups()()
	return m.Run()
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (credentials)")
	}
}

func needABI(t testing.TB, abi int) {
	t.Helper()
	if LandlockABI() < abi {
		t.Skipf("needs Landlock ABI %d, kernel has %d", abi, LandlockABI())
	}
}

// worldDir returns a new directory with the given mode that nobody can
// reach (its parent is /tmp).
func worldDir(t testing.TB, mode os.FileMode) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, mode); err != nil {
		t.Fatal(err)
	}
	return d
}

type result struct {
	stdout, stderr string
	state          *State
}

// run starts spec with an empty stdin and collects its output and state.
func run(t testing.TB, spec *Spec) result {
	t.Helper()
	p, err := testSpawner.Start(spec)
	if err != nil {
		t.Fatalf("Start(%v): %v", spec.Args, err)
	}
	return collect(t, p)
}

func collect(t testing.TB, p *Process) result {
	t.Helper()
	p.Stdin.Close()
	var out, errb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, p.Stdout) }()
	go func() { defer wg.Done(); io.Copy(&errb, p.Stderr) }()
	wg.Wait()
	p.Stdout.Close()
	p.Stderr.Close()
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return result{out.String(), errb.String(), st}
}

func sh(script string) (string, []string) {
	return "/bin/sh", []string{"sh", "-c", script}
}

// procStatus parses /proc/PID/status output into a map.
func procStatus(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func ownStatus(t testing.TB) map[string]string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	return procStatus(string(b))
}

func u32(v uint32) *uint32 { return &v }

func TestBasics(t *testing.T) {
	t.Parallel()
	serverUmask := ownStatus(t)["Umask"]
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"env exactly as spec", Spec{Path: "/usr/bin/env", Args: []string{"env"}, Env: []string{"A=1", "B=two words"}}, "A=1\nB=two words\n"},
		{"nil env is empty", Spec{Path: "/usr/bin/env", Args: []string{"env"}}, ""},
		{"dir", Spec{Path: "/bin/pwd", Args: []string{"pwd"}, Dir: "/usr/share"}, "/usr/share\n"},
		{"dir defaults to /", Spec{Path: "/bin/pwd", Args: []string{"pwd"}}, "/\n"},
		{"umask", Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "umask"}, Umask: u32(0o077)}, "0077\n"},
		{"umask with landlock and rlimits", Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "umask"}, Umask: u32(0o027),
			Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}, Landlock: &Landlock{RO: sysRO, BestEffort: true}}, "0027\n"},
		{"umask nil is the server's", Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "umask"}}, serverUmask + "\n"},
		{"args", Spec{Path: "/bin/echo", Args: []string{"echo", "a b", "c"}}, "a b c\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, &tt.spec)
			if r.stdout != tt.want || r.state.ExitCode != 0 {
				t.Errorf("got %q (exit %d, stderr %q), want %q", r.stdout, r.state.ExitCode, r.stderr, tt.want)
			}
		})
	}
}

func TestState(t *testing.T) {
	t.Parallel()
	path, args := sh("exit 3")
	r := run(t, &Spec{Path: path, Args: args})
	if r.state.ExitCode != 3 || r.state.Signal != 0 {
		t.Errorf("exit 3: got %+v", r.state)
	}
	path, args = sh("kill -USR1 $$")
	r = run(t, &Spec{Path: path, Args: args})
	if r.state.ExitCode != -1 || r.state.Signal != syscall.SIGUSR1 {
		t.Errorf("kill -USR1: got %+v", r.state)
	}
	// Rusage is the child's: a busy second shows up as user time.
	r = run(t, &Spec{Path: testprog, Args: []string{"testprog", "spin"},
		Rlimits: []Rlimit{{Resource: unix.RLIMIT_CPU, Cur: 1, Max: 1}}})
	if ut := time.Duration(r.state.Rusage.Utime.Nano()); ut < 500*time.Millisecond {
		t.Errorf("rusage user time %v after spinning 1 s of CPU", ut)
	}
	if r.state.Wall < 900*time.Millisecond {
		t.Errorf("wall %v after spinning 1 s of CPU", r.state.Wall)
	}
}

func TestSpawnErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		spec  Spec
		code  int
		errno syscall.Errno
	}{
		{"missing", Spec{Path: "/nonexistent/prog", Args: []string{"prog"}}, 127, syscall.ENOENT},
		{"not executable", Spec{Path: "/etc/passwd", Args: []string{"passwd"}}, 126, syscall.EACCES},
		{"directory", Spec{Path: "/usr", Args: []string{"usr"}}, 126, syscall.EACCES},
		{"missing with rlimits", Spec{Path: "/nonexistent/prog", Args: []string{"prog"},
			Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}}, 127, syscall.ENOENT},
		{"landlock forbids", Spec{Path: "/usr/bin/true", Args: []string{"true"},
			Landlock: &Landlock{RO: []string{binDir}, BestEffort: true}}, 126, syscall.EACCES},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.spec.Landlock != nil {
				needABI(t, 1)
			}
			p, err := testSpawner.Start(&tt.spec)
			var se *SpawnError
			if !errors.As(err, &se) {
				if p != nil {
					collect(t, p)
				}
				t.Fatalf("got %v, want a *SpawnError", err)
			}
			if se.Code != tt.code || !errors.Is(err, tt.errno) {
				t.Errorf("got code %d err %v, want %d %v", se.Code, se.Err, tt.code, tt.errno)
			}
		})
	}
}

func TestInvalidSpecs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec Spec
	}{
		{"no path", Spec{Args: []string{"x"}}},
		{"no args", Spec{Path: "/bin/true"}},
		{"umask", Spec{Path: "/bin/true", Args: []string{"true"}, Umask: u32(0o1777)}},
		{"rlimit soft above hard", Spec{Path: "/bin/true", Args: []string{"true"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CPU, Cur: 2, Max: 1}}}},
		{"rlimit twice", Spec{Path: "/bin/true", Args: []string{"true"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CPU}, {Resource: unix.RLIMIT_CPU}}}},
		{"rlimit unknown", Spec{Path: "/bin/true", Args: []string{"true"}, Rlimits: []Rlimit{{Resource: 99}}}},
		{"landlock relative path", Spec{Path: "/bin/true", Args: []string{"true"}, Landlock: &Landlock{RO: []string{"usr"}, BestEffort: true}}},
		{"landlock missing path", Spec{Path: "/bin/true", Args: []string{"true"}, Landlock: &Landlock{RO: []string{"/nonexistent"}, BestEffort: true}}},
		{"landlock unrestricted tcp with ports", Spec{Path: "/bin/true", Args: []string{"true"}, Landlock: &Landlock{UnrestrictedTCP: true, ConnectTCP: []uint16{80}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.spec.Landlock != nil && tt.spec.Landlock.RO != nil {
				needABI(t, 1)
			}
			p, err := testSpawner.Start(&tt.spec)
			if err == nil {
				collect(t, p)
				t.Fatal("Start succeeded")
			}
		})
	}
}

func TestRootRefused(t *testing.T) {
	t.Parallel()
	needRoot(t)
	spec := &Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/status"}, Credential: &Credential{UID: 0, GID: 0}}
	if p, err := testSpawner.Start(spec); !errors.Is(err, ErrRootRefused) {
		if p != nil {
			collect(t, p)
		}
		t.Fatalf("uid 0 without AllowRoot: got %v", err)
	}
	spec.AllowRoot = true
	r := run(t, spec)
	if got := procStatus(r.stdout)["Uid"]; got != "0\t0\t0\t0" {
		t.Errorf("AllowRoot: Uid %q", got)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	needRoot(t)
	tests := []struct {
		name             string
		cred             *Credential
		uid, gid, groups string
	}{
		{"nobody with groups", &Credential{UID: 65534, GID: 65534, Groups: []uint32{1234, 5678}}, "65534", "65534", "1234 5678"},
		{"other ids, no groups", &Credential{UID: 1000, GID: 2000}, "1000", "2000", ""},
	}
	for _, tt := range tests {
		for _, withRlimits := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rlimits=%v", tt.name, withRlimits), func(t *testing.T) {
				t.Parallel()
				spec := &Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/status"}, Credential: tt.cred}
				if withRlimits {
					spec.Rlimits = []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 32, Max: 32}}
				}
				st := procStatus(run(t, spec).stdout)
				rep := func(id string) string { return id + "\t" + id + "\t" + id + "\t" + id }
				if st["Uid"] != rep(tt.uid) || st["Gid"] != rep(tt.gid) || st["Groups"] != tt.groups {
					t.Errorf("Uid %q Gid %q Groups %q; want %s %s %q", st["Uid"], st["Gid"], st["Groups"], tt.uid, tt.gid, tt.groups)
				}
			})
		}
	}
}

func TestProcessState(t *testing.T) {
	// Not parallel: it changes the test process's signal dispositions.
	needRoot(t)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Reset(syscall.SIGHUP, syscall.SIGPIPE)
	tests := []struct {
		name string
		spec Spec
		nnp  string
	}{
		{"plain", Spec{}, "0"},
		{"no_new_privs", Spec{NoNewPrivs: true}, "1"},
		{"landlock forces no_new_privs", Spec{Landlock: &Landlock{RO: append([]string{"/proc"}, sysRO...), BestEffort: true}}, "1"},
		{"rlimits", Spec{Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}, Credential: nobody}, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.Path, spec.Args = "/bin/cat", []string{"cat", "/proc/self/status"}
			st := procStatus(run(t, &spec).stdout)
			want := map[string]string{
				"NoNewPrivs": tt.nnp,
				"SigBlk":     "0000000000000000",
				"SigIgn":     "0000000000000000",
				"SigCgt":     "0000000000000000",
				"TracerPid":  "0",
			}
			for k, v := range want {
				if st[k] != v {
					t.Errorf("%s: %q, want %q", k, st[k], v)
				}
			}
		})
	}
}

func TestSessionAndGroup(t *testing.T) {
	t.Parallel()
	p, err := testSpawner.Start(&Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/stat"}})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, p)
	// pid (comm) state ppid pgrp session tty_nr ...
	f := strings.Fields(r.stdout[strings.LastIndexByte(r.stdout, ')')+1:])
	want := strconv.Itoa(p.Pid)
	if f[2] != want || f[3] != want || f[4] != "0" {
		t.Errorf("pgrp %s session %s tty %s; want %s %s 0", f[2], f[3], f[4], want, want)
	}
}

func TestOnlyStdioFDs(t *testing.T) {
	// Not parallel: it leaks a descriptor without O_CLOEXEC on purpose.
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, spec := range []Spec{
		{},
		{Rlimits: []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 100, Max: 100}}},
		{Landlock: &Landlock{RO: []string{binDir}, BestEffort: true}, Credential: nobody},
	} {
		if spec.Credential != nil {
			needRoot(t)
		}
		spec.Path, spec.Args = testprog, []string{"testprog", "fds"}
		// Go >= 1.25 keeps two cgroup files open for GOMAXPROCS updates.
		spec.Env = []string{"GODEBUG=containermaxprocs=0,updatemaxprocs=0"}
		r := run(t, &spec)
		if r.stdout != "0 1 2\n" {
			t.Errorf("open fds %q (leaked fd %d), want \"0 1 2\"", r.stdout, fd)
		}
	}
}

func TestSetuidBinary(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := worldDir(t, 0o755)
	id := filepath.Join(dir, "id")
	data, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(id, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(id, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	spec := func(nnp bool, ll *Landlock) *Spec {
		return &Spec{Path: id, Args: []string{"id"}, Credential: nobody, NoNewPrivs: nnp, Landlock: ll}
	}
	// Control: without no_new_privs the copy is setuid root.
	if r := run(t, spec(false, nil)); !strings.Contains(r.stdout, "euid=0") {
		t.Skipf("setuid copy does not elevate here (nosuid?): %q", r.stdout)
	}
	for _, tt := range []struct {
		name string
		spec *Spec
	}{
		{"no_new_privs", spec(true, nil)},
		{"landlock", spec(false, &Landlock{RO: append([]string{dir}, sysRO...), BestEffort: true})},
	} {
		r := run(t, tt.spec)
		if !strings.HasPrefix(r.stdout, "uid=65534") || strings.Contains(r.stdout, "euid") {
			t.Errorf("%s: setuid binary ran as %q", tt.name, r.stdout)
		}
	}
}

func TestRlimits(t *testing.T) {
	t.Parallel()
	needRoot(t)
	tests := []struct {
		name   string
		limits []Rlimit
		// lines of /proc/self/limits: name, soft, hard
		want [][3]string
	}{
		{"several", []Rlimit{
			{Resource: unix.RLIMIT_NOFILE, Cur: 64, Max: 128},
			{Resource: unix.RLIMIT_CORE, Cur: 0, Max: 0},
			{Resource: unix.RLIMIT_STACK, Cur: 4 << 20, Max: 8 << 20},
			{Resource: unix.RLIMIT_AS, Cur: 1 << 30, Max: RlimitInfinity},
			{Resource: unix.RLIMIT_NPROC, Cur: 100, Max: 200},
			{Resource: unix.RLIMIT_CPU, Cur: 10, Max: 20},
			{Resource: unix.RLIMIT_FSIZE, Cur: 1 << 20, Max: 2 << 20},
		}, [][3]string{
			{"Max open files", "64", "128"},
			{"Max core file size", "0", "0"},
			{"Max stack size", "4194304", "8388608"},
			{"Max address space", "1073741824", "unlimited"},
			{"Max processes", "100", "200"},
			{"Max cpu time", "10", "20"},
			{"Max file size", "1048576", "2097152"},
		}},
		{"raise above the server's", []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 1 << 20, Max: 1 << 20}},
			[][3]string{{"Max open files", "1048576", "1048576"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := &Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/limits"}, Credential: nobody, Rlimits: tt.limits}
			var cur unix.Rlimit
			unix.Getrlimit(unix.RLIMIT_NOFILE, &cur)
			if strings.HasPrefix(tt.name, "raise") && !hasCap(t, unix.CAP_SYS_RESOURCE) && cur.Max < 1<<20 {
				// Without CAP_SYS_RESOURCE the child must not start.
				if p, err := testSpawner.Start(spec); err == nil || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
					if p != nil {
						collect(t, p)
					}
					t.Fatalf("raising without CAP_SYS_RESOURCE: %v", err)
				}
				return
			}
			r := run(t, spec)
			for _, w := range tt.want {
				var line string
				for _, l := range strings.Split(r.stdout, "\n") {
					if strings.HasPrefix(l, w[0]+" ") {
						line = l
					}
				}
				f := strings.Fields(strings.TrimPrefix(line, w[0]))
				if len(f) < 2 || f[0] != w[1] || f[1] != w[2] {
					t.Errorf("%s: got %q, want %s %s", w[0], line, w[1], w[2])
				}
			}
		})
	}
}

func TestRlimitsEnforced(t *testing.T) {
	t.Parallel()
	needRoot(t)
	rw := worldDir(t, 0o777)
	tests := []struct {
		name   string
		args   []string
		limits []Rlimit
		sig    syscall.Signal
	}{
		// Not Go programs: the Go runtime ignores SIGXFSZ and SIGXCPU.
		{"fsize ends by SIGXFSZ", []string{"/bin/dd", "if=/dev/zero", "of=" + filepath.Join(rw, "big"), "bs=100000", "count=1"},
			[]Rlimit{{Resource: unix.RLIMIT_FSIZE, Cur: 4096, Max: 4096}}, syscall.SIGXFSZ},
		{"cpu soft below hard ends by SIGXCPU", []string{"/bin/sh", "-c", "while :; do :; done"},
			[]Rlimit{{Resource: unix.RLIMIT_CPU, Cur: 1, Max: 3}}, syscall.SIGXCPU},
		{"cpu soft equal to hard ends by SIGKILL", []string{"/bin/sh", "-c", "while :; do :; done"},
			[]Rlimit{{Resource: unix.RLIMIT_CPU, Cur: 1, Max: 1}}, syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, &Spec{Path: tt.args[0], Args: tt.args, Credential: nobody, Rlimits: tt.limits})
			if r.state.Signal != tt.sig {
				t.Errorf("got %+v (stdout %q stderr %q), want death by %v", r.state, r.stdout, r.stderr, tt.sig)
			}
		})
	}
}

func TestRlimitNproc(t *testing.T) {
	t.Parallel()
	needRoot(t)
	// A uid of its own, so that no other test's processes count.
	cred := &Credential{UID: 64998, GID: 64998}
	path, args := sh(`i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo forked; ps -o pid= -u 64998 | wc -l`)
	p, err := testSpawner.Start(&Spec{Path: path, Args: args, Credential: cred, Rlimits: []Rlimit{{Resource: unix.RLIMIT_NPROC, Cur: 5, Max: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	r := collectNoEOF(t, p)
	if !strings.Contains(r.stderr, "fork") {
		t.Errorf("no fork failure: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if n := countUIDProcs(64998); n > 5 {
		t.Errorf("%d processes of uid 64998, limit 5", n)
	}
}

// collectNoEOF reads what the child wrote until it exits, then kills its
// group (whose sleeping members keep the pipes open) and waits.
func collectNoEOF(t testing.TB, p *Process) result {
	t.Helper()
	p.Stdin.Close()
	var out, errb bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&out, p.Stdout) }()
	go func() { defer wg.Done(); io.Copy(&errb, p.Stderr) }()
	st, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	wg.Wait()
	p.Stdout.Close()
	p.Stderr.Close()
	return result{out.String(), errb.String(), st}
}

func hasCap(t testing.TB, c int) bool {
	v, err := strconv.ParseUint(ownStatus(t)["CapEff"], 16, 64)
	return err == nil && v&(1<<c) != 0
}

func countUIDProcs(uid int) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		var st syscall.Stat_t
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			b, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if s := string(b); len(s) > 0 && !strings.Contains(s[strings.LastIndexByte(s, ')'):], ") Z ") {
				n++
			}
		}
	}
	return n
}

func TestGroupSignal(t *testing.T) {
	t.Parallel()
	path, args := sh(`sleep 1000 & echo $!; wait`)
	for _, spec := range []Spec{{Path: path, Args: args}, {Path: path, Args: args, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}}} {
		p, err := testSpawner.Start(&spec)
		if err != nil {
			t.Fatal(err)
		}
		p.Stdin.Close()
		line := make([]byte, 32)
		n, _ := p.Stdout.Read(line)
		gpid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
		if err != nil {
			t.Fatalf("grandchild pid %q", line[:n])
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		st, err := p.Wait()
		if err != nil || st.Signal != syscall.SIGTERM {
			t.Errorf("leader: %+v %v", st, err)
		}
		if !gone(gpid, 5*time.Second) {
			t.Errorf("grandchild %d survived the group signal", gpid)
		}
		io.Copy(io.Discard, p.Stdout)
		p.Stdout.Close()
		p.Stderr.Close()
	}
}

// Wait kills what the leader left behind in its group (a background
// grandchild here), and Signal after Wait does nothing.
func TestWaitKillsLeftovers(t *testing.T) {
	t.Parallel()
	path, args := sh(`sleep 1000 & echo $!`)
	p, err := testSpawner.Start(&Spec{Path: path, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	p.Stdin.Close()
	line := make([]byte, 32)
	n, _ := p.Stdout.Read(line)
	gpid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatalf("grandchild pid %q", line[:n])
	}
	st, err := p.Wait()
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("leader: %+v %v", st, err)
	}
	if !gone(gpid, 5*time.Second) {
		t.Errorf("grandchild %d outlived its leader's Wait", gpid)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("Signal after Wait: %v", err)
	}
	io.Copy(io.Discard, p.Stdout)
	p.Stdout.Close()
	p.Stderr.Close()
}

// gone waits until pid has exited (missing or a zombie).
func gone(pid int, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		s := string(b)
		if strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z") {
			return true
		}
	}
	return false
}

// The child of a spawn must survive the exit of other spawning threads
// (the parent-death signal fires on the death of the forking thread).
func TestChildSurvivesOtherSpawns(t *testing.T) {
	t.Parallel()
	p, err := testSpawner.Start(&Spec{Path: "/bin/sleep", Args: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			spec := &Spec{Path: "/bin/true", Args: []string{"true"}}
			if i%2 == 0 {
				spec.Landlock = &Landlock{RO: sysRO, BestEffort: true}
				spec.Rlimits = []Rlimit{{Resource: unix.RLIMIT_CORE}}
			}
			run(t, spec)
		}(i)
	}
	wg.Wait()
	time.Sleep(50 * time.Millisecond)
	if err := unix.Kill(p.Pid, 0); err != nil {
		t.Fatalf("child: %v", err)
	}
	p.Kill()
	if st, _ := p.Wait(); st.Signal != syscall.SIGKILL {
		t.Errorf("child died otherwise: %+v", st)
	}
	p.Stdout.Close()
	p.Stderr.Close()
	p.Stdin.Close()
}

// Children die when the server dies: the test binary re-runs itself as a
// "server" that starts a child and exits.
func TestServerDeathKillsChild(t *testing.T) {
	t.Parallel()
	if os.Getenv("SANDBOX_TEST_SERVER") == "1" {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDeathHelper$")
	cmd.Env = append(os.Environ(), "SANDBOX_TEST_SERVER=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("helper printed %q", out)
	}
	for _, pid := range pids {
		if !gone(pid, 5*time.Second) {
			t.Errorf("child %d outlived the server", pid)
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func TestServerDeathHelper(t *testing.T) {
	if os.Getenv("SANDBOX_TEST_SERVER") != "1" {
		t.Skip("helper of TestServerDeathKillsChild")
	}
	for _, spec := range []*Spec{
		{Path: "/bin/sleep", Args: []string{"sleep", "1000"}},
		{Path: "/bin/sleep", Args: []string{"sleep", "1000"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}},
			Landlock: &Landlock{RO: sysRO, BestEffort: true}},
	} {
		p, err := testSpawner.Start(spec)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(p.Pid)
	}
	os.Exit(0) // die without waiting
}

// No descriptor nor goroutine of the server outlives the children, and
// no thread keeps no_new_privs, Landlock or seccomp after its child is
// gone.
func TestNoLeaks(t *testing.T) {
	// Not parallel: it counts the process's descriptors and goroutines.
	needRoot(t)
	// The descriptors a pooled request cgroup keeps while it waits for
	// the next request are counted apart: the pool is bounded, and may
	// grow under the load.
	countFDs := func() (n, inPool int) {
		n, inPool, err := fdcount.Count(0)
		if err != nil {
			t.Fatal(err)
		}
		return n, inPool
	}
	// Goroutines, once those that end after a spawn have ended.
	settle := func() int { return runtime.NumGoroutine() }
	specs := []Spec{
		{Path: "/bin/true", Args: []string{"true"}},
		{Path: "/bin/true", Args: []string{"true"}, Credential: nobody, NoNewPrivs: true, Umask: u32(0o077),
			Rlimits:  []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 64, Max: 64}},
			Landlock: &Landlock{RO: sysRO, RW: []string{"/dev/null"}, ConnectTCP: []uint16{80}, Scope: true, BestEffort: true}},
		{Path: "/nonexistent", Args: []string{"x"}},
		{Path: "/nonexistent", Args: []string{"x"}, Rlimits: []Rlimit{{Resource: unix.RLIMIT_CORE}}},
	}
	// Warm up: the pipes' poller, the Landlock ruleset cache.
	for _, spec := range specs {
		if p, err := testSpawner.Start(&spec); err == nil {
			collect(t, p)
		}
	}
	fds, _ := countFDs()
	gs := settle()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(spec Spec) {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := testSpawner.Start(&spec)
			if err != nil {
				var se *SpawnError
				if !errors.As(err, &se) {
					t.Error(err)
				}
				return
			}
			collect(t, p)
		}(specs[i%len(specs)])
	}
	wg.Wait()
	var n int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n = settle(); n <= gs {
			break
		}
	}
	if n > gs {
		t.Errorf("goroutines: %d before, %d after", gs, n)
	}
	if n, inPool := countFDs(); n != fds || inPool > 3*cgroup.PoolMax {
		t.Errorf("descriptors: %d before, %d after; %d of pooled cgroups (at most %d)", fds, n, inPool, 3*cgroup.PoolMax)
	}
	// The children set up no_new_privs, seccomp and Landlock on
	// themselves: no thread of the server has them.
	var bad []string
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue
		}
		st := procStatus(string(b))
		if st["NoNewPrivs"] != "0" || st["Seccomp"] != "0" {
			bad = append(bad, task.Name())
		}
	}
	if len(bad) > 0 {
		t.Errorf("threads %v kept no_new_privs or seccomp", bad)
	}
}

func TestRlimitNames(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"cpu", unix.RLIMIT_CPU}, {"AS", unix.RLIMIT_AS}, {"RLIMIT_NOFILE", unix.RLIMIT_NOFILE},
		{"nproc", unix.RLIMIT_NPROC}, {"fsize", unix.RLIMIT_FSIZE}, {"core", unix.RLIMIT_CORE},
		{"stack", unix.RLIMIT_STACK}, {" rlimit_data ", unix.RLIMIT_DATA},
	} {
		got, err := ParseRlimitName(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRlimitName(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if n, _ := ParseRlimitName(RlimitName(got)); n != got {
			t.Errorf("RlimitName(%d) = %q does not parse back", got, RlimitName(got))
		}
	}
	if _, err := ParseRlimitName("bogus"); err == nil {
		t.Error("ParseRlimitName(bogus) succeeded")
	}
}
