package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/internal/testutil"
	"github.com/sockwarden/sockwarden/server"
)

// benchServer serves in-process on a fresh socket and returns its path.
func benchServer(t *testing.T) string { return testutil.StartServer(t, server.Config{}) }

func runBenchT(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runBench(args, &out, &errb)
	return code, out.String(), errb.String()
}

// kv parses a key=value line.
func kv(t *testing.T, line string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			t.Fatalf("%q in %q is not key=value", f, line)
		}
		m[k] = v
	}
	return m
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"--help"}} {
		code, out, _ := runBenchT(args...)
		if code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
		for _, want := range []string{"spawn", "echo", "flood", "idle", "baseline",
			"-socket", "-n ", "-c ", "-size", "-k ", "-repeat", "-argv", "-- argv", "-pid", "-json", "-exit", "-timeout"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: usage lacks %q", args, want)
			}
		}
	}
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no workload"},
		{[]string{"fork"}, "unknown workload"},
		{[]string{"spawn"}, "needs -socket"},
		{[]string{"-bogus", "spawn"}, "not defined"},
		{[]string{"-socket", "/x", "flood", "-size", "12XB"}, "unknown unit"},
		{[]string{"-socket", "/x", "flood", "-size", "-1"}, "positive"},
		{[]string{"-socket", "/x", "spawn", "-size", "1"}, "echo and flood only"},
		{[]string{"-socket", "/x", "echo", "--", "cat"}, "fixed program"},
		{[]string{"-argv", "true", "baseline", "--", "true"}, "not both"},
		{[]string{"baseline", "-n", "0"}, "positive"},
		{[]string{"baseline", "-exit", "300"}, "0..255"},
		{[]string{"baseline", "spawn"}, "unexpected argument"},
	}
	for _, tt := range tests {
		code, out, errs := runBenchT(tt.args...)
		if code != 2 || out != "" || !strings.Contains(errs, tt.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tt.args, code, out, errs, tt.want)
		}
	}
}

func TestParseBenchSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"64", 64 << 20},
		{"1.5", 3 << 19},
		{"100B", 100},
		{"4k", 4 << 10},
		{"4KiB", 4 << 10},
		{"512MiB", 512 << 20},
		{"1g", 1 << 30},
		{"2GiB", 2 << 30},
		{"0", -1},
		{"x", -1},
		{"10MB", -1},
		{"", -1},
	}
	for _, tt := range tests {
		got, err := parseBenchSize(tt.in)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("parseBenchSize(%q) = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseBenchSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestBenchBaselineRepeat(t *testing.T) {
	code, out, errs := runBenchT("baseline", "-n", "10", "-c", "2", "-repeat", "3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 3 runs and the median:\n%s", len(lines), out)
	}
	for i, l := range lines {
		m := kv(t, l)
		want := []string{"1", "2", "3", "median"}[i]
		if m["workload"] != "baseline" || m["run"] != want || m["n"] != "10" || m["c"] != "2" || m["errors"] != "0" || m["rps"] == "" {
			t.Errorf("line %d: %s", i, l)
		}
	}
	if m := kv(t, lines[3]); m["runs"] != "3" {
		t.Errorf("median line: %s", lines[3])
	}
}

func TestBenchSpawnAgainstServer(t *testing.T) {
	sock := benchServer(t)

	// The workload after the flags, flags after it, argv after --.
	code, out, errs := runBenchT("-socket", sock, "spawn", "-n", "12", "-c", "3", "-exit", "3", "--", "sh", "-c", "exit 3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if m := kv(t, strings.TrimSpace(out)); m["workload"] != "spawn" || m["n"] != "12" || m["errors"] != "0" {
		t.Errorf("output %q", out)
	}

	// A status other than the expected one fails the run.
	code, out, errs = runBenchT("spawn", "-socket", sock, "-n", "4", "-argv", "false")
	if code != 1 || !strings.Contains(errs, "exit status 1, expected exit status 0") {
		t.Errorf("exit %d, stderr %q; want 1 and the failure", code, errs)
	}
	if m := kv(t, strings.TrimSpace(out)); m["errors"] != "4" {
		t.Errorf("output %q, want errors=4", out)
	}

	// JSON lines.
	code, out, errs = runBenchT("-json", "-socket", sock, "flood", "-size", "1MiB", "-repeat", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %q", out)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		if m["workload"] != "flood" || m["bytes"] != float64(1<<20) || m["errors"] != float64(0) {
			t.Errorf("JSON line %s", l)
		}
	}

	// A run that cannot be performed: exit 1.
	code, _, errs = runBenchT("spawn", "-socket", sock+".missing")
	if code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing socket: exit %d, stderr %q", code, errs)
	}
}
