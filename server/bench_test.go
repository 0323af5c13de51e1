package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
)

// asUser judges a request as if it came from uid (the web tier's www-data
// for the example policy): the benchmark's own client is root.
type asUser struct {
	a   Authorizer
	uid uint32
}

func (u asUser) Authorize(ctx context.Context, req *Request) (*policy.Decision, error) {
	r := *req
	r.Peer.UID, r.Peer.GID, r.Peer.User, r.Peer.Group = u.uid, u.uid, "www-data", "www-data"
	return u.a.Authorize(ctx, &r)
}

// fixed returns the same decision for every request: the server with
// the gate off, running the sandbox the gate would have chosen.
type fixed struct{ d *policy.Decision }

func (f fixed) Authorize(context.Context, *Request) (*policy.Decision, error) {
	d := *f.d
	return &d, nil
}

func exampleGate(b *testing.B) Authorizer {
	e, err := policy.Load(context.Background(), policy.Options{Paths: []string{"../examples/policy"}})
	if err != nil {
		b.Fatal(err)
	}
	return asUser{NewPolicyGate(e), 33}
}

func benchRequest() *Request {
	return &Request{ID: "bench", Argv: []string{"true"}, Exe: "/usr/bin/true", Peer: peer.Peer{PID: 1, UID: 0}, Socket: "/run/s.sock", Time: time.Now()}
}

// BenchmarkAuthorize is the gate's cost per request: the example policy's
// evaluation (memoized after the first) plus turning the decision into a
// plan (plan.Planner), against a decision computed in advance (planned
// all the same).
func BenchmarkAuthorize(b *testing.B) {
	gate := exampleGate(b)
	d, err := gate.Authorize(context.Background(), benchRequest())
	if err != nil || !d.Allow {
		b.Fatalf("example policy does not allow the benchmark request: %+v %v", d, err)
	}
	// The server's planner: its Landlock paths go through the spawner's
	// cache.
	sp, err := sandbox.New(sandbox.Options{Cgroups: sandbox.CgroupOptions{Disabled: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	planner := plan.NewPlanner(plan.Host{UID: 0, Caps: sp.Capabilities(), Existing: sp.Existing})
	for _, bc := range []struct {
		name string
		a    Authorizer
	}{{"fixed", fixed{d}}, {"example-policy", gate}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			def := &plan.Defaults{}
			for b.Loop() {
				req := benchRequest()
				d, _ := bc.a.Authorize(ctx, req)
				if p := planner.Plan(d, def, &plan.Request{ID: req.ID, Argv: req.Argv, Exe: req.Exe, Peer: req.Peer}); !p.Allow {
					b.Fatal("denied")
				}
			}
		})
	}
}

// BenchmarkRequest runs /bin/true end to end through an in-process
// server, one request at a time, in the sandbox of the example policy's
// web profile: with the gate off (the same verdict, computed in advance),
// with the gate, and with the gate and the audit trail in a file without
// and with fsync. The differences of the medians (go test -count) are the
// per-request overheads of the gate and of the audit trail.
func BenchmarkRequest(b *testing.B) {
	gate := exampleGate(b)
	d, err := gate.Authorize(context.Background(), benchRequest())
	if err != nil || !d.Allow {
		b.Fatalf("example policy does not allow the benchmark request: %+v %v", d, err)
	}
	openTrail := func(b *testing.B, sync audit.SyncPolicy) *audit.Logger {
		f, err := audit.OpenFile(filepath.Join(b.TempDir(), "audit.jsonl"), audit.FileOptions{Sync: sync})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return audit.New(f, audit.Options{})
	}
	for _, bc := range []struct {
		name  string
		auth  Authorizer
		trail func(b *testing.B) *audit.Logger
	}{
		{"gate-off", fixed{d}, nil},
		{"gate", gate, nil},
		{"gate+audit-file", gate, func(b *testing.B) *audit.Logger { return openTrail(b, audit.SyncNone) }},
		{"gate+audit-fsync", gate, func(b *testing.B) *audit.Logger { return openTrail(b, audit.SyncEvery) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{Authorizer: bc.auth, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if bc.trail != nil {
				cfg.Audit = bc.trail(b)
			}
			sock := benchServer(b, cfg)
			req := encode("1", "true", "")
			want := string(encode("exitcode", "0"))
			buf := make([]byte, 64)
			for b.Loop() {
				c, err := net.Dial("unix", sock)
				if err != nil {
					b.Fatal(err)
				}
				c.Write(req)
				n, _ := io.ReadFull(c, buf[:len(want)])
				if string(buf[:n]) != want {
					b.Fatalf("reply %q", buf[:n])
				}
				c.Close()
			}
		})
	}
}

func benchServer(b *testing.B, cfg Config) string {
	dir := b.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := Listen(ListenConfig{Path: sock, Mode: 0o600, UID: -1, GID: -1})
	if err != nil {
		b.Fatal(err)
	}
	s := newTestServer(b, cfg)
	go s.Serve(l)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return sock
}
