package policy

import (
	"context"
	"embed"
	"os"
)

// defaultFS holds the built-in default policy (default/default.rego; its
// tests, default/*_test.rego, are skipped when loading).
//
//go:embed default/*.rego
var defaultFS embed.FS

// DefaultSource is what [Engine.Source] returns for the built-in policy.
const DefaultSource = "embedded default"

// defaultSystemRO is the read-only view of the system the default policy
// grants; Default passes those that exist (a Landlock rule needs an
// existing path: /lib64 is missing on some architectures).
var defaultSystemRO = []string{"/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/dev/urandom", "/dev/zero"}

func existing(paths []string) []any {
	out := make([]any, 0, len(paths))
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Default returns the built-in default policy, for a server started with no
// policy configured. It allows only callers whose uid equals the uid of the
// calling process (the server's), with conservative rlimits (no core dumps,
// CPU, file size, open files and processes capped; deliberately no address
// space limit), a read-only Landlock view of /usr, /lib, /lib64, /bin, /sbin
// and /etc with only /dev/null writable, cwd "/" and umask 0077. When the
// server runs as root, children run as 65534:65534 (nobody). Everyone else
// is denied with a message saying that the default policy is in force.
//
// The server's identity reaches the policy as data.sockwarden.server.uid
// and .gid, taken from os.Getuid and os.Getgid when Default is called, and
// the read-only paths as .system_ro: those of the paths above that exist
// then.
func Default() (*Engine, error) {
	return load(context.Background(), Options{
		Paths: []string{"default"},
		Data: map[string]any{"sockwarden": map[string]any{"server": map[string]any{
			"uid":       os.Getuid(),
			"gid":       os.Getgid(),
			"system_ro": existing(defaultSystemRO),
		}}},
	}, defaultFS, DefaultSource)
}
