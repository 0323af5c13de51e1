package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// needCgroups sets up request cgroups under a parent of the test's own,
// removed at the end, and returns the report.
func needCgroups(t testing.TB) Report {
	t.Helper()
	_, own, err := Locate()
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	parent := filepath.Join(own, fmt.Sprintf("cgroup-test-%d-%s", os.Getpid(), filepath.Base(t.Name())))
	m, err := Setup(Options{Parent: parent}, false)
	if err != nil {
		t.Skipf("no per-request cgroups here: %v", err)
	}
	t.Cleanup(func() {
		m.Close()
		Remove(parent, 5*time.Second)
	})
	r := m.Report()
	if !r.Available {
		t.Skip("no per-request cgroups here: " + r.Reason)
	}
	return r
}

func mustOpenDir(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
