package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseServeFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    serveOptions
		wantErr string
	}{
		{[]string{"/s"}, serveOptions{backlog: 100, mode: "0660", maxConns: 100, timeout: 60, killTimeout: 10, socket: "/s"}, ""},
		{[]string{"-d", "-q", "5", "-M", "0600", "-m", "7", "-t", "0", "-k", "2", "/s"},
			serveOptions{debug: true, backlog: 5, mode: "0600", maxConns: 7, timeout: 0, killTimeout: 2, socket: "/s"}, ""},
		// getopt forms, as a sockexec service file may have them.
		{[]string{"-dq5", "-M600", "-m7", "-t0", "-k2", "/s"},
			serveOptions{debug: true, backlog: 5, mode: "600", maxConns: 7, timeout: 0, killTimeout: 2, socket: "/s"}, ""},
		{[]string{"-t", "1.5", "/s"}, serveOptions{backlog: 100, mode: "0660", maxConns: 100, timeout: 1.5, killTimeout: 10, socket: "/s"}, ""},
		{[]string{}, serveOptions{}, "missing socket path"},
		{[]string{"/a", "/b"}, serveOptions{}, "one socket path expected"},
		{[]string{"-M", "999", "/s"}, serveOptions{}, "want octal permission bits"},
		{[]string{"-t", "-1", "/s"}, serveOptions{}, "-t must be >= 0"},
		{[]string{"-m", "0", "/s"}, serveOptions{}, "must be positive"},
		{[]string{"-x", "/s"}, serveOptions{}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		got, err := parseServeFlags(tt.args, io.Discard)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || *got != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
	if seconds(1.5) != 1500*time.Millisecond {
		t.Error("seconds(1.5)")
	}
}
