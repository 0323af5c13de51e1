// Package kaudittest lets tests change the kernel's audit settings,
// which belong to the whole host: one test at a time across all test
// processes (a lock file), and the settings it found put back when the
// test ends. It is imported by tests only.
package kaudittest

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/kaudit"
)

// Set takes the host's audit settings for the rest of the test, turns
// the kernel's audit on or off, and returns the status it found. The
// test is skipped where the process may not change the setting (tests
// that need it run as root in CI, where it is never skipped).
func Set(t testing.TB, enabled bool) kaudit.Status {
	t.Helper()
	lock(t)
	found, err := kaudit.GetStatus()
	if err != nil {
		t.Fatalf("reading the kernel's audit status: %v", err)
	}
	if found.Enabled == 2 {
		t.Skip("the kernel's audit setting is locked (enabled=2)")
	}
	t.Cleanup(func() {
		if err := kaudit.SetBacklogLimit(found.BacklogLimit); err != nil {
			t.Errorf("restoring the audit backlog limit: %v", err)
		}
		if err := kaudit.SetEnabled(found.Enabled == 1); err != nil {
			t.Errorf("restoring the kernel's audit setting: %v", err)
		}
	})
	if err := kaudit.SetEnabled(enabled); err != nil {
		t.Fatalf("setting the kernel's audit: %v", err)
	}
	return found
}

// SetBacklogLimit sets the kernel's audit backlog limit for the rest of
// a test that called Set, which puts it back.
func SetBacklogLimit(t testing.TB, n uint32) {
	t.Helper()
	if err := kaudit.SetBacklogLimit(n); err != nil {
		t.Fatal(err)
	}
}

// lock waits for the host-wide lock of the audit settings and holds it
// until the test ends.
func lock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "sockwarden-kaudittest.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}
