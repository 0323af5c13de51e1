package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/sandbox/internal/cgroup"
)

// Two Spawners with different cgroup parents live side by side in one
// process: each child is born in a cgroup under its own Spawner's parent,
// and closing one leaves the other working.
func TestTwoSpawners(t *testing.T) {
	needRoot(t)
	needCgroups(t)
	var sps [2]*Spawner
	for i, name := range []string{"two-a", "two-b"} {
		parent := filepath.Join(testCgroupParent, name)
		sps[i] = newTestSpawner(t, Options{Cgroups: CgroupOptions{Parent: parent}})
		if r := sps[i].Capabilities().Cgroups; !r.Available || r.Parent != parent {
			t.Fatalf("spawner %d: %+v, want cgroups under %s", i, r, parent)
		}
	}
	var wg sync.WaitGroup
	for i, sp := range sps {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := sp.Start(&Spec{Path: "/bin/cat", Args: []string{"cat", "/proc/self/cgroup"}})
				if err != nil {
					t.Error(err)
					return
				}
				r := collect(t, p)
				parent := sps[i].Capabilities().Cgroups.Parent
				if !strings.HasPrefix(p.Cgroup.Path, parent+"/") || !strings.HasSuffix(strings.TrimSpace(r.stdout), filepath.Base(p.Cgroup.Path)) {
					t.Errorf("spawner %d: child in %s (%q), want under %s", i, p.Cgroup.Path, r.stdout, parent)
				}
			}()
		}
	}
	wg.Wait()
	sps[0].Close()
	left, _ := filepath.Glob(filepath.Join(sps[0].Capabilities().Cgroups.Parent, cgroup.Prefix+"*"))
	for _, d := range left {
		if !cgroupRemoved(d, 5*time.Second) {
			t.Errorf("closed spawner left %s", d)
		}
	}
	p, err := sps[1].Start(&Spec{Path: "/bin/true", Args: []string{"true"}})
	if err != nil {
		t.Fatalf("the other spawner after the first closed: %v", err)
	}
	if st := collect(t, p).state; st.ExitCode != 0 {
		t.Errorf("exit %d", st.ExitCode)
	}
}

// New does the cgroup set-up it is asked for, and Probe none of it: a
// parent that does not exist is reported, not made.
func TestProbeChangesNothing(t *testing.T) {
	needRoot(t)
	needCgroups(t)
	parent := filepath.Join(testCgroupParent, "probe-only")
	c := Probe(Options{Cgroups: CgroupOptions{Parent: parent}})
	if !c.Cgroups.Available || c.Cgroups.Parent != parent {
		t.Errorf("probe: %+v", c.Cgroups)
	}
	if _, err := os.Stat(parent); !os.IsNotExist(err) {
		t.Errorf("Probe made %s (%v)", parent, err)
	}
	sp := newTestSpawner(t, Options{Cgroups: CgroupOptions{Parent: parent}})
	if _, err := os.Stat(parent); err != nil {
		t.Errorf("New did not make %s: %v", parent, err)
	}
	if c.LandlockABI != sp.Capabilities().LandlockABI {
		t.Errorf("Probe's Landlock ABI %d, New's %d", c.LandlockABI, sp.Capabilities().LandlockABI)
	}
}
