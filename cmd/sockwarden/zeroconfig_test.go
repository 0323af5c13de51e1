package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With zero configuration, as root, the embedded default policy runs a
// drop-in user's ordinary requests: a script in a 0755 directory, `ls .`,
// `tail` of a file there, `ls /proc/self/fd`. The control shows the sandbox
// is still on: writing to world-writable /tmp, which file permissions
// allow, is refused.
func TestZeroConfigOrdinaryRequests(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the default policy runs children as nobody only when the server is root")
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho job ran as $(id -u)\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "app.log")
	if err := os.WriteFile(logFile, []byte("first\nlast line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t) // no -c, no -p

	tests := []struct {
		name string
		argv []string
		want string // substring of stdout
	}{
		{"a script outside the system directories", []string{script}, "job ran as 6"}, // a dynamic uid
		{"ls . (cwd /)", []string{"ls", "."}, "etc"},
		{"tail of a file there", []string{"tail", "-n", "1", logFile}, "last line"},
		{"ls /proc/self/fd", []string{"ls", "/proc/self/fd"}, "0\n1\n2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := decodeReply(t, exchange(t, ts.Socket, request(tt.argv, nil, true)))
			if r.Final[0] != "exitcode" || r.Final[1] != "0" || !strings.Contains(r.Stdout.String(), tt.want) {
				t.Errorf("%v: %v, stdout %q, stderr %q; want exit 0 and %q", tt.argv, r.Final, r.Stdout.String(), r.Stderr.String(), tt.want)
			}
		})
	}

	t.Run("control: writes are still confined", func(t *testing.T) {
		target := fmt.Sprintf("/tmp/sockwarden-zeroconfig-%d", os.Getpid())
		defer os.Remove(target)
		r := decodeReply(t, exchange(t, ts.Socket, request([]string{"sh", "-c", "echo x > " + target}, nil, true)))
		if r.Final[1] == "0" {
			t.Errorf("a write to %s succeeded under the default policy", target)
		}
		if _, err := os.Stat(target); err == nil {
			t.Errorf("%s was written", target)
		}
	})
}
