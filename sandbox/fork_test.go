package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A step of the child's setup that fails is reported by name with its
// errno, and is not mistaken for a missing program.
func TestSetupStepErrors(t *testing.T) {
	t.Parallel()
	needRoot(t)
	private := t.TempDir() // 0700 root: nobody cannot enter it
	tests := []struct {
		name  string
		spec  Spec
		step  string
		errno syscall.Errno
	}{
		{"missing dir", Spec{Path: "/bin/true", Args: []string{"true"}, Dir: "/nonexistent/dir"}, "chdir", syscall.ENOENT},
		// chdir runs after the switch to the credential.
		{"dir closed to the user", Spec{Path: "/bin/true", Args: []string{"true"}, Dir: private, Credential: nobody}, "chdir", syscall.EACCES},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := testSpawner.Start(&tt.spec)
			if err == nil {
				collect(t, p)
				t.Fatal("Start succeeded")
			}
			var se *SpawnError
			if errors.As(err, &se) {
				t.Errorf("got a *SpawnError (%v), want a setup error", err)
			}
			if !errors.Is(err, tt.errno) || !strings.Contains(err.Error(), tt.step) {
				t.Errorf("got %v, want %s: %v", err, tt.step, tt.errno)
			}
		})
	}
	// Control: the same directory as root works.
	run(t, &Spec{Path: "/bin/true", Args: []string{"true"}, Dir: private})
}

// Without an RLIMIT_NOFILE of its own, a child gets the soft limit the
// server started with, as a child of os/exec does, not the one the Go
// runtime raised the server's to. The test binary is re-run as the server
// with a soft limit of 512.
func TestDefaultNofile(t *testing.T) {
	if os.Getenv("SANDBOX_NOFILE_HELPER") == "1" {
		var own unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_NOFILE, &own)
		child := run(t, &Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/limits"}}).stdout
		for _, l := range strings.Split(child, "\n") {
			if strings.HasPrefix(l, "Max open files") {
				f := strings.Fields(l)
				os.Stdout.WriteString(fmt.Sprintf("server %d child %s %s\n", own.Cur, f[3], f[4]))
			}
		}
		return
	}
	t.Parallel()
	var own unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &own)
	if own.Max < 1024 {
		t.Skipf("hard limit %d", own.Max)
	}
	cmd := exec.Command("/bin/sh", "-c", `ulimit -S -n 512 && exec "$0" -test.run='^TestDefaultNofile$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "SANDBOX_NOFILE_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var server, soft, hard uint64
	if _, err := fmt.Sscanf(string(out), "server %d child %d %d", &server, &soft, &hard); err != nil {
		t.Fatalf("helper printed %q: %v", out, err)
	}
	if server <= 512 {
		t.Fatalf("control: the runtime did not raise the helper's soft limit (%d)", server)
	}
	if soft != 512 || hard != own.Max {
		t.Errorf("child's open files limit %d/%d, want 512/%d", soft, hard, own.Max)
	}
}

// A signal that the server inherited as ignored, and that the Go runtime
// leaves alone (32), is not ignored in the child. The test binary is
// re-run as the server with signal 32 ignored.
func TestInheritedIgnoredSignal(t *testing.T) {
	if os.Getenv("SANDBOX_IGN32_HELPER") == "1" {
		st := procStatus(run(t, &Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/status"}}).stdout)
		self, _ := os.ReadFile("/proc/self/status")
		os.Stdout.WriteString("server " + procStatus(string(self))["SigIgn"] + " child " + st["SigIgn"] + "\n")
		return
	}
	// Not parallel: the test process ignores signal 32 meanwhile, which
	// its os/exec child inherits.
	ign := kernelSigaction{handler: 1} // SIG_IGN
	var old kernelSigaction
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, 32, uintptr(unsafe.Pointer(&ign)), uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
		t.Fatal(e)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInheritedIgnoredSignal$")
	cmd.Env = append(os.Environ(), "SANDBOX_IGN32_HELPER=1")
	out, err := cmd.CombinedOutput()
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, 32, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) < 4 || f[0] != "server" || f[2] != "child" {
		t.Fatalf("helper printed %q", out)
	}
	const bit32 = "0000000080000000"
	if f[1] != bit32 {
		t.Fatalf("control: the helper server ignores %s, want %s", f[1], bit32)
	}
	if f[3] != "0000000000000000" {
		t.Errorf("child ignores %s, want nothing", f[3])
	}
}

// PidFD turns readable when the child exits, not before; Wait then reaps.
func TestPidFD(t *testing.T) {
	t.Parallel()
	p, err := testSpawner.Start(&Spec{Path: "/bin/sleep", Args: []string{"sleep", "0.3"}})
	if err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(p.PidFD()), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 0); n != 0 || err != nil {
		t.Errorf("pidfd ready while the child runs: %d %v", n, err)
	}
	if n, err := unix.Poll(pfd, 5000); n != 1 || err != nil || pfd[0].Revents&unix.POLLIN == 0 {
		t.Errorf("pidfd not ready after the child's exit: %d %v %#x", n, err, pfd[0].Revents)
	}
	r := collect(t, p)
	if r.state.ExitCode != 0 {
		t.Errorf("exit %+v", r.state)
	}
}
