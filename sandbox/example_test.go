package sandbox_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/sockwarden/sockwarden/sandbox"
)

// Start runs echo with a clean environment, a umask, two resource limits,
// no_new_privs and Landlock rules that let it read and execute only the
// system directories. A server running as root would also set
// Credential (e.g. nobody) so that the child does not run as root. (This
// Spawner runs its children without cgroups; see the example of New.)
func ExampleSpawner_Start() {
	sp, err := sandbox.New(sandbox.Options{Cgroups: sandbox.CgroupOptions{Disabled: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer sp.Close()
	nofile, _ := sandbox.ParseRlimitName("nofile")
	core, _ := sandbox.ParseRlimitName("core")
	umask := uint32(0o077)
	p, err := sp.Start(&sandbox.Spec{
		Path:  "/bin/echo",
		Args:  []string{"echo", "hello from the sandbox"},
		Env:   []string{"PATH=/usr/bin:/bin", "LANG=C"},
		Dir:   "/",
		Umask: &umask,
		Rlimits: []sandbox.Rlimit{
			{Resource: nofile, Cur: 64, Max: 64},
			{Resource: core, Cur: 0, Max: 0},
		},
		NoNewPrivs: true,
		Landlock: &sandbox.Landlock{
			RO:         []string{"/usr", "/lib", "/lib64", "/bin", "/etc"},
			RW:         []string{"/dev/null"},
			BestEffort: true, // run on kernels without Landlock too; see p.Landlock
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	p.Stdin.Close()
	out, _ := io.ReadAll(p.Stdout)
	io.Copy(io.Discard, p.Stderr)
	st, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (exit %d)\n", strings.TrimSpace(string(out)), st.ExitCode)
	// Output: hello from the sandbox (exit 0)
}

// A server sets up per-request cgroups once, at start-up, and logs what
// it got; each child then runs in a cgroup of its own, here with limits
// that a host without the memory and pids controllers cannot enforce
// (Start then fails with a *CgroupUnsupportedError: set BestEffort to
// run anyway). Kill reaches every process of the cgroup, and Wait
// reports what the cgroup saw.
func ExampleNew() {
	sp, err := sandbox.New(sandbox.Options{}) // cgroups under <own cgroup>/sockwarden
	if err != nil {
		log.Fatal(err)
	}
	defer sp.Close()                     // at shutdown: the idle cgroups kept for reuse
	log.Print(sp.Capabilities().Cgroups) // e.g. "per-request cgroups under /sys/fs/cgroup/system.slice/sockwarden.service/sockwarden (controllers: cpu, memory, pids)"

	p, err := sp.Start(&sandbox.Spec{
		Path:   "/bin/sh",
		Args:   []string{"sh", "-c", "setsid sleep 60 & echo started"},
		Cgroup: &sandbox.CgroupSpec{MemoryMax: 256 << 20, PidsMax: 64},
	})
	var unsupported *sandbox.CgroupUnsupportedError
	if errors.As(err, &unsupported) {
		log.Fatalf("this host cannot enforce %v: %s", unsupported.Missing, unsupported.Reason)
	} else if err != nil {
		log.Fatal(err)
	}
	p.Stdin.Close()
	io.Copy(io.Discard, p.Stdout)
	io.Copy(io.Discard, p.Stderr)
	st, err := p.Wait() // also kills the setsid sleep, which left the process group
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exit %d, %d left behind and killed, peak memory %d bytes\n",
		st.ExitCode, st.Cgroup.Killed, st.Cgroup.MemoryPeak)
}
