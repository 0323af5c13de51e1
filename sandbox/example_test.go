package sandbox_test

import (
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/sockwarden/sockwarden/sandbox"
)

// Start runs echo with a clean environment, a umask, two resource limits,
// no_new_privs and Landlock rules that let it read and execute only the
// system directories. A server running as root would also set
// Credential (e.g. nobody) so that the child does not run as root.
func ExampleStart() {
	nofile, _ := sandbox.ParseRlimitName("nofile")
	core, _ := sandbox.ParseRlimitName("core")
	umask := uint32(0o077)
	p, err := sandbox.Start(&sandbox.Spec{
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
