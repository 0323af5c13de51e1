package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// copyFile copies a test policy into place.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func denyReply(t *testing.T, got []byte, message string) {
	t.Helper()
	re := regexp.MustCompile(`^6:stderr,(\d+):sockwarden: denied: ` + regexp.QuoteMeta(message) + ` \(request [0-9A-Z]{26}\)\n,8:exitcode,3:126,$`)
	if !re.Match(got) {
		t.Fatalf("got %q, want the deny reply with %q", got, message)
	}
}

// End to end through the policy gate: the profile the policy chose is the
// one the program runs in; denies and evaluation errors get the 126 reply.
func TestPolicyGate(t *testing.T) {
	dir := shortTempDir(t)
	copyFile(t, "testdata/policy/basic.rego", filepath.Join(dir, "basic.rego"))
	ts := startServer(t, "-p", dir)

	// The profile: uid/gid, supplementary groups, environment, umask.
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"sh", "-c", "id -u; id -g; id -G; env | sort; umask"}, nil, true)))
	if got, want := r.Stdout.String(), "65534\n65534\n65534\nPATH=/usr/bin:/bin\nPROFILE=basic\nPWD=/\n0077\n"; got != want {
		t.Errorf("profile:\n%s\nwant:\n%s\nstderr: %s", got, want, r.Stderr.String())
	}
	// Its Landlock rules: writing outside the rw paths is refused.
	r = decodeReply(t, exchange(t, ts.Socket, request([]string{"sh", "-c", "echo x > " + filepath.Join(dir, "written")}, nil, true)))
	if r.Final[1] == "0" || !strings.Contains(r.Stderr.String(), "Permission denied") {
		t.Errorf("write outside rw paths: %v %q", r.Final, r.Stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "written")); err == nil {
		t.Error("the file was written")
	}

	denyReply(t, exchange(t, ts.Socket, request([]string{"cat", "/etc/passwd"}, nil, true)), "not on the list")
	// An evaluation error denies, with a generic message.
	got := exchange(t, ts.Socket, request([]string{"boom"}, nil, true))
	if !bytes.HasPrefix(got, []byte("6:stderr,")) || !bytes.HasSuffix(got, []byte("8:exitcode,3:126,")) {
		t.Errorf("evaluation error: %q", got)
	}
	// The log reaches the test through a pipe: wait for it.
	ts.waitLog(t, "conflict", 0)
	ts.assertAliveWith(t, []string{"echo", "alive"})
}

// SIGHUP reloads the policy; one that does not compile leaves the old one
// serving.
func TestPolicyReload(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "policy.rego")
	copyFile(t, "testdata/policy/basic.rego", file)
	ts := startServer(t, "-p", dir)
	ts.assertAliveWith(t, []string{"echo", "alive"})

	hup := func(want string) {
		t.Helper()
		n := strings.Count(ts.logs.String(), want)
		ts.Cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(10 * time.Second); strings.Count(ts.logs.String(), want) == n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP", want)
			}
		}
	}

	// Broken: the old policy keeps serving.
	os.WriteFile(file, []byte("package sockwarden\n\ndecision := {\"allow\": true\n"), 0o644)
	hup("policy reload failed")
	ts.assertAliveWith(t, []string{"echo", "alive"})
	denyReply(t, exchange(t, ts.Socket, request([]string{"date"}, nil, true)), "not on the list")

	// A new policy that allows date (and nothing else) replaces it.
	os.WriteFile(file, []byte(`package sockwarden

default decision := {"allow": false, "message": "only date now"}

decision := {"allow": true, "run_as": {"user": "65534", "group": "65534"}} if input.exe == "/usr/bin/date"
`), 0o644)
	hup("policy reloaded")
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"date", "+%Y"}, nil, true)))
	if r.Final[1] != "0" || len(strings.TrimSpace(r.Stdout.String())) != 4 {
		t.Errorf("date under the new policy: %v %q", r.Final, r.Stdout.String())
	}
	denyReply(t, exchange(t, ts.Socket, request([]string{"echo", "x"}, nil, true)), "only date now")
	// Both reloads are in the audit trail (stdout here).
	if !ts.logHas(`"action":"policy.reload","outcome":"failure"`) ||
		!ts.logHas(`"action":"policy.reload","outcome":"success"`) {
		t.Error("reloads not audited")
	}
}

// A repeated request gets the memoized decision of a pure policy (the
// embedded default), recorded as such; a policy that reads the clock is
// evaluated every time, and the log says why.
func TestDecisionCache(t *testing.T) {
	for _, tt := range []struct {
		name   string
		policy string // "" = the embedded default
		cached bool
		log    string
	}{
		{"pure", "", true, "policy decisions are cached"},
		{"reads the clock", `package sockwarden

decision := {"allow": time.now_ns() > 0, "run_as": {"user": "65534", "group": "65534"}}
`, false, "calls time.now_ns"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if tt.policy != "" {
				dir := shortTempDir(t)
				os.WriteFile(filepath.Join(dir, "p.rego"), []byte(tt.policy), 0o644)
				args = []string{"-p", dir}
			}
			ts, tr := startAuditServer(t, args...)
			mark := tr.count(t)
			for range 3 {
				got := exchange(t, ts.Socket, request([]string{"echo", "hi"}, nil, true))
				if want := pairs("stdout", "hi\n", "exitcode", "0"); !bytes.Equal(got, want) {
					t.Fatalf("reply %q", got)
				}
			}
			var cached []bool
			for _, r := range tr.since(t, mark) {
				if r.Action() == "exec.decision" {
					cached = append(cached, r.Get("sockwarden.policy.cached") == true)
				}
			}
			want := []bool{false, tt.cached, tt.cached}
			if !slices.Equal(cached, want) {
				t.Errorf("cached per decision %v, want %v", cached, want)
			}
			if !ts.logHas(tt.log) {
				t.Errorf("log does not say %q", tt.log)
			}
		})
	}
}

// A decision with a typo'd key passes the load check (its rule does not
// match the synthetic request) and is denied on a real request: the log
// says so at WARN, naming the key, once per distinct error per minute.
func TestDecisionErrorWarned(t *testing.T) {
	dir := shortTempDir(t)
	rego := `package sockwarden
default decision := {"allow": false}
decision := {"allow": true, "timout": "5s"} if input.argv[0] == "echo"
`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "-p", dir)
	for range 3 {
		r := decodeReply(t, exchange(t, ts.Socket, request([]string{"echo", "hi"}, nil, true)))
		if r.Final[1] != "126" {
			t.Fatalf("echo under a broken decision: %v, want a deny", r.Final)
		}
	}
	ts.waitLog(t, "the policy failed on a real request", 0)
	logs := ts.logs.String()
	if n := strings.Count(logs, "the policy failed on a real request"); n != 1 {
		t.Errorf("%d WARN lines for 3 requests with the same error, want 1", n)
	}
	if !regexp.MustCompile(`"level":"WARN","msg":"the policy failed on a real request[^\n]*decision\.timout`).MatchString(logs) {
		t.Errorf("the WARN does not name decision.timout:\n%s", logs)
	}
}

// A bundle whose own tests fail is not put in force on SIGHUP: the log
// names the failing test and the typo'd key, the reload is audited as a
// failure, and the running policy keeps serving; at start-up, such a
// policy stops the server. The tests that pass are logged.
func TestPolicyReloadRefusesFailingTests(t *testing.T) {
	opa := opaBinary(t)
	dir := shortTempDir(t)
	bundle := filepath.Join(dir, "bundle.tar.gz")
	build := func(src string) {
		t.Helper()
		os.Remove(bundle)
		if out, err := exec.Command(opa, "build", "-b", src, "-o", bundle).CombinedOutput(); err != nil {
			t.Fatalf("opa build %s: %v\n%s", src, err, out)
		}
	}
	good := shortTempDir(t)
	copyFile(t, "testdata/policytest/pass/policy.rego", filepath.Join(good, "policy.rego"))
	os.WriteFile(filepath.Join(good, "policy_test.rego"), []byte("package sockwarden\n\ntest_uname if decision.allow with input as {\"argv\": [\"uname\"]}\n"), 0o644)
	build(good)
	ts := startServer(t, "-p", bundle)
	ts.waitLog(t, "policy tests pass", 0)

	build("../../policy/testdata/typo")
	n := strings.Count(ts.logs.String(), "policy reload failed")
	ts.Cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); strings.Count(ts.logs.String(), "policy reload failed") == n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed reload after SIGHUP")
		}
	}
	logs := ts.logs.String()
	for _, want := range []string{"its own tests fail", "test_convert_allowed: FAIL", `decision.timout: unknown key`, `"action":"policy.reload","outcome":"failure"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// The old policy serves: convert is still unknown to it.
	denyReply(t, exchange(t, ts.Socket, request([]string{"convert"}, nil, true)), "not allowed by policy")

	// At start-up, the same bundle stops the server.
	out, err := exec.Command(binary(t), "-p", bundle, filepath.Join(dir, "s2.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "its own tests fail") {
		t.Errorf("start-up with failing tests: %v\n%s", err, out)
	}
}
