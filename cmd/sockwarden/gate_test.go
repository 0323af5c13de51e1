package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
)

// With no policy configured, the embedded default policy denies a caller
// with another uid than the server's; the uid is the kernel's
// (SO_PEERCRED), from a client really running as nobody. The server's own
// user (root here) is admitted, and runs sandboxed as nobody.
func TestOtherUIDDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as nobody")
	}
	ts := startServer(t, "-M", "0666")
	// nobody must reach the socket and the binary.
	for _, p := range []string{filepath.Dir(ts.Socket), filepath.Dir(binary(t))} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(uid uint32) (string, string, int) {
		cmd := exec.Command(binary(t), "run", "-n", ts.Socket, "--", "id", "-u")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}

	stdout, stderr, code := run(65534)
	want := regexp.MustCompile(`^sockwarden: denied: this sockwarden runs its built-in default policy, which serves only the user the server runs as; ask the operator to configure a policy \(-p\) \(request [0-9A-Z]{26}\)\n$`)
	if code != 126 || stdout != "" || !want.MatchString(stderr) {
		t.Errorf("as nobody: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, _, code = run(0)
	if code != 0 || !isDynamicUID(stdout) {
		t.Errorf("as root: exit %d, stdout %q, want the program to run as a dynamic uid", code, stdout)
	}
}
