package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The private temporary directory: usable under a Landlock view that
// writes nowhere else (the control: /tmp under the same rules), its own
// (another request with another uid cannot enter it; with the same uid,
// the control, it can), and gone when the request is.
// tmpParent returns a parent directory for temporary directories that
// other users can reach (t.TempDir's parent is 0700).
func tmpParent(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "sockwarden-tmpdirs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o711)
	return filepath.Join(base, "tmp")
}

func TestTmpDir(t *testing.T) {
	needRoot(t)
	parent := tmpParent(t)
	sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}, DynamicUIDs: UIDRange{59050, 59059}, TmpDir: parent})
	if sp.Capabilities().TmpDir != parent {
		t.Fatalf("no temporary directories: %s", sp.Capabilities().TmpDirReason)
	}
	ll := &Landlock{RO: []string{"/"}, RW: []string{"/dev/null"}, UnrestrictedTCP: true}

	// Usable: a file written and read back; the control, /tmp, refused.
	p, err := sp.Start(&Spec{Path: "/bin/sh", Args: []string{"sh", "-c", `echo data > "$TMPDIR/f" && cat "$TMPDIR/f" && echo "$TMPDIR" && stat -c %a:%u "$TMPDIR" && id -u; echo x > /tmp/sockwarden-tmpdir-control-$$`},
		Landlock: ll, DynamicUser: true, TmpDir: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := p.TmpDir
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the directory is not there while the request runs: %v", err)
	}
	r := collect(t, p)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || lines[0] != "data" || lines[1] != dir || lines[2] != "700:"+lines[3] {
		t.Errorf("inside: %q (stderr %q), want the data back, TMPDIR %s, mode 700 and owned by the request's uid", r.stdout, r.stderr, dir)
	}
	if !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("control: writing /tmp under the same rules: stderr %q, want refused", r.stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the directory outlived its request: %v", err)
	}

	// Private: request 2 tries request 1's directory by name.
	for _, dynamic := range []bool{true, false} {
		t.Run(fmt.Sprintf("another request, dynamic=%v", dynamic), func(t *testing.T) {
			spec := func(script string) *Spec {
				s := &Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Landlock: ll, TmpDir: true, DynamicUser: dynamic}
				if !dynamic {
					s.Credential = nobody
				}
				return s
			}
			holder, line := startHeld(t, sp, spec(`echo secret > "$TMPDIR/s"; echo ready; exec sleep 30`))
			if line != "ready\n" {
				t.Fatalf("request 1: %q", line)
			}
			p, err := sp.Start(spec("cat " + holder.TmpDir + "/s"))
			if err != nil {
				t.Fatal(err)
			}
			r := collect(t, p)
			if dynamic && (r.stdout != "" || !strings.Contains(r.stderr, "Permission denied")) {
				t.Errorf("request 2 read request 1's file: %q %q", r.stdout, r.stderr)
			}
			if !dynamic && r.stdout != "secret\n" {
				t.Errorf("control: request 2 as the same uid: %q %q, want it to read the file", r.stdout, r.stderr)
			}
		})
	}
}

// A directory a server that is gone left behind is removed by the next.
func TestTmpDirStaleRemoved(t *testing.T) {
	parent := tmpParent(t)
	os.MkdirAll(filepath.Join(parent, "req-999999999-abc", "deep"), 0o700)
	mine := filepath.Join(parent, fmt.Sprintf("req-%d-live", os.Getpid()))
	os.MkdirAll(mine, 0o700)
	newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}, TmpDir: parent})
	if _, err := os.Stat(filepath.Join(parent, "req-999999999-abc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead server's directory is still there: %v", err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("a live server's directory was removed: %v", err)
	}
	// A parent other users cannot reach is refused, saying why.
	closed := filepath.Join(t.TempDir(), "tmp")
	sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Disabled: true}, TmpDir: closed})
	if c := sp.Capabilities(); c.TmpDir != "" || !strings.Contains(c.TmpDirReason, "is not searchable by other users") {
		t.Errorf("capabilities %q %q", c.TmpDir, c.TmpDirReason)
	}
}
