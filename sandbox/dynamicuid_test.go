package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dynamicSpawner returns a Spawner handing out the uids of r (tests use
// ranges below the default one, which servers of other test packages
// share), with the
// test cgroups when there are.
func dynamicSpawner(t *testing.T, r UIDRange) *Spawner {
	t.Helper()
	needRoot(t)
	o := Options{DynamicUIDs: r, Cgroups: CgroupOptions{Disabled: true}}
	if testCgroupParent != "" {
		o.Cgroups = CgroupOptions{Parent: testCgroupParent}
	}
	return newTestSpawner(t, o)
}

// startHeld starts spec on sp and returns it once it has printed its
// first line (the line is returned too).
func startHeld(t *testing.T, sp *Spawner, spec *Spec) (*Process, string) {
	t.Helper()
	p := mustStartOn(t, sp, spec)
	line, _ := bufio.NewReader(p.Stdout).ReadString('\n')
	return p, line
}

func procUID(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(procStatus(string(b))["Uid"])[0]
}

func TestDynamicUIDs(t *testing.T) {
	r := UIDRange{59000, 59002}
	sp := dynamicSpawner(t, r)
	spec := &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "echo up; exec sleep 30"}, DynamicUser: true}
	p1, _ := startHeld(t, sp, spec)
	p2, _ := startHeld(t, sp, spec)
	u1, u2 := p1.Credential.UID, p2.Credential.UID
	if u1 == u2 || u1 < r.First || u1 > r.Last || u2 < r.First || u2 > r.Last {
		t.Fatalf("uids %d and %d, want two distinct ones in %v", u1, u2, r)
	}
	if got := procUID(t, p1.Pid); got != fmt.Sprint(u1) {
		t.Errorf("the child runs as %s, reported %d", got, u1)
	}
	// Another server with the same range skips the uids this one holds.
	other := dynamicSpawner(t, r)
	p3, _ := startHeld(t, other, spec)
	if u3 := p3.Credential.UID; u3 == u1 || u3 == u2 {
		t.Errorf("a second server took uid %d, in use by the first", u3)
	}
	if _, err := other.Start(spec); !errors.Is(err, ErrNoDynamicUID) {
		t.Errorf("with every uid in use: %v, want ErrNoDynamicUID", err)
	}
	// Back in the pool once waited for.
	p1.Kill()
	p1.Wait()
	p4, _ := startHeld(t, other, spec)
	if p4.Credential.UID != u1 {
		t.Errorf("got uid %d, want the released %d", p4.Credential.UID, u1)
	}
	if _, err := sp.Start(&Spec{Path: "/bin/true", Args: []string{"true"}, DynamicUser: true, Credential: nobody}); err == nil {
		t.Error("DynamicUser with a Credential started")
	}
}

func TestDynamicUIDRangeChecks(t *testing.T) {
	if err := checkPasswd("testdata/passwd", UIDRange{61184, 65519}); err == nil || !strings.Contains(err.Error(), `user "dyn" with id 61200`) {
		t.Errorf("overlap with /etc/passwd: %v", err)
	}
	if err := checkPasswd("testdata/passwd", UIDRange{61201, 65519}); err != nil {
		t.Errorf("no overlap: %v", err)
	}
	for _, s := range []string{"61184-65519", " 1 - 2 "} {
		if _, err := ParseUIDRange(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "5", "0-10", "10-5", "a-b", "1-4294967295"} {
		if _, err := ParseUIDRange(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}

// Request 1 holds 64 processes, the RLIMIT_NPROC of both requests. With
// a uid each, request 2 still forks; sharing one uid (the control), it
// cannot. The control's shared uid is one no other process uses (not
// nobody, whose processes elsewhere on the host, such as other test
// packages' children, RLIMIT_NPROC would count too).
func TestDynamicUIDNproc(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59010, 59019})
	nproc := []Rlimit{{Resource: unix.RLIMIT_NPROC, Cur: 64, Max: 64}}
	for _, dynamic := range []bool{true, false} {
		t.Run(fmt.Sprintf("dynamic=%v", dynamic), func(t *testing.T) {
			spec := func(script string) *Spec {
				s := &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Rlimits: nproc, DynamicUser: dynamic}
				if !dynamic {
					s.Credential = &Credential{UID: 59009, GID: 59009} // outside the range: one uid for both
				}
				return s
			}
			hog, line := startHeld(t, sp, spec("for i in $(seq 63); do sleep 30 & done; echo started; wait"))
			if line != "started\n" {
				t.Fatalf("request 1: %q", line)
			}
			p, err := sp.Start(spec("/bin/true && echo forked"))
			if err != nil {
				t.Fatal(err)
			}
			r := collect(t, p)
			hog.Kill()
			if dynamic && r.stdout != "forked\n" {
				t.Errorf("request 2: %q %q, want it to fork", r.stdout, r.stderr)
			}
			if !dynamic && (r.stdout != "" || !strings.Contains(r.stderr, "fork")) {
				t.Errorf("control: request 2 %q %q, want its fork refused", r.stdout, r.stderr)
			}
		})
	}
}

// A file of nobody's, outside any writable path: a request with a uid of
// its own cannot chmod it or set its times; one running as nobody (the
// control) can, since Landlock does not cover either.
func TestDynamicUIDOwnership(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59020, 59029})
	dir, err := os.MkdirTemp("", "sockwarden-own-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	file := filepath.Join(dir, "nobodys")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(file, 65534, 65534)
	ll := &Landlock{RO: []string{"/"}, RW: []string{"/dev/null"}, UnrestrictedTCP: true}
	for _, dynamic := range []bool{true, false} {
		for _, cmd := range [][]string{{"/bin/chmod", "chmod", "0777", file}, {"/usr/bin/touch", "touch", "-d", "2001-01-01", file}} {
			t.Run(fmt.Sprintf("%s dynamic=%v", cmd[1], dynamic), func(t *testing.T) {
				spec := &Spec{Path: cmd[0], Args: cmd[1:], Landlock: ll, DynamicUser: dynamic}
				if !dynamic {
					spec.Credential = nobody
				}
				p, err := sp.Start(spec)
				if err != nil {
					t.Fatal(err)
				}
				r := collect(t, p)
				// What happened to the file, whatever the tool said.
				var st unix.Stat_t
				if err := unix.Stat(file, &st); err != nil {
					t.Fatal(err)
				}
				changed := st.Mode&0o777 != 0o644 || time.Unix(st.Mtim.Unix()).Year() == 2001
				if dynamic && (changed || r.state.ExitCode == 0) {
					t.Errorf("%s changed nobody's file (mode %o, exit %d, %q)", cmd[1], st.Mode&0o777, r.state.ExitCode, r.stderr)
				}
				if !dynamic && !changed {
					t.Errorf("control: %s as nobody did not change the file: %q", cmd[1], r.stderr)
				}
				os.Chmod(file, 0o644)
				os.Chtimes(file, time.Now(), time.Now())
			})
		}
	}
}

// A host process running as nobody can neither trace a request's child
// nor read its environment when the child has a uid of its own; it can
// when the child runs as nobody too (the control).
func TestDynamicUIDPtraceAndEnviron(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59030, 59039})
	for _, dynamic := range []bool{true, false} {
		t.Run(fmt.Sprintf("dynamic=%v", dynamic), func(t *testing.T) {
			spec := &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "echo up; exec sleep 30"}, Env: []string{"SECRET=s3cr3t"}, DynamicUser: dynamic}
			if !dynamic {
				spec.Credential = nobody
			}
			p, _ := startHeld(t, sp, spec)
			time.Sleep(20 * time.Millisecond) // past the exec of sleep
			for _, probe := range []string{"environ", "ptrace"} {
				out, _ := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", testprog, probe, fmt.Sprint(p.Pid)).Output()
				got := string(out)
				if dynamic && !strings.HasPrefix(got, "error: ") {
					t.Errorf("%s from a host process as nobody: %q, want an error", probe, got)
				}
				if !dynamic && !strings.HasPrefix(got, "ok") {
					t.Errorf("control: %s: %q", probe, got)
				}
				if probe == "environ" && strings.Contains(got, "s3cr3t") != !dynamic {
					t.Errorf("environ: %q", got)
				}
			}
		})
	}
}

// A System V segment a request with the host's IPC leaves behind is
// removed when its dynamic uid goes back to the pool.
func TestDynamicUIDRemovesIPC(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59040, 59049})
	key := 0x5b000000 + os.Getpid()%(1<<20)
	t.Cleanup(func() {
		if id, err := unix.SysvShmGet(key, 0, 0); err == nil {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		}
	})
	p, err := sp.Start(&Spec{Path: testprog, Args: []string{"testprog", "shm-write", fmt.Sprint(key)}, DynamicUser: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := collect(t, p); r.stdout != "ok\n" {
		t.Fatalf("%q %q", r.stdout, r.stderr)
	}
	if _, err := unix.SysvShmGet(key, 0, 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the segment outlived its request: %v", err)
	}
}

// A key request 1 adds to its user keyring (@u), readable by its uid:
// the default seccomp profile refuses the keyring calls; without a
// profile, a uid of its own keeps request 2 from reading it; sharing
// nobody (the control), request 2 reads it.
func TestKeyringAcrossRequests(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59060, 59069})
	name := fmt.Sprintf("sockwarden-test-%d", os.Getpid())
	none := &Seccomp{Profile: SeccompNone}
	tests := []struct {
		name      string
		sc        *Seccomp
		dynamic   bool
		add, read string
	}{
		{"default profile", &Seccomp{Profile: SeccompDefault}, false, "error: operation not permitted", "error: operation not permitted"},
		{"no profile, dynamic uids", none, true, "ok", "error: required key not available"},
		{"no profile, both nobody (control)", none, false, "ok", "ok secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func(args ...string) string {
				spec := &Spec{Path: testprog, Args: append([]string{"testprog"}, args...), Seccomp: tt.sc, DynamicUser: tt.dynamic}
				if !tt.dynamic {
					spec.Credential = nobody
				}
				p, err := sp.Start(spec)
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(collect(t, p).stdout)
			}
			t.Cleanup(func() { run("key-clear") })
			if got := run("key-add", name, "secret"); got != tt.add {
				t.Errorf("request 1 adds a key: %q, want %q", got, tt.add)
			}
			if got := run("key-read", name); got != tt.read {
				t.Errorf("request 2 reads it: %q, want %q", got, tt.read)
			}
		})
	}
}

// A file a request leaves in /dev/shm is removed when its dynamic uid
// goes back to the pool, whether /dev/shm was empty before (the one-stat
// look) or held another user's file, which stays (the control: only the
// request's own files go).
func TestDynamicUIDRemovesShmFiles(t *testing.T) {
	sp := dynamicSpawner(t, UIDRange{59070, 59079})
	mine := fmt.Sprintf("/dev/shm/sockwarden-test-%d-req", os.Getpid())
	other := fmt.Sprintf("/dev/shm/sockwarden-test-%d-other", os.Getpid())
	t.Cleanup(func() { os.Remove(mine); os.Remove(other) })
	for _, withOther := range []bool{false, true} {
		t.Run(fmt.Sprintf("another's file there: %v", withOther), func(t *testing.T) {
			if withOther {
				if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(other)
			}
			p, err := sp.Start(&Spec{Path: "/bin/sh", Args: []string{"sh", "-c", "echo x > " + mine + " && echo ok"}, DynamicUser: true})
			if err != nil {
				t.Fatal(err)
			}
			if r := collect(t, p); r.stdout != "ok\n" {
				t.Fatalf("the request could not write %s: %q %q", mine, r.stdout, r.stderr)
			}
			if _, err := os.Stat(mine); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the request's file outlived it: %v", err)
			}
			if _, err := os.Stat(other); withOther && err != nil {
				t.Errorf("another user's file was removed: %v", err)
			}
		})
	}
}

// sharedDir.empty tells an empty tmpfs directory from one holding a
// file or a directory, and says false for a directory of another file
// system (which is then listed).
func TestSharedDirEmpty(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	d := newSharedDir(dir)
	if d.dev == 0 {
		t.Fatal("a tmpfs was not recognised")
	}
	if !d.empty() {
		t.Fatal("an empty tmpfs directory: not empty")
	}
	for _, mk := range []func(string) error{
		func(p string) error { return os.WriteFile(p, nil, 0o600) },
		func(p string) error { return os.Mkdir(p, 0o700) },
		func(p string) error { return os.Symlink("/", p) },
	} {
		p := filepath.Join(dir, ".x")
		if err := mk(p); err != nil {
			t.Fatal(err)
		}
		if d.empty() {
			t.Errorf("%s exists, yet empty", p)
		}
		os.Remove(p)
		if !d.empty() {
			t.Errorf("%s removed, yet not empty", p)
		}
	}
	// Another file system mounted over it since: not trusted.
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if d.empty() {
		t.Error("a file system mounted over the directory since was trusted")
	}
	if newSharedDir(t.TempDir()).dev != 0 {
		t.Log("the test's temporary directory is on a tmpfs")
	}
}
