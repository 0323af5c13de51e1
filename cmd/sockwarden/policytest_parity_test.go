package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// opaBinary returns the opa command that scripts/deps.sh installs (the
// version of the OPA library sockwarden embeds); $OPA_BIN overrides it.
func opaBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OPA_BIN"); p != "" {
		return p
	}
	p, err := exec.LookPath("opa")
	if err != nil {
		t.Fatal("the opa command is missing: scripts/deps.sh installs it (or set OPA_BIN)")
	}
	return p
}

// runExit runs cmd and returns its stdout, stderr and exit status.
func runExit(t *testing.T, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

var durationRe = regexp.MustCompile(`\([0-9.]+[µmn]?s\)`)

// normalizePretty makes two pretty reports comparable: durations out,
// lines sorted (tests may finish in another order).
func normalizePretty(s string) []string {
	lines := strings.Split(durationRe.ReplaceAllString(s, "(D)"), "\n")
	slices.Sort(lines)
	return lines
}

// normalizeJSON makes two JSON reports comparable: the test report
// without durations and sorted by test, or the coverage report as it is
// (it has no timings).
func normalizeJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	if list, ok := v.([]any); ok {
		for _, r := range list {
			delete(r.(map[string]any), "duration")
		}
		slices.SortFunc(list, func(a, b any) int {
			return strings.Compare(a.(map[string]any)["name"].(string), b.(map[string]any)["name"].(string))
		})
	}
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

// TestPolicyTestParity runs `sockwarden policy test` and `opa test` with
// each flag, on a passing and a failing policy, flags before and after
// the paths, and compares their exit status and output (JSON by
// structure, the pretty report line by line, durations aside).
func TestPolicyTestParity(t *testing.T) {
	t.Parallel()
	opa := opaBinary(t)
	flagSets := [][]string{
		nil,
		{"-v"},
		{"--verbose"},
		{"--run", "uname"},
		{"-r", "rm|sh"},
		{"--format", "json"},
		{"-f", "json", "-v"},
		{"--coverage"},
		{"--threshold", "100"},
		{"--threshold", "10"},
		{"--timeout", "10s"},
		{"--format", "json", "--run", "nothing-matches"},
	}
	for _, fixture := range []string{"pass", "fail"} {
		dir := "testdata/policytest/" + fixture
		for _, flags := range flagSets {
			name := fixture + " " + strings.Join(flags, " ")
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				wantOut, wantErr, wantCode := runExit(t, exec.Command(opa, append(append([]string{"test"}, flags...), dir)...))
				for _, order := range []string{"flags first", "flags last"} {
					args := append(append([]string{"policy", "test"}, flags...), dir)
					if order == "flags last" {
						args = append([]string{"policy", "test", dir}, flags...)
					}
					out, errOut, code := runExit(t, exec.Command(binary(t), args...))
					if code != wantCode {
						t.Errorf("%s: exit %d, opa test exits %d\nstdout:\n%s\nstderr:\n%s\nopa's stdout:\n%s\nopa's stderr:\n%s",
							order, code, wantCode, out, errOut, wantOut, wantErr)
						continue
					}
					if strings.HasPrefix(strings.TrimSpace(wantOut), "[") || strings.HasPrefix(strings.TrimSpace(wantOut), "{") {
						if g, w := normalizeJSON(t, out), normalizeJSON(t, wantOut); g != w {
							t.Errorf("%s: JSON differs from opa test's:\n got %s\nwant %s", order, g, w)
						}
					} else if g, w := normalizePretty(out), normalizePretty(wantOut); !slices.Equal(g, w) {
						t.Errorf("%s: report differs from opa test's:\n got %q\nwant %q", order, g, w)
					}
				}
			})
		}
	}
}

// TestPolicyTestDecisionSchema: a policy whose decision has a typo'd key
// passes opa test (its test compares a value) and fails policy test,
// which names the key and the rule's file:line.
func TestPolicyTestDecisionSchema(t *testing.T) {
	t.Parallel()
	const dir = "../../policy/testdata/typo"
	if _, _, code := runExit(t, exec.Command(opaBinary(t), "test", dir)); code != 0 {
		t.Fatalf("opa test: exit %d, want 0 (the fixture's own tests pass)", code)
	}
	out, _, code := runExit(t, exec.Command(binary(t), "policy", "test", dir))
	if code != 2 {
		t.Errorf("policy test: exit %d, want 2", code)
	}
	for _, want := range []string{
		"test_convert_allowed: FAIL",
		dir + "/policy.rego:9: decision.timout: unknown key",
		"PASS: 1/2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
