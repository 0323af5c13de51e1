package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
