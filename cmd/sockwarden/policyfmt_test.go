package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An unformatted Rego v1 policy: extra spaces, a missing blank line.
const unformattedRego = `package sockwarden
default decision := {"allow":false}
decision := {"allow": true}   if {
    input.argv[0] == "uname"
}
`

// TestPolicyFmt: policy fmt formats as opa fmt does (same bytes, v1 and
// v0), lists and fails on unformatted files with opa fmt's exit status,
// and -w rewrites them.
func TestPolicyFmt(t *testing.T) {
	t.Parallel()
	opa := opaBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(file, []byte(unformattedRego), 0o644); err != nil {
		t.Fatal(err)
	}
	sw := func(args ...string) (string, string, int) {
		return runExit(t, exec.Command(binary(t), append([]string{"policy", "fmt"}, args...)...))
	}
	for _, tt := range []struct {
		file    string
		opaArgs []string
	}{
		{file, nil},
		{"../../policy/testdata/v0/policy.rego", []string{"--v0-compatible"}},
		{"../../examples/policy/policy.rego", nil},
	} {
		want, _, _ := runExit(t, exec.Command(opa, append(append([]string{"fmt"}, tt.opaArgs...), tt.file)...))
		if got, errOut, code := sw(tt.file); code != 0 || got != want {
			t.Errorf("%s: exit %d %s\n got %q\nwant %q", tt.file, code, errOut, got, want)
		}
	}
	if out, _, code := sw("-l", dir); code != 0 || strings.TrimSpace(out) != file {
		t.Errorf("-l: exit %d, %q", code, out)
	}
	_, _, opaCode := runExit(t, exec.Command(opa, "fmt", "--fail", "-l", dir))
	if out, _, code := sw(dir, "--fail", "-l"); code != opaCode || code == 0 {
		t.Errorf("--fail -l on an unformatted file: exit %d (opa fmt: %d), %q", code, opaCode, out)
	}
	if out, _, code := sw("-d", dir); code != 0 || !strings.Contains(out, "decision") {
		t.Errorf("-d: exit %d, %q", code, out)
	}
	if _, errOut, code := sw("-w", dir); code != 0 {
		t.Fatalf("-w: exit %d %s", code, errOut)
	}
	if out, _, code := sw("--fail", "-l", dir); code != 0 || out != "" {
		t.Errorf("after -w: exit %d, %q", code, out)
	}
	// The example policy and the default policy are formatted (make
	// policy checks it too).
	if out, _, code := sw("--fail", "-l", "../../examples/policy", "../../policy/default"); code != 0 {
		t.Errorf("unformatted: %s", out)
	}
}

// TestPolicyCheck: policy check compiles as opa check does; --strict
// reports what OPA's strict mode does (an unused local variable, naming
// file:line), with the same exit status.
func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	opa := opaBinary(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package sockwarden\n\ndefault decision := {\"allow\": false}\n\ndecision := {\"allow\": true} if {\n\tx := input.argv[0]\n\tinput.argv[0] == \"uname\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{dir}, {"--strict", dir}, {"../../examples/policy"}, {"--strict", "../../examples/policy"}, {"--strict", "../../policy/testdata/broken"}} {
		_, _, want := runExit(t, exec.Command(opa, append([]string{"check"}, args...)...))
		_, errOut, code := runExit(t, exec.Command(binary(t), append([]string{"policy", "check"}, args...)...))
		if code != want {
			t.Errorf("%v: exit %d, opa check exits %d\n%s", args, code, want, errOut)
		}
		if args[0] == "--strict" && args[1] == dir && !strings.Contains(errOut, "p.rego:6") {
			t.Errorf("strict: the unused variable is not named at p.rego:6:\n%s", errOut)
		}
	}
}
