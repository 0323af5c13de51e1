package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/config"
)

func TestParseServeArgs(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.toml")
	os.WriteFile(cfgFile, []byte("[server]\nsocket = \"/from/file\"\nmax_conns = 9\nbacklog = 7\ntimeout = \"5s\"\n"), 0o600)
	badFile := filepath.Join(dir, "bad.toml")
	os.WriteFile(badFile, []byte("[server]\nmax_conns = 9\nbaclog = 7\n"), 0o600)

	type want struct {
		socket            string
		backlog, maxConns int
		mode              config.Mode
		timeout, kill     time.Duration
		level             string
	}
	get := func(c *config.Config) want {
		return want{c.Server.Socket, c.Server.Backlog, c.Server.MaxConns, c.Server.Mode,
			time.Duration(c.Server.Timeout), time.Duration(c.Server.KillTimeout), c.Log.Level}
	}
	tests := []struct {
		args    []string
		want    want
		wantErr string
	}{
		{[]string{"/s"}, want{"/s", 100, 100, 0o660, 60 * time.Second, 10 * time.Second, "info"}, ""},
		{[]string{"-d", "-q", "5", "-M", "0600", "-m", "7", "-t", "0", "-k", "2", "/s"},
			want{"/s", 5, 7, 0o600, 0, 2 * time.Second, "debug"}, ""},
		// getopt forms, as a sockexec service file may have them.
		{[]string{"-dq5", "-M600", "-m7", "-t0", "-k2", "/s"},
			want{"/s", 5, 7, 0o600, 0, 2 * time.Second, "debug"}, ""},
		// A long flag with its value, then getopt forms.
		{[]string{"--verification-key", "/k.pem", "-dq5", "-t0", "/s"},
			want{"/s", 5, 100, 0o660, 0, 10 * time.Second, "debug"}, ""},
		{[]string{"-verification-key", "/k.pem", "-m7", "/s"},
			want{"/s", 100, 7, 0o660, 60 * time.Second, 10 * time.Second, "info"}, ""},
		{[]string{"-t", "1.5", "/s"}, want{"/s", 100, 100, 0o660, 1500 * time.Millisecond, 10 * time.Second, "info"}, ""},
		// The file over the defaults, the flags given over the file.
		{[]string{"-c", cfgFile}, want{"/from/file", 7, 9, 0o660, 5 * time.Second, 10 * time.Second, "info"}, ""},
		{[]string{"-c", cfgFile, "-m", "3", "/s"}, want{"/s", 7, 3, 0o660, 5 * time.Second, 10 * time.Second, "info"}, ""},
		{[]string{"-c", badFile, "/s"}, want{}, "bad.toml:3: server.baclog: unknown key"},
		{[]string{}, want{}, "missing socket path"},
		{[]string{"/a", "/b"}, want{}, "one socket path expected"},
		{[]string{"-M", "999", "/s"}, want{}, "want octal permission bits"},
		{[]string{"-t", "-1", "/s"}, want{}, "-t must be >= 0"},
		{[]string{"-m", "0", "/s"}, want{}, "server.max_conns: must be positive"},
		{[]string{"-x", "/s"}, want{}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		c, _, err := parseServeArgs("sockwarden", tt.args, io.Discard)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || get(c) != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v", tt.args, get(c), err, tt.want)
		}
	}
}

func TestPrintConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := printConfig([]string{"-m", "42", "-t0", "/run/x.sock"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// What it prints is a valid configuration with the flags applied.
	c, err := config.Parse("printed", out.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if c.Server.MaxConns != 42 || c.Server.Timeout != 0 || c.Server.Socket != "/run/x.sock" {
		t.Errorf("printed %+v", c.Server)
	}
}

// TestGOMAXPROCS: the server runs its Go code on half the CPUs (at least
// one) and says so, unless GOMAXPROCS is set in its environment.
func TestGOMAXPROCS(t *testing.T) {
	t.Parallel()
	// What the runtime would use (it follows the cgroup's CPU limit).
	procs := runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") != "" {
		procs = runtime.NumCPU()
	}
	for _, c := range []struct {
		env  string
		want int
	}{
		{"", max(1, procs/2)},
		{"3", 3},
	} {
		sock := filepath.Join(shortTempDir(t), "s.sock")
		cmd := exec.Command(binary(t), sock)
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+c.env)
		if c.env == "" {
			cmd.Env = slices.DeleteFunc(slices.Clone(os.Environ()), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
		}
		ts := startServerCmd(t, sock, cmd)
		want := fmt.Sprintf(`"gomaxprocs":%d`, c.want)
		for deadline := time.Now().Add(10 * time.Second); !ts.logHas(want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("GOMAXPROCS=%q: no %s in the serving line:\n%s", c.env, want, ts.logs.String())
			}
		}
	}
}
