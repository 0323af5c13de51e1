package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// With the defaults (-m 10, no quota configured), one uid holds idle
// connections up to its quota (half of -m) and beyond: those beyond get
// the busy reply at once, another uid's request still runs at once, and
// the refusals make one audit record with their count.
func TestCallerQuota(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (to connect as another uid)")
	}
	ts, tr := startAuditServerExtra(t, "[server]\nquota_interval = \"1s\"\n", "-m", "10", "-M", "0666", "-t", "30")
	if err := os.Chmod(filepath.Dir(ts.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	mark := tr.count(t)
	const nobody, quota, over = 65534, 5, 3
	idle := func(*net.UnixConn) error { return nil }
	for range quota {
		dialAs(t, ts.Socket, nobody, nobody, idle) // held until the test ends
	}
	time.Sleep(200 * time.Millisecond) // accepted and counted
	for i := range over {
		c := dialAs(t, ts.Socket, nobody, nobody, func(c *net.UnixConn) error {
			c.Write(request([]string{"true"}, nil, true)) // may find the connection answered and closed
			return nil
		})
		t0 := time.Now()
		got, _ := io.ReadAll(c)
		if !strings.Contains(string(got), "sockwarden: busy: uid 65534 already holds its 5 connections (of 10)") ||
			!strings.HasSuffix(string(got), "8:exitcode,3:126,") {
			t.Errorf("connection %d over the quota: %q, want the busy reply", quota+i+1, got)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("the busy reply took %v", d)
		}
	}
	// Another uid is served at once.
	t0 := time.Now()
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"true"}, nil, true)))
	if r.Final[0] != "exitcode" || r.Final[1] != "0" {
		t.Errorf("root's request while nobody holds its quota: %v %q", r.Final, r.Stderr.String())
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("root's request took %v", d)
	}
	// One record for the three refusals, after the interval.
	tr.waitFor(t, mark, 5*time.Second, "quota record", func(rs []rec) bool { return len(withAction(rs, audit.ActionQuota)) > 0 })
	time.Sleep(1500 * time.Millisecond) // no second record for the same refusals
	q := withAction(tr.since(t, mark), audit.ActionQuota)
	if len(q) != 1 {
		t.Fatalf("%d quota records, want 1: %v", len(q), q)
	}
	if q[0].Str("client.user.id") != "65534" || q[0].Num("sockwarden.quota.refused") != over || q[0].Num("sockwarden.quota.limit") != quota {
		t.Errorf("quota record %v", q[0])
	}
	if n := strings.Count(ts.logs.String(), "turned away"); n != 1 {
		t.Errorf("%d WARN lines for the refusals, want 1", n)
	}
}

// A burst over a caller's rate quota is refused busy, and the caller is
// admitted again once its bucket has refilled; one record for the burst.
func TestCallerRateQuota(t *testing.T) {
	ts, tr := startAuditServerExtra(t, "[server]\nrate_per_uid = 1\nburst_per_uid = 3\nquota_interval = \"1s\"\n")
	mark := tr.count(t)
	run := func() string {
		return string(exchange(t, ts.Socket, request([]string{"true"}, nil, true)))
	}
	var served, busy int
	for range 6 {
		switch got := run(); {
		case got == "8:exitcode,1:0,":
			served++
		case strings.Contains(got, "sockwarden: busy: uid 0 is over its rate of 1 connections a second (bursts of 3)") && strings.HasSuffix(got, "8:exitcode,3:126,"):
			busy++
		default:
			t.Fatalf("reply %q", got)
		}
	}
	// The start-up probe may have taken a token.
	if served < 2 || served > 3 || busy != 6-served {
		t.Errorf("a burst of 6: %d served, %d busy; want the burst of 3 (or 2) served, the rest busy", served, busy)
	}
	time.Sleep(2100 * time.Millisecond)
	if got := run(); got != "8:exitcode,1:0," {
		t.Errorf("after the bucket refilled: %q, want the request served", got)
	}
	rs := tr.waitFor(t, mark, 5*time.Second, "quota record", func(rs []rec) bool { return len(withAction(rs, audit.ActionQuota)) > 0 })
	q := withAction(rs, audit.ActionQuota)
	if len(q) != 1 || q[0].Str("sockwarden.quota.kind") != "rate" || q[0].Num("sockwarden.quota.refused") != int64(busy) ||
		q[0].Num("sockwarden.quota.rate") != 1 || q[0].Num("sockwarden.quota.limit") != 3 {
		t.Errorf("quota records %v", q)
	}
}

// A policy rule's own quota: one request of "sleepers" at a time, whoever
// asks; a second one at once gets the busy reply, one after the first
// ended runs, and the refusal is recorded with the key.
func TestDecisionQuota(t *testing.T) {
	dir := t.TempDir()
	rego := `package sockwarden

default decision := {"allow": false}

decision := {"allow": true, "run_as": {"user": "65534"}, "quota": {"key": "sleepers", "concurrent": 1}} if input.argv[0] == "sleep"
`
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, tr := startAuditServerExtra(t, "[server]\nquota_interval = \"1s\"\n", "-p", dir)
	mark := tr.count(t)
	first := dial(t, ts.Socket)
	first.Write(request([]string{"sleep", "2"}, nil, true))
	time.Sleep(300 * time.Millisecond) // judged and running
	got := string(exchange(t, ts.Socket, request([]string{"sleep", "0"}, nil, true)))
	if !strings.Contains(got, `sockwarden: busy: the policy runs at most 1 requests of "sleepers" at once`) ||
		!strings.HasSuffix(got, "8:exitcode,3:126,") {
		t.Errorf("second request while the first runs: %q, want the busy reply", got)
	}
	if rest, _ := io.ReadAll(first); !strings.HasSuffix(string(rest), "8:exitcode,1:0,") {
		t.Fatalf("first request: %q", rest)
	}
	time.Sleep(100 * time.Millisecond) // its slot given back
	if got := string(exchange(t, ts.Socket, request([]string{"sleep", "0"}, nil, true))); got != "8:exitcode,1:0," {
		t.Errorf("a request after the first ended: %q, want it run", got)
	}
	rs := tr.waitFor(t, mark, 5*time.Second, "quota record", func(rs []rec) bool { return len(withAction(rs, audit.ActionQuota)) > 0 })
	q := withAction(rs, audit.ActionQuota)
	if len(q) != 1 || q[0].Str("sockwarden.quota.kind") != "decision" || q[0].Str("sockwarden.quota.key") != "sleepers" ||
		q[0].Num("sockwarden.quota.refused") != 1 || q[0].Num("sockwarden.quota.limit") != 1 {
		t.Errorf("quota records %v", q)
	}
}
