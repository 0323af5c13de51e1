package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/kaudit"
	"github.com/sockwarden/sockwarden/internal/kaudit/kaudittest"
	"github.com/sockwarden/sockwarden/sandbox"
)

// The tests of sandbox denials change the kernel's audit setting, which
// is the whole host's: none of them is parallel, so that no other test
// of this package runs meanwhile, and kaudittest holds off the other
// packages' tests that change it and puts the setting back.

// denialPolicy writes a policy running every request as nobody in a
// narrow Landlock view with TCP restricted, and the decision's explain
// as given, and returns its directory. /dev/tty is writable: bash opens
// it, and would add a harmless denial of its own to every request.
func denialPolicy(t *testing.T, explain bool) string {
	t.Helper()
	dir := t.TempDir()
	rego := fmt.Sprintf(`package sockwarden

decision := {
	"allow": true,
	"run_as": {"user": "nobody"},
	"landlock": {"ro": ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys"], "rw": ["/dev/null", "/dev/tty"], "connect_tcp": []},
	"explain": %t,
}
`, explain)
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// refusingDir returns a directory nobody may write to and run from
// under denialPolicy (the file permissions would allow both), holding
// an executable, prog.
func refusingDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "swdeny-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prog"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tcpListener returns the port of a loopback listener that accepts and
// closes.
func tcpListener(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// denialsOf gathers a request's denials from its exec.exit record and
// any sandbox.denials record after it, waiting (up to the server's wait
// for the kernel's count, and a margin) until one of them is final.
// It returns "ACCESS on TARGET xCOUNT" strings and the final record's
// denials object.
func denialsOf(t *testing.T, tr *trail, id string) ([]string, map[string]any) {
	t.Helper()
	var final map[string]any
	deadline := time.Now().Add(sandbox.DenialFinalWait + time.Second)
	for {
		var exit, follow map[string]any
		for _, r := range byID(tr.all(t))[id] {
			d, _ := r.Get("sockwarden.denials").(map[string]any)
			switch r.Action() {
			case "exec.exit":
				exit = d
			case "sandbox.denials":
				follow = d
			}
		}
		switch {
		case follow != nil:
			final = follow
		case exit != nil && exit["complete"] != nil:
			final = exit
		case exit != nil && time.Now().After(deadline):
			// No follow-up: the exit record had them all.
			final = exit
		}
		if final != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s: no exit record with denials:\n%s", id, dumpRecs(byID(tr.all(t))[id]))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var out []string
	list, _ := final["landlock"].([]any)
	for _, x := range list {
		m := x.(map[string]any)
		out = append(out, fmt.Sprintf("%s on %s x%v", m["access"], m["target"], m["count"]))
	}
	return out, final
}

// runDenied runs argv through the server with the run subcommand and
// returns its stderr and the request id, read from the trail (the last
// exec.decision record).
func runDenied(t *testing.T, ts *testServer, tr *trail, argv ...string) (stderr, id string) {
	t.Helper()
	mark := tr.count(t)
	cmd := exec.Command(binary(t), append([]string{"run", ts.Socket, "--"}, argv...)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	cmd.Run()
	rs := tr.waitFor(t, mark, 5*time.Second, "exec.exit", func(rs []rec) bool { return len(withAction(rs, "exec.exit")) > 0 })
	return errb.String(), withAction(rs, "exec.decision")[0].RequestID()
}

// TestSandboxDenialsInTrail: a program's denied write, exec and TCP
// connect are named in its audit trail with its request id, and the
// client, under -d (as every test server runs), hears of each before the
// exit status.
func TestSandboxDenialsInTrail(t *testing.T) {
	kaudittest.Set(t, true)
	ts, tr := startAuditServerExtra(t, "", "-p", denialPolicy(t, false))
	ts.waitLog(t, "sandbox denials: reported", 0)
	dir := refusingDir(t)
	port := tcpListener(t)
	script := fmt.Sprintf("echo x > %[1]s/new; %[1]s/prog; echo > /dev/tcp/127.0.0.1/%[2]d; echo done", dir, port)

	// The control: the same script without Landlock does all three.
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", script).CombinedOutput()
	if err != nil || string(out) != "done\n" {
		t.Fatalf("without the sandbox: %v, %q", err, out)
	}
	os.Remove(filepath.Join(dir, "new"))

	stderr, id := runDenied(t, ts, tr, "bash", "-c", script)
	if !strings.Contains(stderr, "Permission denied") {
		t.Fatalf("not denied: %q", stderr)
	}
	got, final := denialsOf(t, tr, id)
	want := []string{
		"fs.make_reg on " + dir + " x1",
		"fs.execute,fs.read_file on " + dir + "/prog x1",
		// bash, refused the exec, opens the file to see what it is.
		"fs.read_file on " + dir + "/prog x1",
		fmt.Sprintf("net.connect_tcp on 127.0.0.1:%d x1", port),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("request %s denials:\n got %q\nwant %q", id, got, want)
	}
	if final["complete"] != true || final["total"] != 4.0 {
		t.Errorf("final report %v, want complete, total 4", final)
	}
	// -d: one stderr line per denial, with the request id, before the
	// exit status.
	for _, w := range []string{
		"sockwarden: sandbox denied fs.make_reg on " + dir + " (request " + id + ")\n",
		"sockwarden: sandbox denied fs.execute,fs.read_file on " + dir + "/prog (request " + id + ")\n",
		fmt.Sprintf("sockwarden: sandbox denied net.connect_tcp on 127.0.0.1:%d (request %s)\n", port, id),
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	tr.verify(t)
}

// TestSandboxDenialsPerRequest: eight requests at once, each refused on
// a directory of its own, each get only their own denials in the trail;
// a request with none gets an empty list.
func TestSandboxDenialsPerRequest(t *testing.T) {
	kaudittest.Set(t, true)
	ts, tr := startAuditServerExtra(t, "", "-p", denialPolicy(t, false))
	const n = 8
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = refusingDir(t)
	}
	mark := tr.count(t)
	var wg sync.WaitGroup
	for i := 0; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := "sleep 0.3"
			if i < n {
				script = fmt.Sprintf("for f in a b c; do echo x > %s/$f; sleep 0.1; done", dirs[i])
			}
			exec.Command(binary(t), "run", ts.Socket, "--", "bash", "-c", script).Run()
		}()
	}
	wg.Wait()
	rs := tr.waitFor(t, mark, 10*time.Second, "the exits", func(rs []rec) bool { return len(withAction(rs, "exec.exit")) == n+1 })
	seen := 0
	for _, d := range withAction(rs, "exec.decision") {
		args := d.Args()
		script := args[len(args)-1]
		got, final := denialsOf(t, tr, d.RequestID())
		if script == "sleep 0.3" {
			if len(got) != 0 || final["received"] != 0.0 {
				t.Errorf("request without denials: %v %v", got, final)
			}
			continue
		}
		for i, dir := range dirs {
			if strings.Contains(script, dir+"/") {
				seen++
				if want := "fs.make_reg on " + dir + " x3"; len(got) != 1 || got[0] != want {
					t.Errorf("request %d: %q, want only %q", i, got, want)
				}
			}
		}
	}
	if seen != n {
		t.Errorf("found %d of %d requests", seen, n)
	}
}

// TestSandboxDenialsBurst: when the kernel drops records in a burst (its
// backlog held to 8), the trail says the list is incomplete and gives the
// kernel's count: in a sandbox.denials record after the exit record
// (whose list was not final yet) on a server without -d, and in the exit
// record itself on one with -d (which waits for the count), whose client
// also hears how many denials the list lacks.
func TestSandboxDenialsBurst(t *testing.T) {
	kaudittest.Set(t, true)
	kaudittest.SetBacklogLimit(t, 8)
	dir := refusingDir(t)
	script := fmt.Sprintf(`cd %s && for p in 1 2 3 4; do touch $(seq -f "$p-%%g" 1000) 2>/dev/null & done; wait`, dir)
	check := func(final map[string]any) {
		t.Helper()
		if final["complete"] != false || final["total"] != 4000.0 {
			t.Errorf("burst: %v, want complete false, total 4000", final)
		}
		if r, _ := final["received"].(float64); r >= 4000 || r < 1 {
			t.Errorf("received %v of 4000", final["received"])
		}
	}

	ts, tr := startQuietServer(t, denialPolicy(t, false))
	_, id := runDenied(t, ts, tr, "bash", "-c", script)
	_, final := denialsOf(t, tr, id)
	check(final)
	if rs := withAction(byID(tr.all(t))[id], "sandbox.denials"); len(rs) != 1 || rs[0].Str("event.outcome") != "failure" {
		t.Errorf("want one sandbox.denials record, outcome failure:\n%s", dumpRecs(byID(tr.all(t))[id]))
	}

	ts, tr = startAuditServerExtra(t, "", "-p", denialPolicy(t, false))
	stderr, id := runDenied(t, ts, tr, "bash", "-c", script)
	_, final = denialsOf(t, tr, id)
	check(final)
	if !strings.Contains(stderr, "more sandbox denials the kernel did not report (request "+id+")") {
		t.Errorf("stderr does not say the list is incomplete:\n%s", stderr)
	}
}

// startQuietServer starts a server without -d, with the policy in
// policyDir and its audit trail in a file.
func startQuietServer(t *testing.T, policyDir string) (*testServer, *trail) {
	t.Helper()
	cfg, tr := auditConfig(t, shortTempDir(t), "")
	sock := filepath.Join(shortTempDir(t), "s.sock")
	ts := startServerCmd(t, sock, exec.Command(binary(t), "-c", cfg, "-p", policyDir, sock))
	ts.waitLog(t, "sandbox denials: reported", 0)
	return ts, tr
}

// TestSandboxDenialsExplainFlag: without -d, the decision's "explain"
// sends the lines; without either, the client gets only the program's
// own output (the trail lists the denials all the same).
func TestSandboxDenialsExplainFlag(t *testing.T) {
	kaudittest.Set(t, true)
	dir := refusingDir(t)
	script := "echo x > " + dir + "/f"
	for _, explain := range []bool{true, false} {
		ts, tr := startQuietServer(t, denialPolicy(t, explain))
		stderr, id := runDenied(t, ts, tr, "bash", "-c", script)
		line := "sockwarden: sandbox denied fs.make_reg on " + dir + " (request " + id + ")\n"
		if got := strings.Contains(stderr, line); got != explain {
			t.Errorf("explain %v: stderr %q", explain, stderr)
		}
		if got, _ := denialsOf(t, tr, id); len(got) != 1 {
			t.Errorf("explain %v: trail lists %q", explain, got)
		}
	}
}

// TestSandboxDenialsNotReported: with reporting off, or the kernel's
// audit off under "auto", the start-up log says so once and the trail
// has no denials; "on" turns the kernel's audit on and says so.
func TestSandboxDenialsNotReported(t *testing.T) {
	dir := refusingDir(t)
	script := "echo x > " + dir + "/f"
	tests := []struct {
		name, mode string
		kernel     bool     // the kernel's audit at start-up
		log        []string // the start-up log's lines on denials
		reported   bool
	}{
		{"off", "off", true, []string{`sandbox denials: not reported`}, false},
		{"auto, kernel audit off", "auto", false, []string{`sandbox denials: not reported: the kernel's audit is off`}, false},
		{"on, kernel audit off", "on", false, []string{`sandbox denials: turned the kernel's audit on, for the whole host`,
			`sandbox denials: reported in each request's audit trail`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kaudittest.Set(t, tt.kernel)
			ts, tr := startAuditServerExtra(t, fmt.Sprintf("sandbox_denials = %q\n", tt.mode), "-p", denialPolicy(t, false))
			ts.waitLog(t, "containment", 0)
			var lines []string
			for _, l := range strings.Split(ts.logs.String(), "\n") {
				if _, msg, ok := strings.Cut(l, `"msg":"sandbox denials:`); ok && !strings.Contains(l, `"DEBUG"`) {
					lines = append(lines, "sandbox denials:"+msg[:strings.IndexAny(msg+`"`, `";(`)])
				}
			}
			if len(lines) != len(tt.log) {
				t.Errorf("start-up log on denials: %q, want %q", lines, tt.log)
			}
			for i := range min(len(lines), len(tt.log)) {
				if !strings.HasPrefix(lines[i], tt.log[i]) {
					t.Errorf("start-up log on denials: %q, want %q", lines, tt.log)
				}
			}
			stderr, id := runDenied(t, ts, tr, "bash", "-c", script)
			if !strings.Contains(stderr, "Permission denied") {
				t.Fatalf("not denied: %q", stderr)
			}
			var exit rec
			for _, r := range byID(tr.all(t))[id] {
				if r.Action() == "exec.exit" {
					exit = r
				}
			}
			if _, has := exit.Get("sockwarden.denials").(map[string]any); has != tt.reported {
				t.Errorf("exit record has denials: %v, want %v\n%s", has, tt.reported, dumpRecs([]rec{exit}))
			}
			if tt.reported {
				st, err := kaudit.GetStatus()
				if err != nil || st.Enabled != 1 {
					t.Errorf("kernel audit after start-up: %+v %v", st, err)
				}
			}
		})
	}
}

// TestSandboxDenialsUnreadable: a server that may not read the kernel's
// audit (not root) says so once at start-up, and serves.
func TestSandboxDenialsUnreadable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the server as another user")
	}
	kaudittest.Set(t, true)
	dir := shortTempDir(t)
	os.Chmod(dir, 0o777)
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(binary(t), "-M", "0666", sock)
	cmd.SysProcAttr = nobodyAttr()
	ts := startServerCmd(t, sock, cmd)
	ts.waitLog(t, "containment", 0)
	logs := ts.logs.String()
	if n := strings.Count(logs, "sandbox denials:"); n != 1 || !strings.Contains(logs, "the kernel's audit status cannot be read") {
		t.Errorf("start-up log (%d lines on denials):\n%s", n, logs)
	}
	run := exec.Command(binary(t), "run", sock, "--", "true")
	run.SysProcAttr = nobodyAttr()
	if out, err := run.CombinedOutput(); err != nil {
		t.Errorf("request: %v %q", err, out)
	}
}

func nobodyAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
}
