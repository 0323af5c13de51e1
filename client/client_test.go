package client_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/client"
	"github.com/sockwarden/sockwarden/internal/testutil"
	"github.com/sockwarden/sockwarden/server"
)

// serve starts an in-process sockwarden on a temporary socket.
func serve(t testing.TB) string {
	return testutil.StartServer(t, server.Config{KillTimeout: time.Second})
}

func TestRun(t *testing.T) {
	c := client.New(serve(t))
	ctx := context.Background()
	tests := []struct {
		name    string
		argv    []string
		stdin   string
		want    client.Result
		wantErr bool
	}{
		{"stdout", []string{"echo", "hi"}, "", client.Result{Stdout: []byte("hi\n"), ExitCode: 0}, false},
		{"stdin", []string{"cat"}, "some\x00input", client.Result{Stdout: []byte("some\x00input"), ExitCode: 0}, false},
		{"stderr and status", []string{"sh", "-c", "echo e >&2; exit 3"}, "", client.Result{Stderr: []byte("e\n"), ExitCode: 3}, false},
		{"signal", []string{"sh", "-c", "kill -SEGV $$"}, "", client.Result{ExitCode: -1, TermSig: "SEGV"}, false},
		{"not found", []string{"no-such-prog"}, "", client.Result{Stderr: []byte("sockwarden: \"no-such-prog\": command not found\n"), ExitCode: 127}, false},
		{"malformed", []string{"echo", "nul\x00"}, "", client.Result{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := &client.Options{}
			if tt.stdin != "" {
				opts.Stdin = strings.NewReader(tt.stdin)
			}
			res, err := c.Run(ctx, tt.argv, opts)
			if tt.wantErr {
				if !errors.Is(err, client.ErrNoStatus) {
					t.Fatalf("err = %v, want ErrNoStatus", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Stdout, tt.want.Stdout) || !bytes.Equal(res.Stderr, tt.want.Stderr) ||
				res.ExitCode != tt.want.ExitCode || res.TermSig != tt.want.TermSig {
				t.Errorf("got %+v, want %+v", res, tt.want)
			}
		})
	}
}

func TestRunCallbacks(t *testing.T) {
	c := client.New(serve(t))
	var out, errs []string
	res, err := c.Run(context.Background(), []string{"sh", "-c", "echo a; sleep 0.05; echo b >&2; sleep 0.05; echo c"}, &client.Options{
		OnStdout: func(b []byte) { out = append(out, string(b)) },
		OnStderr: func(b []byte) { errs = append(errs, string(b)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(out, "|") != "a\n|c\n" || strings.Join(errs, "|") != "b\n" {
		t.Errorf("stdout chunks %q, stderr chunks %q", out, errs)
	}
	if len(res.Stdout) != 0 || len(res.Stderr) != 0 {
		t.Errorf("streamed output also collected: %+v", res)
	}
}

func TestSession(t *testing.T) {
	c := client.New(serve(t))
	s, err := c.Start(context.Background(), []string{"sh", "-c", "while read l; do echo \"<$l>\"; done; exit 5"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, line := range []string{"one", "two"} {
		if _, err := s.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		ch, err := s.Receive()
		if err != nil || ch.Type != client.Stdout || string(ch.Data) != "<"+line+">\n" {
			t.Fatalf("got %+v, %v", ch, err)
		}
	}
	if err := s.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Receive()
	if err != nil || !ch.Final() || ch.Type != client.ExitCode || ch.Code != 5 {
		t.Fatalf("final %+v, %v", ch, err)
	}
	if _, err := s.Receive(); !errors.Is(err, client.ErrNoStatus) {
		t.Fatalf("after the final chunk: %v", err)
	}
}

// Canceling the context closes the connection, and the server kills the
// program.
func TestRunCancel(t *testing.T) {
	sock := serve(t)
	c := client.New(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, []string{"sleep", "30"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Run did not return promptly on cancel")
	}
}

func TestDialError(t *testing.T) {
	_, err := client.New("/nonexistent/sock").Run(context.Background(), []string{"true"}, nil)
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %v, want a dial error", err)
	}
}
