package sandbox

import (
	"golang.org/x/sys/unix"

	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLandlockFS(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needABI(t, 3)
	ro := worldDir(t, 0o777) // DAC would allow writing: only Landlock stops it
	rw := worldDir(t, 0o777)
	other := worldDir(t, 0o777)
	trueBin, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{ro, other} {
		if err := os.WriteFile(filepath.Join(d, "data"), []byte("hello\n"), 0o666); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(d, "data"), 0o666)
	}
	for _, d := range []string{rw, other} {
		if err := os.WriteFile(filepath.Join(d, "true"), trueBin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ll := &Landlock{RO: append([]string{ro}, sysRO...), RW: []string{rw, "/dev/null"}}
	tests := []struct {
		name   string
		script string
		ok     bool
		stdout string
	}{
		{"read ro", "cat " + ro + "/data", true, "hello\n"},
		{"list ro", "ls " + ro, true, "data\n"},
		{"create in ro", "echo x > " + ro + "/new", false, ""},
		{"overwrite ro file", "echo x > " + ro + "/data", false, ""},
		{"truncate ro file", "truncate -s 0 " + ro + "/data", false, ""},
		{"remove ro file", "rm -f " + ro + "/data", false, ""},
		{"read unlisted", "cat " + other + "/data", false, ""},
		{"list unlisted", "ls " + other, false, ""},
		{"read /tmp", "ls /tmp", false, ""},
		{"write, read, remove in rw", "echo x > " + rw + "/f && cat " + rw + "/f && rm " + rw + "/f", true, "x\n"},
		{"mkdir in rw", "mkdir " + rw + "/d && rmdir " + rw + "/d && echo ok", true, "ok\n"},
		{"write /dev/null", "echo x > /dev/null && echo ok", true, "ok\n"},
		{"exec from ro", "/usr/bin/true && echo ok", true, "ok\n"},
		{"exec from rw", rw + "/true", false, ""},
		{"exec from unlisted", other + "/true", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, args := sh(tt.script)
			r := run(t, &Spec{Path: path, Args: args, Credential: nobody, Landlock: ll})
			if tt.ok {
				if r.state.ExitCode != 0 || r.stdout != tt.stdout {
					t.Errorf("failed: exit %d stdout %q stderr %q", r.state.ExitCode, r.stdout, r.stderr)
				}
				return
			}
			if r.state.ExitCode == 0 || !strings.Contains(r.stderr, "Permission denied") {
				t.Errorf("not denied: exit %d stdout %q stderr %q", r.state.ExitCode, r.stdout, r.stderr)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "data")); string(b) != "hello\n" {
		t.Errorf("ro file changed to %q", b)
	}
}

// listen returns a loopback TCP listener that accepts and closes.
func listen(t *testing.T) (net.Listener, int) {
	t.Helper()
	return listenServing(t, func(c net.Conn) { c.Close() })
}

// listenServing returns a loopback TCP listener (plain TCP, not MPTCP)
// whose connections go to serve, one after the other.
func listenServing(t *testing.T, serve func(net.Conn)) (net.Listener, int) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	return l, l.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	l, port := listen(t)
	l.Close()
	return port
}

func TestLandlockTCP(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needABI(t, 4)
	_, allowed := listen(t)
	_, denied := listen(t)
	bindOK, bindDenied := freePort(t), freePort(t)
	ll := &Landlock{RO: []string{binDir}, ConnectTCP: []uint16{uint16(allowed)}, BindTCP: []uint16{uint16(bindOK)}}
	unrestricted := &Landlock{RO: []string{binDir}, UnrestrictedTCP: true}

	// The MPTCP case only means something where MPTCP sockets exist.
	mptcp := true
	if fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, unix.IPPROTO_MPTCP); err != nil {
		mptcp = false
	} else {
		syscall.Close(fd)
	}
	tests := []struct {
		name string
		ll   *Landlock
		args []string
		want string // stdout prefix
	}{
		{"connect allowed port", ll, []string{"dial", fmt.Sprint("127.0.0.1:", allowed)}, "ok"},
		{"connect other port", ll, []string{"dial", fmt.Sprint("127.0.0.1:", denied)}, "error: dial tcp 127.0.0.1:" + fmt.Sprint(denied) + ": connect: permission denied"},
		{"connect other port over IPv6", ll, []string{"dial", fmt.Sprint("[::1]:", denied)}, "error: dial tcp [::1]:" + fmt.Sprint(denied) + ": connect: permission denied"},
		{"bind allowed port", ll, []string{"bind", fmt.Sprint(bindOK)}, "ok"},
		{"bind other port", ll, []string{"bind", fmt.Sprint(bindDenied)}, "error: permission denied"},
		{"mptcp bypass", ll, []string{"mptcp-dial", fmt.Sprint(denied)}, "error: socket: protocol not supported"},
		{"unrestricted connect", unrestricted, []string{"dial", fmt.Sprint("127.0.0.1:", denied)}, "ok"},
		{"unrestricted mptcp", unrestricted, []string{"mptcp-dial", fmt.Sprint(denied)}, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(tt.name, "unrestricted mptcp") && !mptcp {
				t.Skip("no MPTCP here")
			}
			if strings.HasSuffix(tt.name, "IPv6") {
				if fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM, 0); err != nil {
					t.Skip("no IPv6")
				} else {
					syscall.Close(fd)
				}
			}
			r := run(t, &Spec{Path: testprog, Args: append([]string{"testprog"}, tt.args...), Credential: nobody, Landlock: tt.ll})
			if !strings.HasPrefix(r.stdout, tt.want) {
				t.Errorf("got %q (stderr %q), want %q", r.stdout, r.stderr, tt.want)
			}
		})
	}
}

// Control for the "mptcp bypass" case: without the seccomp filter, an
// MPTCP socket does get past Landlock's TCP rules on this kernel (if MPTCP
// is enabled), which is why the filter exists.
func TestLandlockMPTCPGapWithoutFilter(t *testing.T) {
	// Not parallel: it switches the filter off.
	needRoot(t)
	needABI(t, 4)
	if fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, unix.IPPROTO_MPTCP); err != nil {
		t.Skip("no MPTCP here")
	} else {
		syscall.Close(fd)
	}
	_, denied := listen(t)
	sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}})
	sp.noNetworkFilter = true
	prev := testSpawner
	testSpawner = sp
	defer func() { testSpawner = prev }()
	ll := &Landlock{RO: []string{binDir}, ConnectTCP: []uint16{1}}
	r := run(t, &Spec{Path: testprog, Args: []string{"testprog", "dial", fmt.Sprint("127.0.0.1:", denied)}, Credential: nobody, Landlock: ll})
	if !strings.Contains(r.stdout, "permission denied") {
		t.Fatalf("TCP connect not denied: %q", r.stdout)
	}
	r = run(t, &Spec{Path: testprog, Args: []string{"testprog", "mptcp-dial", fmt.Sprint(denied)}, Credential: nobody, Landlock: ll})
	if r.stdout != "ok\n" {
		t.Logf("MPTCP connect denied even without the filter (kernel fixed?): %q", r.stdout)
	}
}

func TestLandlockScope(t *testing.T) {
	t.Parallel()
	needABI(t, 6)
	self := fmt.Sprint(os.Getpid())
	for _, tt := range []struct {
		scope bool
		want  string
	}{{false, "ok"}, {true, "error: operation not permitted"}} {
		// Runs as the server (root): Landlock scoping binds root too.
		r := run(t, &Spec{Path: testprog, Args: []string{"testprog", "kill", self, "0"},
			Landlock: &Landlock{RO: []string{binDir}, UnrestrictedTCP: true, Scope: tt.scope}})
		if !strings.HasPrefix(r.stdout, tt.want) {
			t.Errorf("scope %v: signalling the server: %q, want %q", tt.scope, r.stdout, tt.want)
		}
	}
}

func TestLandlockUnsupported(t *testing.T) {
	needABI(t, 1)
	real := LandlockABI()
	base := Landlock{RO: append([]string{"/proc"}, sysRO...)}
	with := func(f func(*Landlock)) *Landlock { l := base; f(&l); return &l }
	tests := []struct {
		name     string
		abi      int
		ll       *Landlock
		missing  []string // nil: must start
		enforced bool
	}{
		{"no landlock", 0, &base, []string{"landlock (not supported by the kernel)", "tcp (needs ABI 4)"}, false},
		{"no landlock, best effort", 0, with(func(l *Landlock) { l.BestEffort = true }), nil, false},
		{"abi 2 lacks truncate", 2, with(func(l *Landlock) { l.UnrestrictedTCP = true }), []string{"truncate (needs ABI 3)"}, false},
		{"abi 3 lacks tcp", 3, &base, []string{"tcp (needs ABI 4)"}, false},
		{"abi 3 with tcp ports", 3, with(func(l *Landlock) { l.ConnectTCP = []uint16{80} }), []string{"tcp (needs ABI 4)"}, false},
		{"abi 3 without tcp restriction", 3, with(func(l *Landlock) { l.UnrestrictedTCP = true }), nil, true},
		{"abi 3 best effort", 3, with(func(l *Landlock) { l.ConnectTCP = []uint16{80}; l.BestEffort = true }), nil, true},
		{"abi 5 lacks scope", 5, with(func(l *Landlock) { l.Scope = true }), []string{"scope (needs ABI 6)"}, false},
		{"abi 4 suffices", 4, &base, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.abi > real {
				t.Skipf("kernel ABI %d", real)
			}
			abi := tt.abi
			if abi == 0 {
				abi = -1 // as a kernel without Landlock
			}
			sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}, LandlockABI: abi})
			p, err := sp.Start(&Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/status"}, Landlock: tt.ll})
			if tt.missing != nil {
				var ue *UnsupportedError
				if !errors.As(err, &ue) {
					if p != nil {
						collect(t, p)
					}
					t.Fatalf("got %v, want *UnsupportedError", err)
				}
				if ue.ABI != tt.abi || !slices.Equal(ue.Missing, tt.missing) {
					t.Errorf("got %+v, want missing %q", ue, tt.missing)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := collect(t, p)
			rep := p.Landlock
			if rep.ABI != tt.abi || rep.Enforced != tt.enforced || rep.BestEffort != tt.ll.BestEffort {
				t.Errorf("report %+v", rep)
			}
			if tt.ll.BestEffort && len(rep.Downgraded) == 0 && tt.abi < 4 {
				t.Errorf("best effort on ABI %d reports no downgrade", tt.abi)
			}
			if st := procStatus(r.stdout); st["NoNewPrivs"] != "1" {
				t.Errorf("NoNewPrivs %q", st["NoNewPrivs"])
			}
		})
	}
}

// A Landlock path replaced by another directory is granted as the new
// one once the cached identity of the path has expired (a second): the
// ruleset is keyed by the files the paths named, not by their names.
func TestLandlockPathReplaced(t *testing.T) {
	t.Parallel()
	needRoot(t)
	needABI(t, 1)
	d := worldDir(t, 0o755)
	x := filepath.Join(d, "x")
	for _, dir := range []string{x, x + ".new"} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(filepath.Base(dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := &Spec{Path: "/bin/cat", Args: []string{"cat", filepath.Join(x, "f")}, Credential: nobody,
		Landlock: &Landlock{RO: append([]string{x}, sysRO...), BestEffort: true}}
	if r := run(t, spec); r.stdout != "x" {
		t.Fatalf("before: %q %q", r.stdout, r.stderr)
	}
	if err := os.Rename(x, x+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(x+".new", x); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pathIDTTL + 100*time.Millisecond)
	if r := run(t, spec); r.stdout != "x.new" {
		t.Errorf("after the replacement: %q %q (exit %d)", r.stdout, r.stderr, r.state.ExitCode)
	}
}

// The ruleset cache lends its descriptors: a hit takes no descriptor of
// its own, and an entry evicted or a cache closed while a child's fork
// still borrows the descriptor keeps it open until it is given back.
func TestRulesetCacheLends(t *testing.T) {
	open := func(fd int) bool { _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); return err == nil }
	build := func() (int, error) { return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0) }
	var c rulesetCache
	fd1, put1, err := c.get("a", build)
	if err != nil {
		t.Fatal(err)
	}
	fd2, put2, err := c.get("a", func() (int, error) { t.Fatal("built again"); return -1, nil })
	if err != nil {
		t.Fatal(err)
	}
	if fd2 != fd1 {
		t.Errorf("a hit returned descriptor %d, not the cached %d", fd2, fd1)
	}
	put2()
	// Fill the cache so that "a" (least recently used, still lent) goes.
	var keep []int
	for i := range rulesetCacheSize {
		fd, put, err := c.get(fmt.Sprint("k", i), build)
		if err != nil {
			t.Fatal(err)
		}
		put()
		keep = append(keep, fd)
	}
	if _, ok := c.entries["a"]; ok {
		t.Fatal("the least recently used entry was not evicted")
	}
	if !open(fd1) {
		t.Fatal("an evicted entry's descriptor was closed while lent")
	}
	put1()
	if open(fd1) && !slices.Contains(keep, fd1) {
		t.Error("an evicted entry's descriptor outlived its last borrower")
	}
	// Closing the cache while one is lent.
	fd3, put3, err := c.get("k5", build)
	if err != nil {
		t.Fatal(err)
	}
	c.close()
	if !open(fd3) {
		t.Fatal("close closed a lent descriptor")
	}
	put3()
	if open(fd3) {
		t.Error("a lent descriptor outlived the closed cache")
	}
	for _, fd := range keep {
		if fd != fd3 && open(fd) {
			t.Errorf("descriptor %d outlived the closed cache", fd)
		}
	}
}
