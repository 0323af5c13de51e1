package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/plan"
)

// A bare argv[0]'s resolution is reused for exeTTL, then looked up
// again; a path with a slash is taken as it is.
func TestResolveExeCached(t *testing.T) {
	s := newTestServer(t, Config{})
	a, b := t.TempDir(), t.TempDir()
	path := a + ":" + b
	install := func(dir string) string {
		p := filepath.Join(dir, "tool")
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inB := install(b)
	if exe, err := s.resolveExe("tool", path); exe != inB || err != nil {
		t.Fatalf("first lookup: %q, %v; want %q", exe, err, inB)
	}
	inA := install(a) // now first on PATH
	if exe, _ := plan.ResolveExe("tool", path); exe != inA {
		t.Fatalf("control: an uncached lookup finds %q, want %q", exe, inA)
	}
	if exe, _ := s.resolveExe("tool", path); exe != inB {
		t.Errorf("within %v: %q, want the cached %q", exeTTL, exe, inB)
	}
	time.Sleep(exeTTL + 100*time.Millisecond)
	if exe, _ := s.resolveExe("tool", path); exe != inA {
		t.Errorf("after %v: %q, want %q", exeTTL, exe, inA)
	}
	if exe, err := s.resolveExe("/no/such/dir/tool", path); exe != "/no/such/dir/tool" || err != nil {
		t.Errorf("absolute path: %q, %v", exe, err)
	}
}
