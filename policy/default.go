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

// Default returns the built-in default policy, for a server started with no
// policy configured. It allows only callers whose uid equals the uid of the
// calling process (the server's), with conservative rlimits (no core dumps,
// CPU, file size, open files and processes capped; deliberately no address
// space limit), a read-only and executable Landlock view of the whole file
// system (as any local user has; file permissions still apply) with only
// /dev/null writable, cwd "/" and umask 0077. When the server runs as
// root, children run as a dynamic uid of their own if dynamicUIDs (the
// server has a dynamic uid range), else as 65534:65534 (nobody). Everyone
// else is denied with a message saying that the default policy is in
// force.
//
// The server's identity reaches the policy as data.sockwarden.server.uid
// and .gid, taken from os.Getuid and os.Getgid when Default is called,
// and dynamicUIDs as .dynamic_uids.
func Default(dynamicUIDs bool) (*Engine, error) {
	opts := Options{
		Paths: []string{"default"},
		Data: map[string]any{"sockwarden": map[string]any{"server": map[string]any{
			"uid":          os.Getuid(),
			"gid":          os.Getgid(),
			"dynamic_uids": dynamicUIDs,
		}}},
	}
	read := func(tests bool) (*loaded, error) { return readPaths(opts.Paths, defaultFS, tests, nil) }
	return load(context.Background(), opts, DefaultSource, read)
}
