package audit_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sockwarden/sockwarden/audit"
)

// A server logs its start, then one record per step of each request.
func Example() {
	clock := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	l := audit.New(audit.NewWriterSink(os.Stdout), audit.Options{
		Host: "web1",
		Now:  func() time.Time { return clock }, // fixed, for a stable example
	})
	defer l.Close()

	l.ServerStart(audit.ServerEvent{Version: "0.1.0", Socket: "/run/sockwarden/exec.sock", PID: 1000, LandlockABI: 6})
	err := l.Decision(audit.Decision{
		RequestID: "01JD6X", Allow: true, Argv: []string{"uname", "-a"}, Exe: "/usr/bin/uname",
		Peer:     audit.Peer{PID: 4242, UID: 33, GID: 33, User: "www-data", Group: "www-data"},
		Revision: "rev-7", EvalDuration: 150 * time.Microsecond,
	})
	if err != nil {
		// Fail closed: the request must not run unrecorded.
		fmt.Println("refusing request:", err)
	}
	// Output:
	// {"@timestamp":"2026-11-21T10:00:00.000000000Z","ecs":{"version":"8.17.0"},"event":{"kind":"event","category":["process"],"type":["start"],"action":"server.start","outcome":"success","dataset":"sockwarden.audit"},"seq":1,"host":{"name":"web1"},"process":{"pid":1000},"service":{"name":"sockwarden","version":"0.1.0"},"sockwarden":{"server":{"socket":"/run/sockwarden/exec.sock","landlock_abi":6},"chain":{"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ccb7cc063f5dee1c29f6b537a24abc1dade0327513c6ab172db88414b7d64f93"}}}
	// {"@timestamp":"2026-11-21T10:00:00.000000000Z","ecs":{"version":"8.17.0"},"event":{"kind":"event","category":["process"],"type":["access"],"action":"exec.decision","outcome":"success","duration":150000,"dataset":"sockwarden.audit"},"seq":2,"request_id":"01JD6X","host":{"name":"web1"},"process":{"executable":"/usr/bin/uname","args":["uname","-a"],"args_count":2},"client":{"user":{"id":"33","name":"www-data","group":{"id":"33","name":"www-data"}}},"sockwarden":{"decision":{"allow":true,"reasons":[]},"policy":{"revision":"rev-7"},"argv":{"sha256":"6bfd33a610be8e00be69f01d5d046f1978b540bdb6de014fd929977373c9ddd6"},"peer":{"pid":4242},"chain":{"prev":"ccb7cc063f5dee1c29f6b537a24abc1dade0327513c6ab172db88414b7d64f93","hash":"08c14dc5e2216804b065cf598176a50d0c7c5b9fd1ca08cb7f9b1ac6e4453cbf"}}}
}

// Verify the current audit file and the one logrotate renamed, oldest
// first, as `sockwarden audit verify` does.
func ExampleVerifyFiles() {
	dir, _ := os.MkdirTemp("", "audit")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.log")

	fs, _ := audit.OpenFile(path, audit.FileOptions{Sync: audit.SyncEvery})
	l := audit.New(fs, audit.Options{})
	l.ServerStart(audit.ServerEvent{Socket: "/run/sockwarden/exec.sock"})
	l.Exit(audit.Exit{RequestID: "r1", PID: 4321})
	os.Rename(path, path+".1") // logrotate
	l.Reopen()                 // SIGHUP
	l.Exit(audit.Exit{RequestID: "r2", PID: 4322, Signal: "KILL"})
	l.Close()

	rep, err := audit.VerifyFiles(path+".1", path)
	switch {
	case err != nil:
		fmt.Println("error:", err)
	case rep.Problem != nil:
		fmt.Println(rep.Problem)
	default:
		fmt.Printf("ok: %d records in %d files\n", rep.Records, rep.Files)
	}
	// Output: ok: 3 records in 2 files
}
