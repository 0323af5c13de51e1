package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Private temporary directories.
//
// A spec with TmpDir gets a fresh directory of its own under the
// Spawner's [Options].TmpDir parent: created for it, owned by its uid and
// gid, mode 0700, exported as TMPDIR, writable under its Landlock rules,
// and removed with everything in it once the child has been waited for
// (after its cgroup is empty). The parent is the server's (root, 0711):
// a child cannot list it, and the directories' names are random, so a
// child finds only its own; with a uid of its own (DynamicUser), no other
// request may enter it even by name. Directories that servers which are
// gone left behind are removed when a Spawner is made.

// DefaultTmpDir is the default parent of the private temporary
// directories.
const DefaultTmpDir = "/run/sockwarden/tmp"

// tmpDirs makes and removes the private temporary directories of a
// Spawner.
type tmpDirs struct {
	parent string // "" = none
	err    error  // why there are none
}

// setupTmpDirs prepares parent (creating it, 0711, if missing) and
// removes what servers that are gone left in it.
func setupTmpDirs(parent string) tmpDirs {
	if parent == "" {
		return tmpDirs{err: errors.New("no parent directory configured")}
	}
	if err := os.MkdirAll(parent, 0o711); err != nil {
		return tmpDirs{err: fmt.Errorf("parent %s: %w", parent, err)}
	}
	parent = filepath.Clean(parent)
	var st unix.Stat_t
	if err := unix.Lstat(parent, &st); err != nil {
		return tmpDirs{err: fmt.Errorf("parent %s: %w", parent, err)}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 {
		return tmpDirs{err: fmt.Errorf("parent %s must be a directory of the server's own, writable by nobody else", parent)}
	}
	// Children run as other users: every directory on the way must let
	// them through.
	for d := filepath.Dir(parent); ; d = filepath.Dir(d) {
		if err := unix.Stat(d, &st); err != nil || st.Mode&0o001 == 0 {
			return tmpDirs{err: fmt.Errorf("parent %s: %s is not searchable by other users", parent, d)}
		}
		if d == "/" || d == "." {
			break
		}
	}
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "req-")
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if ok && err == nil && pid > 0 && unix.Kill(pid, 0) == unix.ESRCH {
			os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
	return tmpDirs{parent: parent}
}

// make creates a directory for a child of credential c (nil: the
// server's own identity).
func (t tmpDirs) make(c *Credential) (string, error) {
	if t.parent == "" {
		return "", fmt.Errorf("sandbox: no private temporary directories: %w", t.err)
	}
	var r [12]byte
	rand.Read(r[:])
	dir := filepath.Join(t.parent, fmt.Sprintf("req-%d-%s", os.Getpid(), hex.EncodeToString(r[:])))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("sandbox: temporary directory: %w", err)
	}
	if c != nil {
		if err := os.Chown(dir, int(c.UID), int(c.GID)); err != nil {
			os.Remove(dir)
			return "", fmt.Errorf("sandbox: temporary directory: %w", err)
		}
	}
	return dir, nil
}

// withTmpDir returns spec for a child with the private temporary
// directory dir: TMPDIR set, and the parent writable under Landlock.
func withTmpDir(spec *Spec, dir, parent string) *Spec {
	s := *spec
	s.Env = make([]string, 0, len(spec.Env)+1)
	for _, kv := range spec.Env {
		if !strings.HasPrefix(kv, "TMPDIR=") {
			s.Env = append(s.Env, kv)
		}
	}
	s.Env = append(s.Env, "TMPDIR="+dir)
	if l := spec.Landlock; l != nil {
		ll := *l
		ll.RW = append(append([]string(nil), l.RW...), parent)
		s.Landlock = &ll
	}
	return &s
}
