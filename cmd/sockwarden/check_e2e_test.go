package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// checkVsServerPolicy allows echo with a profile chosen by argv[1], and
// any other program as nobody.
const checkVsServerPolicy = `package sockwarden

profiles := {
	"nobody": {"allow": true, "run_as": {"user": "nobody"}},
	"as-root": {"allow": true},
	"bad-user": {"allow": true, "run_as": {"user": "no-such-user-sw"}},
	"bad-group": {"allow": true, "run_as": {"user": "nobody", "group": "no-such-group-sw"}},
	"denied": {"allow": false, "message": "not this one"},
	"cgroup-memory": {"allow": true, "run_as": {"user": "nobody"}, "cgroup": {"memory_max": 268435456}},
}

default decision := {"allow": true, "run_as": {"user": "nobody"}}

decision := profiles[input.argv[1]] if input.argv[0] == "echo"
`

// sockwarden check -c CONFIG gives the answer the running server gives
// with the same configuration: the same allow or deny, the same message
// and exit code, for requests that the policy denies, that the server
// must deny although the policy allowed them (root, unknown user or
// group), that cannot start, and that run.
func TestCheckMatchesServer(t *testing.T) {
	dir := shortTempDir(t)
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(checkVsServerPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.toml")
	conf := "[server]\npath = \"/usr/bin:/bin\"\n[policy]\npaths = [\"" + dir + "\"]\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, "-c", cfg)
	requestID := regexp.MustCompile(`\(request [^)]*\)`)

	tests := []struct {
		argv    []string
		outcome string // check's server.outcome
	}{
		{[]string{"echo", "nobody"}, "run"},
		{[]string{"echo", "as-root"}, "denied"}, // allow_root is off: the server runs as root
		{[]string{"echo", "bad-user"}, "denied"},
		{[]string{"echo", "bad-group"}, "denied"},
		{[]string{"echo", "denied"}, "denied"},
		{[]string{"echo", "cgroup-memory"}, ""}, // depends on the host's controllers: only agreement counts
		{[]string{"./echo", "x"}, "not started"},
		{[]string{"no-such-program-sw"}, "not started"},
	}
	for _, tt := range tests {
		t.Run(tt.argv[0]+" "+func() string {
			if len(tt.argv) > 1 {
				return tt.argv[1]
			}
			return ""
		}(), func(t *testing.T) {
			code, stdout, stderr := runCheckT(t, append([]string{"-c", cfg, "--"}, tt.argv...)...)
			var out struct {
				Allow   bool   `json:"allow"`
				Message string `json:"message"`
				Server  struct {
					Outcome string `json:"outcome"`
					Reply   *struct {
						Stderr   string `json:"stderr"`
						ExitCode int    `json:"exitcode"`
					} `json:"reply"`
				} `json:"server"`
			}
			if err := json.Unmarshal([]byte(stdout), &out); err != nil {
				t.Fatalf("check output: %v\n%s\n%s", err, stdout, stderr)
			}
			if tt.outcome != "" && out.Server.Outcome != tt.outcome {
				t.Errorf("check says %q, want %q\n%s", out.Server.Outcome, tt.outcome, stdout)
			}
			r := decodeReply(t, exchange(t, ts.Socket, request(tt.argv, nil, true)))
			if out.Server.Outcome == "run" {
				if code != 0 || r.Final[0] != "exitcode" || r.Final[1] != "0" || r.Stderr.Len() != 0 {
					t.Errorf("check: run (exit %d); server: %v, stderr %q", code, r.Final, r.Stderr.String())
				}
				return
			}
			if code != 1 || out.Server.Reply == nil {
				t.Fatalf("check exit %d, reply %+v; want 1 and the reply\n%s", code, out.Server.Reply, stdout)
			}
			want := requestID.ReplaceAllString(out.Server.Reply.Stderr, "(request ID)")
			got := requestID.ReplaceAllString(r.Stderr.String(), "(request ID)")
			if got != want || r.Final[0] != "exitcode" || r.Final[1] != strconv.Itoa(out.Server.Reply.ExitCode) {
				t.Errorf("server replied %q %v; check said %q exit %d", got, r.Final, want, out.Server.Reply.ExitCode)
			}
			if out.Server.Outcome == "denied" && (out.Allow || !regexp.MustCompile(`denied: `+regexp.QuoteMeta(out.Message)+` \(`).MatchString(got)) {
				t.Errorf("check allow=%v message %q; server %q", out.Allow, out.Message, got)
			}
		})
	}
}

// lineOf returns the 1-based line of the first line of file that has
// prefix, after the first one that has after ("" for none).
func lineOf(t *testing.T, file, after, prefix string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seenAfter := after == ""
	for i, l := range strings.Split(string(b), "\n") {
		if !seenAfter {
			seenAfter = strings.Contains(l, after)
			continue
		}
		if strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	t.Fatalf("%s: no line starting with %q", file, prefix)
	return 0
}

// TestCheckExplain: check --explain on the example policy names the rule
// that allowed uname for www-data (web_allowed) and the rule that denied
// sh -c (the inline-code denial), with their file:line and values.
func TestCheckExplain(t *testing.T) {
	t.Parallel()
	file := filepath.Join(examplePolicy, "policy.rego")
	type rule struct {
		Rule, Location string
		Value          any
	}
	explain := func(argv ...string) (map[string]any, []rule) {
		t.Helper()
		var out, errb bytes.Buffer
		runCheck(append([]string{"-p", examplePolicy, "--uid", "33", "--explain", "--"}, argv...), &out, &errb)
		var res struct {
			Allow   bool
			Explain []rule
		}
		var all map[string]any
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v: %v\n%s%s", argv, err, out.String(), errb.String())
		}
		json.Unmarshal(out.Bytes(), &all)
		return all, res.Explain
	}
	find := func(rules []rule, name, loc string) *rule {
		for i := range rules {
			if rules[i].Rule == name && rules[i].Location == loc {
				return &rules[i]
			}
		}
		return nil
	}

	all, rules := explain("uname", "-a")
	if all["allow"] != true {
		t.Fatalf("uname for www-data: %v", all)
	}
	loc := fmt.Sprintf("%s:%d", file, lineOf(t, file, "", "web_allowed if {"))
	if r := find(rules, "data.sockwarden.web_allowed", loc); r == nil || r.Value != true {
		t.Errorf("explain does not name web_allowed at %s:\n%+v", loc, rules)
	}
	if r := find(rules, "data.sockwarden.tool", fmt.Sprintf("%s:%d", file, lineOf(t, file, "", "tool := name if {"))); r == nil || r.Value != "uname" {
		t.Errorf("explain does not give tool = uname:\n%+v", rules)
	}

	all, rules = explain("sh", "-c", "id")
	if all["allow"] != false {
		t.Fatalf("sh -c for www-data: %v", all)
	}
	loc = fmt.Sprintf("%s:%d", file, lineOf(t, file, "inline_flag(a) if a in", "denials contains {"))
	r := find(rules, "data.sockwarden.denials", loc)
	if r == nil {
		t.Fatalf("explain does not name the inline-code denial at %s:\n%+v", loc, rules)
	}
	if m, _ := r.Value.(map[string]any); !strings.Contains(fmt.Sprint(m["msg"]), "inline code (sh -c)") {
		t.Errorf("the inline-code denial's value: %v", r.Value)
	}
	if _, ok := all["server"]; !ok {
		t.Error("no plan (server) next to the explanation")
	}
}
