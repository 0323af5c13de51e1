package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const examplePolicy = "../../examples/policy"

// checkOut is the part of runCheck's JSON output the tests look at.
type checkOut struct {
	Allow    bool           `json:"allow"`
	Message  string         `json:"message"`
	Reasons  []string       `json:"reasons"`
	Rlimits  map[string]any `json:"rlimits"`
	Landlock map[string]any `json:"landlock"`
	Timeout  string         `json:"timeout"`
	Revision string         `json:"revision"`
	Error    string         `json:"error"`
}

func runCheckT(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runCheck(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheck(t *testing.T) {
	if _, err := exec.LookPath("uname"); err != nil {
		t.Skip("uname not on PATH")
	}
	me := strconv.Itoa(os.Getuid())
	other := "12345"
	if me == other {
		other = "12346"
	}
	tests := []struct {
		name        string
		args        []string
		code        int
		allow       bool
		message     string // substring
		wantTimeout string
	}{
		{"example allows www-data uname", []string{"-p", examplePolicy, "--uid", "33", "--", "uname", "-a"}, 0, true, "", "10s"},
		{"example denies rm", []string{"-p", examplePolicy, "--uid", "33", "--", "rm", "-rf", "/"}, 1, false, "program not allowed", ""},
		{"example denies sh -c", []string{"-p", examplePolicy, "-uid=33", "--", "sh", "-c", "id"}, 1, false, "shells and interpreters", ""},
		{"example denies unknown program", []string{"-p", examplePolicy, "--uid", "33", "--", "no-such-program-sockwarden"}, 1, false, "program not found", ""},
		{"example denies other uid", []string{"-p", examplePolicy, "--uid", other, "--", "uname"}, 1, false, "uid " + other + " is not permitted", ""},
		{"example with data file listed separately", []string{"-p", examplePolicy + "/policy.rego", "-p", examplePolicy + "/data.json", "--uid", "33", "--", "uname"}, 0, true, "", "10s"},
		{"default allows own uid", []string{"--", "uname"}, 0, true, "", ""},
		{"default denies other uid", []string{"--uid", other, "--", "uname"}, 1, false, "default policy", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCheckT(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			var d checkOut
			if err := json.Unmarshal([]byte(stdout), &d); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, stdout)
			}
			if !strings.HasPrefix(stdout, "{\n  \"allow\"") {
				t.Errorf("output is not indented JSON starting with allow:\n%s", stdout)
			}
			if d.Allow != tt.allow || !strings.Contains(d.Message, tt.message) {
				t.Errorf("allow=%v message=%q, want allow=%v message containing %q", d.Allow, d.Message, tt.allow, tt.message)
			}
			if d.Timeout != tt.wantTimeout {
				t.Errorf("timeout %q, want %q", d.Timeout, tt.wantTimeout)
			}
			if d.Revision == "" {
				t.Error("no revision")
			}
			if d.Error != "" {
				t.Errorf("error %q", d.Error)
			}
		})
	}
}

func TestCheckJSONShowsInput(t *testing.T) {
	code, stdout, stderr := runCheckT(t, "-p", examplePolicy, "--uid", "33", "--gid", "33", "--pid", "1", "--socket", "/tmp/x.sock", "--json", "--", "no-such-program-sockwarden", "arg")
	if code != 1 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	var out struct {
		Input struct {
			Argv   []string `json:"argv"`
			Exe    *string  `json:"exe"`
			Socket string   `json:"socket"`
			Peer   struct {
				Pid int    `json:"pid"`
				UID uint32 `json:"uid"`
				GID uint32 `json:"gid"`
			} `json:"peer"`
		} `json:"input"`
		Decision checkOut `json:"decision"`
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	in := out.Input
	if in.Exe == nil || *in.Exe != "" {
		t.Errorf("exe = %v, want empty (unresolved)", in.Exe)
	}
	if len(in.Argv) != 2 || in.Socket != "/tmp/x.sock" || in.Peer.UID != 33 || in.Peer.GID != 33 || in.Peer.Pid != 1 {
		t.Errorf("input = %+v", in)
	}
	if out.Decision.Allow || !strings.Contains(out.Decision.Message, "program not found") {
		t.Errorf("decision = %+v", out.Decision)
	}
}

// check resolves argv[0] on the configuration's server.path, as the
// server does, whatever PATH check itself runs with.
func TestCheckResolvesArgv0OnPath(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "sockwarden-test-prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The server's PATH (server.path), not this process's.
	t.Setenv("PATH", "/usr/bin:/bin")
	conf := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(conf, []byte("[server]\npath = \""+dir+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCheckT(t, "-c", conf, "--json", "--", "sockwarden-test-prog")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, `"exe": "`+prog+`"`) {
		t.Errorf("exe not resolved to %s:\n%s", prog, stdout)
	}
}

func TestCheckPolicyErrorIsDeny(t *testing.T) {
	dir := t.TempDir()
	rego := `package sockwarden
decision := {"allow": true, "run_as": {"user": "nobody"}} if input.argv[0] == "true"
decision := {"allow": true, "rlimits": {"cpu": "ten"}} if input.argv[0] == "bad"
default decision := {"allow": false}
`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCheckT(t, "-p", dir, "--", "bad")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stdout, "decision.rlimits.cpu") || !strings.Contains(stderr, "policy error") {
		t.Errorf("stdout: %s\nstderr: %s", stdout, stderr)
	}
	if code, stdout, _ := runCheckT(t, "-p", dir, "--", "true"); code != 0 {
		t.Errorf("true: exit %d\n%s", code, stdout)
	}
}

func TestCheckUsageErrors(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.rego")
	if err := os.WriteFile(broken, []byte("package sockwarden\n\ndecision := {\"allow\": nosuchfn(1)}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no argv", []string{"-p", examplePolicy}, 2, "no argv"},
		{"no argv after --", []string{"--"}, 2, "no argv"},
		{"unknown flag", []string{"--bogus", "--", "true"}, 2, "bogus"},
		{"bad uid", []string{"--uid", "-1", "--", "true"}, 2, "want a number"},
		{"query without policy", []string{"--query", "data.x", "--", "true"}, 2, "--query needs a policy"},
		{"missing policy", []string{"-p", filepath.Join(dir, "nope"), "--", "true"}, 2, "nope"},
		{"compile error names file:line:col", []string{"-p", broken, "--", "true"}, 2, "broken.rego:3:"},
		{"help", []string{"-h"}, 0, "Usage: sockwarden check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCheckT(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.stderr)
			}
		})
	}
}

func writePolicyTestDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPolicyTest(t *testing.T) {
	failing := writePolicyTestDir(t, map[string]string{
		"p.rego":      "package p\n\nx := 1\n",
		"p_test.rego": "package p\n\ntest_ok if x == 1\n\ntest_wrong if x == 2\n",
	})
	erroring := writePolicyTestDir(t, map[string]string{
		"p_test.rego": "package p\n\ntest_conflict if {\n\tf(1)\n}\n\nf(_) := 1\n\nf(_) := 2\n",
	})
	broken := writePolicyTestDir(t, map[string]string{
		"p_test.rego": "package p\n\ntest_x if {\n",
	})
	noTests := writePolicyTestDir(t, map[string]string{
		"p.rego": "package p\n\nx := 1\n",
	})
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"example passes", []string{examplePolicy}, 0, "PASS: ", ""},
		{"example verbose", []string{"-v", examplePolicy}, 0, "test_allow_uname: PASS", ""},
		{"leading test word is skipped", []string{"test", examplePolicy}, 0, "PASS: ", ""},
		{"verbose after the path", []string{examplePolicy, "-v"}, 0, "test_allow_uname: PASS", ""},
		{"failing test", []string{failing}, 2, "FAIL: 1/2", ""},
		{"failing test verbose", []string{"-v", failing}, 2, "test_wrong: FAIL", ""},
		{"erroring test", []string{erroring}, 2, "ERROR", ""},
		{"parse error", []string{broken}, 1, "", "p_test.rego:"},
		{"no tests", []string{noTests}, 0, "", ""},
		{"no tests, --fail-on-empty", []string{noTests, "--fail-on-empty"}, 1, "", "no tests found"},
		{"no path", nil, 1, "", "no PATH given"},
		{"missing path", []string{filepath.Join(noTests, "nope")}, 1, "", "nope"},
		{"unknown flag", []string{"--bogus", examplePolicy}, 1, "", "bogus"},
		{"unknown format", []string{"--format", "xml", examplePolicy}, 1, "", "unknown format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runPolicyTest(tt.args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout does not contain %q:\n%s", tt.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.stderr, errb.String())
			}
		})
	}
}

// A deliberately broken test of the example policy makes "policy test"
// fail, naming the test.
func TestPolicyTestCatchesBrokenExampleTest(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"policy.rego", "data.json", "policy_test.rego"} {
		b, err := os.ReadFile(filepath.Join(examplePolicy, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "policy_test.rego" {
			// The example allows uname with cpu 5; claim it is 6.
			b = bytes.Replace(b, []byte(`d.rlimits == {"cpu": 5,`), []byte(`d.rlimits == {"cpu": 6,`), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if code := runPolicyTest([]string{"-v", dir}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "test_allow_uname: FAIL") {
		t.Errorf("the broken test is not named:\n%s", out.String())
	}
}
