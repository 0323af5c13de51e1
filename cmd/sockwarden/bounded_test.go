package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
)

// A hostile caller sends 200 denied requests of about 900 KB of argv
// each. The trail grows by at most 200 bounded records, every record
// validates against the schema and keeps the whole argv's hash, the
// operator log shows no whole argv, and another uid's request still runs.
func TestAuditBoundedUnderHugeDeniedArgv(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (to connect as another uid)")
	}
	ts, tr := startAuditServer(t, "-M", "0666")                      // the default policy: only root is served
	if err := os.Chmod(filepath.Dir(ts.Socket), 0o755); err != nil { // nobody must reach the socket
		t.Fatal(err)
	}
	st, err := os.Stat(tr.Path)
	if err != nil {
		t.Fatal(err)
	}
	before := st.Size()
	big := strings.Repeat("A", 131000)
	argv := []string{"echo", big, big, big, big, big, big}
	req := request(argv, nil, true)
	const n = 200
	mark := tr.count(t)
	for i := 0; i < n; i++ {
		c := dialAs(t, ts.Socket, 65534, 65534, func(c *net.UnixConn) error { _, err := c.Write(req); return err })
		got, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(got), "sockwarden: denied: ") {
			t.Fatalf("request %d: reply %.200q, want a deny", i, got)
		}
	}
	rs := tr.since(t, mark) // each checked against the schema
	st, err = os.Stat(tr.Path)
	if err != nil {
		t.Fatal(err)
	}
	if growth := st.Size() - before; growth > n*audit.DefaultMaxRecordBytes {
		t.Errorf("the trail grew by %d bytes for %d requests, over %d x %d", growth, n, n, audit.DefaultMaxRecordBytes)
	} else {
		t.Logf("%d denied requests of %d bytes of argv: the trail grew by %d bytes (%d per request)", n, len(req), growth, growth/n)
	}
	d := withAction(rs, audit.ActionDecision)
	if len(d) != n {
		t.Fatalf("%d decision records, want %d", len(d), n)
	}
	sum := audit.ArgvSHA256(argv)
	for _, r := range d {
		if r.Get("sockwarden.argv.sha256") != sum || r.Get("process.args_count") != float64(7) {
			t.Fatalf("record without the whole argv's hash or count: %.300v", r)
		}
	}
	if strings.Contains(ts.logs.String(), strings.Repeat("A", 1000)) {
		t.Error("the operator log prints the argv")
	}
	// Another uid's request runs at once.
	r := decodeReply(t, exchange(t, ts.Socket, request([]string{"true"}, nil, true)))
	if r.Final[0] != "exitcode" || r.Final[1] != "0" {
		t.Errorf("root's request after the flood: %v %q", r.Final, r.Stderr.String())
	}
}
