package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// Secrets in argvs reach neither the audit file nor the operator log: a
// policy's mask by position on an allowed request, and the default
// patterns on denied ones; each record lists what it masked.
func TestMaskingSecrets(t *testing.T) {
	dir := t.TempDir()
	rego := `package sockwarden

default decision := {"allow": false, "message": "no", "reasons": ["not echo"]}

decision := {"allow": true, "run_as": {"user": "65534"}, "mask": {"args": [2]}} if input.argv[0] == "echo"
`
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, tr := startAuditServer(t, "-p", dir, "-d")
	mark := tr.count(t)
	cases := []struct {
		argv    []string
		secret  string
		shown   string // the masked argument as recorded
		pointer string
	}{
		{[]string{"echo", "user", "s3cr3t-by-position"}, "s3cr3t-by-position", "***", "/process/args/2"},
		{[]string{"curl", "-H", "Authorization: Bearer t0ps3cr3t", "https://example.com/"}, "t0ps3cr3t", "Authorization:***", "/process/args/2"},
		{[]string{"mysql", "--password=hunter2", "db"}, "hunter2", "--password=***", "/process/args/1"},
	}
	for _, c := range cases {
		exchange(t, ts.Socket, request(c.argv, nil, true))
	}
	tr.waitFor(t, mark, 5*time.Second, "decisions", func(rs []rec) bool { return len(withAction(rs, audit.ActionDecision)) >= len(cases) })
	rs := withAction(tr.since(t, mark), audit.ActionDecision)
	for _, c := range cases {
		var found bool
		for _, r := range rs {
			args := r.Args()
			if len(args) != len(c.argv) || args[0] != c.argv[0] {
				continue
			}
			found = true
			i := strings.TrimPrefix(c.pointer, "/process/args/")
			if args[i[0]-'0'] != c.shown {
				t.Errorf("%s: recorded %q, want %q", c.argv[0], args, c.shown)
			}
			if m, _ := r.Get("sockwarden.argv.masked").([]any); len(m) != 1 || m[0] != c.pointer {
				t.Errorf("%s: masked %v, want [%s]", c.argv[0], r.Get("sockwarden.argv.masked"), c.pointer)
			}
			if r.Get("sockwarden.argv.sha256") != audit.ArgvSHA256(args) {
				t.Errorf("%s: sha256 is not of the argv as recorded", c.argv[0])
			}
		}
		if !found {
			t.Errorf("no decision record for %s", c.argv[0])
		}
	}
	trail, err := os.ReadFile(tr.Path)
	if err != nil {
		t.Fatal(err)
	}
	// The operator log reaches the test through a pipe: wait for the
	// last request's line (the control below) before reading it.
	ts.waitLog(t, "mysql --password=*** db", 0)
	logs := ts.logs.String()
	for _, c := range cases {
		if strings.Contains(string(trail), c.secret) {
			t.Errorf("%q is in the audit file", c.secret)
		}
		if strings.Contains(logs, c.secret) {
			t.Errorf("%q is in the operator log", c.secret)
		}
	}
	// The control: the requests did reach the server and its logs.
	if !strings.Contains(logs, "mysql --password=*** db") {
		t.Errorf("the operator log does not show the masked request:\n%s", logs)
	}
}
