package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// writeAuditLogs writes a rotated and a current audit file and returns
// their paths, oldest first.
func writeAuditLogs(t *testing.T) (rotated, current string) {
	t.Helper()
	dir := t.TempDir()
	current = filepath.Join(dir, "audit.log")
	rotated = current + ".1"
	fs, err := audit.OpenFile(current, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	l := audit.New(fs, audit.Options{Host: "web1", Now: func() time.Time { now = now.Add(time.Millisecond); return now }})
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	check(l.ServerStart(audit.ServerEvent{Version: "test", Socket: "/run/s.sock"}))
	for i := range 8 {
		check(l.Decision(audit.Decision{RequestID: "r", Allow: true, Argv: []string{"true"}}))
		check(l.Exit(audit.Exit{RequestID: "r", PID: 100 + i, ExitCode: i}))
		if i == 3 {
			check(os.Rename(current, rotated))
			check(l.Reopen())
		}
	}
	check(l.Close())
	return rotated, current
}

// rewrite applies f to the lines of path.
func rewrite(t *testing.T, path string, f func([]string) []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	out := strings.Join(f(lines), "\n") + "\n"
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunAuditVerify(t *testing.T) {
	tests := []struct {
		name     string
		args     func(rotated, current string) []string
		tamper   func(t *testing.T, rotated, current string)
		status   int
		stdout   string // prefix of stdout, after replacing the directory with DIR
		stderr   string // substring of stderr
		noStdout bool
	}{
		{name: "intact", args: both, status: 0, stdout: "ok: 17 records in 2 files\n"},
		{name: "current file alone", args: func(_, c string) []string { return []string{c} }, status: 0,
			stdout: "ok: 8 records in 1 file\n", stderr: "note: the first record is seq 10, not a server start"},
		{name: "edited exit code", args: both, status: 1,
			tamper: func(t *testing.T, r, c string) {
				rewrite(t, c, func(ls []string) []string {
					ls[1] = strings.Replace(ls[1], `"exit_code":4`, `"exit_code":0`, 1)
					return ls
				})
			},
			stdout: "DIR/audit.log:2: record seq 11 altered (hash mismatch)\n"},
		{name: "deleted line", args: both, status: 1,
			tamper: func(t *testing.T, r, c string) {
				rewrite(t, r, func(ls []string) []string { return append(ls[:5], ls[6:]...) })
			},
			stdout: "DIR/audit.log.1:6: seq gap 5 -> 7: 1 record deleted\n"},
		{name: "swapped", args: both, status: 1,
			tamper: func(t *testing.T, r, c string) {
				rewrite(t, c, func(ls []string) []string { ls[2], ls[3] = ls[3], ls[2]; return ls })
			},
			stdout: "DIR/audit.log:3: record seq 13 out of order (expected seq 12, found at DIR/audit.log:4): reordered\n"},
		{name: "truncated", args: both, status: 1,
			tamper: func(t *testing.T, r, c string) {
				data, _ := os.ReadFile(c)
				os.WriteFile(c, data[:len(data)-40], 0o600)
			},
			stdout: "DIR/audit.log:8: truncated record (no newline at end of file)\n"},
		{name: "files in the wrong order", args: func(r, c string) []string { return []string{c, r} }, status: 1,
			stdout: "DIR/audit.log.1:1: chain start (seq 1"},
		{name: "json ok", args: func(r, c string) []string { return []string{"-json", r, c} }, status: 0,
			stdout: "{\n  \"ok\": true,\n  \"files\": 2,\n  \"records\": 17,\n  \"runs\": 1,\n  \"anchored\": true,\n  \"first_seq\": 1,\n  \"last_seq\": 17,"},
		{name: "json tampered", args: func(r, c string) []string { return []string{"-json", r, c} }, status: 1,
			tamper: func(t *testing.T, r, c string) {
				rewrite(t, c, func(ls []string) []string { return ls[1:] })
			},
			stdout: "{\n  \"ok\": false,"},
		{name: "no files", args: func(_, _ string) []string { return nil }, status: 2, noStdout: true,
			stderr: "no FILE given\nusage: sockwarden audit verify [-json] [-syslog] FILE..."},
		{name: "unknown flag", args: func(r, c string) []string { return []string{"-x", r} }, status: 2, noStdout: true,
			stderr: "flag provided but not defined: -x"},
		{name: "help", args: func(_, _ string) []string { return []string{"-h"} }, status: 0, noStdout: true,
			stderr: "usage: sockwarden audit verify"},
		{name: "missing file", args: func(r, c string) []string { return []string{r, c + ".nope"} }, status: 2, noStdout: true,
			stderr: "no such file or directory"},
		{name: "problem before a missing file", args: func(r, c string) []string { return []string{c, r, c + ".nope"} },
			status: 1, stdout: "DIR/audit.log.1:1: ", stderr: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, c := writeAuditLogs(t)
			if tt.tamper != nil {
				tt.tamper(t, r, c)
			}
			var stdout, stderr bytes.Buffer
			status := runAuditVerify(tt.args(r, c), &stdout, &stderr)
			out := strings.ReplaceAll(stdout.String(), filepath.Dir(c), "DIR")
			if status != tt.status {
				t.Errorf("status %d, want %d\nstdout: %s\nstderr: %s", status, tt.status, out, stderr.String())
			}
			if tt.noStdout && out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.HasPrefix(out, tt.stdout) {
				t.Errorf("stdout %q, want prefix %q", out, tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q, want %q in it", stderr.String(), tt.stderr)
			}
			if tt.stderr == "" && stderr.Len() > 0 {
				t.Errorf("unexpected stderr %q", stderr.String())
			}
			if strings.HasPrefix(tt.stdout, "{") {
				var v map[string]any
				if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
					t.Errorf("-json output is not JSON: %v", err)
				}
			}
		})
	}
}

func both(r, c string) []string { return []string{r, c} }
