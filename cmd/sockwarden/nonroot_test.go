package main

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The drop-in case sockexec's README describes: the server runs as an
// unprivileged user with the sockexec flags and no configuration. It
// cannot make cgroups nor switch users; it says so in one start-up line
// and serves that user's requests, contained by process groups, its own
// uid, Landlock and rlimits.
func TestNonRootServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the server as another user")
	}
	u, err := user.Lookup("www-data")
	if err != nil {
		t.Fatalf("the test runs the server as www-data: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := shortTempDir(t)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "exec.sock")
	asWWW := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	cmd := exec.Command(binary(t), "-M", "0666", "-m", "200", "-t", "30", "-k", "5", sock)
	cmd.SysProcAttr = asWWW
	ts := startServerCmd(t, sock, cmd)
	ts.waitLog(t, "containment", 0)
	logs := ts.logs.String()
	for _, want := range []string{"process groups only", "programs run as the server's own uid " + u.Uid + " only"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the start-up line does not say %q:\n%s", want, logs)
		}
	}

	// A request from the same user runs, as that user.
	run := exec.Command(binary(t), "run", "-n", sock, "--", "id", "-u")
	run.SysProcAttr = asWWW
	out, err := run.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != u.Uid {
		t.Errorf("request from %s: %v, output %q; want its uid %s", u.Username, err, out, u.Uid)
	}
	// Another user is refused by the default policy, with its message.
	run = exec.Command(binary(t), "run", "-n", sock, "--", "id", "-u")
	run.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	if out, err := run.CombinedOutput(); err == nil || !strings.Contains(string(out), "sockwarden: denied:") {
		t.Errorf("request from nobody: %v, output %q; want a deny", err, out)
	}
}
