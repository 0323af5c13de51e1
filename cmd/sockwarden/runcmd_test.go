package main

import (
	"bytes"
	"strings"
	"testing"
)

// The run client's -n may come before or after the socket; either way it
// is a flag, never the program.
func TestRunFlagAfterSocket(t *testing.T) {
	ts := startServer(t)
	for _, args := range [][]string{
		{"-n", ts.Socket, "--", "cat"},
		{ts.Socket, "-n", "--", "cat"},
	} {
		var out, errb bytes.Buffer
		code := runClient(args, strings.NewReader("must not be sent\n"), &out, &errb)
		if code != 0 || out.Len() != 0 {
			t.Errorf("run %q: exit %d, stdout %q, stderr %q; want cat with no stdin", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := runClient([]string{ts.Socket, "--", "cat"}, strings.NewReader("sent\n"), &out, &errb); code != 0 || out.String() != "sent\n" {
		t.Errorf("control without -n: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
