package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
)

// Faults: children that misbehave, clients that read slowly, the server
// being stopped, killed, reloaded with a broken policy or losing its audit
// disk, each under load where that matters.

// A child that ignores SIGTERM is KILLed after the kill timeout, and the
// trail says so: TERM, then KILL marked escalated, then the exit by KILL.
func TestChildIgnoresTerm(t *testing.T) {
	for _, tt := range []struct {
		name, reason string
		timeout      string
	}{
		{"deadline", "timeout", "1"},
		{"disconnect", "disconnect", "60"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts, tr := startAuditServer(t, "-t", tt.timeout, "-k", "1")
			mark := tr.count(t)
			c, d, line := startHeld(t, ts.Socket, groupScript(true))
			pids := pidsOf(t, line)
			start := time.Now()
			if tt.reason == "disconnect" {
				c.Close()
			} else {
				typ, data := readPair(t, d)
				if typ != "termsig" || data != "KILL" {
					t.Fatalf("final pair %q %q, want termsig KILL", typ, data)
				}
			}
			waitGone(t, 4*time.Second, pids...)
			rs := tr.waitFor(t, mark, 5*time.Second, "exit", func(rs []rec) bool { return len(withAction(rs, audit.ActionExit)) > 0 })
			if got := actionsOf(rs); got != "exec.decision exec.start exec.kill exec.kill exec.exit" {
				t.Fatalf("records %q:\n%s", got, dumpRecs(rs))
			}
			term, kill, exit := rs[2], rs[3], rs[4]
			if term.Str("event.reason") != tt.reason || term.Str("sockwarden.kill.signal") != "TERM" || term.Get("sockwarden.kill.escalated") != false {
				t.Errorf("first kill %v", term)
			}
			if kill.Str("event.reason") != tt.reason || kill.Str("sockwarden.kill.signal") != "KILL" || kill.Get("sockwarden.kill.escalated") != true {
				t.Errorf("second kill %v", kill)
			}
			if exit.Str("sockwarden.exit.signal") != "KILL" {
				t.Errorf("exit %v", exit)
			}
			if el := time.Since(start); tt.reason == "disconnect" && el < 900*time.Millisecond {
				t.Errorf("killed after %v, before the kill timeout", el)
			}
			ts.assertAlive(t)
		})
	}
}

// A child that closes its stdout early but keeps running: the server
// keeps forwarding stderr, waits for the exit and reports it.
func TestChildClosesStdoutEarly(t *testing.T) {
	ts, tr := startAuditServer(t)
	mark := tr.count(t)
	start := time.Now()
	got := exchange(t, ts.Socket, request([]string{"sh", "-c", "echo first; exec >&-; sleep 1; echo done >&2; exit 3"}, nil, true))
	if want := pairs("stdout", "first\n", "stderr", "done\n", "exitcode", "3"); !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("reply after %v, before the child exited", el)
	}
	rs := tr.since(t, mark)
	if actionsOf(rs) != "exec.decision exec.start exec.exit" || rs[2].Num("process.exit_code") != 3 ||
		rs[2].Num("sockwarden.exit.bytes.stdout") != 6 || rs[2].Num("sockwarden.exit.bytes.stderr") != 5 {
		t.Errorf("records:\n%s", dumpRecs(rs))
	}
}

// A child that writes megabytes to stderr while the client reads slowly:
// the server's memory stays flat (backpressure, not buffering) and the
// bytes arrive complete and in order.
func TestSlowReaderBigStderr(t *testing.T) {
	ts, _ := startAuditServer(t)
	pid := ts.Cmd.Process.Pid
	ts.assertAlive(t)
	base := procStatus(pid, "VmRSS")
	const n = 1000000
	want, err := exec.Command("seq", "1", strconv.Itoa(n)).Output()
	if err != nil {
		t.Fatal(err)
	}

	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if r := procStatus(pid, "VmRSS"); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	c := dial(t, ts.Socket)
	c.Write(request([]string{"sh", "-c", "seq 1 " + strconv.Itoa(n) + " >&2"}, nil, true))
	d := netstring.NewDecoder(bufio.NewReaderSize(c, 4096), 1<<20)
	var got bytes.Buffer
	var final []string
	for i := 0; final == nil; i++ {
		typ, data := readPair(t, d)
		switch typ {
		case "stderr":
			got.WriteString(data)
		case "exitcode", "termsig":
			final = []string{typ, data}
		default:
			t.Fatalf("unexpected %q pair", typ)
		}
		time.Sleep(5 * time.Millisecond) // a slow reader

	}
	close(stop)
	sampler.Wait()
	if final[0] != "exitcode" || final[1] != "0" {
		t.Errorf("final %v", final)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("stderr: %d bytes, want %d; equal prefix %d", got.Len(), len(want), commonPrefix(got.Bytes(), want))
	}
	t.Logf("server RSS %d KiB before, peak %d KiB while %d bytes passed through", base, peak.Load(), len(want))
	if grown := peak.Load() - base; grown > 6<<10 {
		t.Errorf("server RSS grew by %d KiB", grown)
	}
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// SIGTERM to a server running 100 programs (half of them ignoring TERM):
// every group is killed, every kill recorded with reason shutdown, every
// client gets its termsig, the socket goes and the server exits 0 with a
// trail that verifies.
func TestShutdownWithManyChildren(t *testing.T) {
	const n = 100
	ts, tr := startAuditServer(t, "-m", "200", "-k", "1")
	type held struct {
		d    *netstring.Decoder
		pids []int
	}
	var hs []held
	for i := range n {
		_, d, line := startHeld(t, ts.Socket, groupScript(i%2 == 0))
		hs = append(hs, held{d, pidsOf(t, line)})
	}
	start := time.Now()
	ts.Cmd.Process.Signal(syscall.SIGTERM)
	finals := make([][]string, n)
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			typ, err := h.d.Decode(nil)
			if err != nil {
				finals[i] = []string{"error", err.Error()}
				return
			}
			data, _ := h.d.Decode(nil)
			finals[i] = []string{string(typ), string(data)}
		}()
	}
	select {
	case <-ts.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
	wg.Wait()
	el := time.Since(start)
	if code := ts.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if el > 6*time.Second {
		t.Errorf("shutdown took %v with a 1 s kill timeout", el)
	}
	for i, h := range hs {
		waitGone(t, time.Second, h.pids...)
		want := "TERM"
		if i%2 == 0 {
			want = "KILL"
		}
		if finals[i][0] != "termsig" || finals[i][1] != want {
			t.Errorf("client %d got %v, want termsig %s", i, finals[i], want)
		}
	}
	if _, err := os.Lstat(ts.Socket); !os.IsNotExist(err) {
		t.Errorf("socket still exists after shutdown: %v", err)
	}

	rs := tr.all(t)
	tr.verify(t)
	if last := rs[len(rs)-1]; last.Action() != audit.ActionServerStop {
		t.Errorf("last record %s, want server.stop", last.Action())
	}
	reqs := requestsWithArgv(rs, groupScript(true)...)
	for id, g := range requestsWithArgv(rs, groupScript(false)...) {
		reqs[id] = g
	}
	if len(reqs) != n {
		t.Fatalf("%d requests in the trail, want %d", len(reqs), n)
	}
	escalated := 0
	for id, g := range reqs {
		acts := actionsOf(g)
		if acts != "exec.decision exec.start exec.kill exec.exit" && acts != "exec.decision exec.start exec.kill exec.kill exec.exit" {
			t.Errorf("request %s: records %q", id, acts)
			continue
		}
		for _, k := range withAction(g, audit.ActionKill) {
			if k.Str("event.reason") != "shutdown" {
				t.Errorf("request %s: kill %v", id, k)
			}
		}
		if len(g) == 5 {
			escalated++
		}
	}
	if escalated != n/2 {
		t.Errorf("%d escalations recorded, want %d (the children ignoring TERM)", escalated, n/2)
	}
}

// SIGKILL to the server: its direct children die with it (parent-death
// signal); the socket stays behind, and a new server replaces it.
func TestServerKilledWithChildren(t *testing.T) {
	ts := startServer(t)
	var children, grandchildren []int
	for range 10 {
		_, _, line := startHeld(t, ts.Socket, groupScript(false))
		p := pidsOf(t, line)
		children = append(children, p[0])
		grandchildren = append(grandchildren, p[1])
	}
	t.Cleanup(func() {
		for _, p := range grandchildren {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
	ts.Cmd.Process.Kill()
	<-ts.exited
	waitGone(t, 2*time.Second, children...)
	survivors := 0
	for _, p := range grandchildren {
		if !gone(p) {
			survivors++
		}
	}
	t.Logf("%d of %d grandchildren outlived the SIGKILLed server (not in the parent-death signal's reach)", survivors, len(grandchildren))

	if _, err := os.Lstat(ts.Socket); err != nil {
		t.Fatalf("socket of a killed server: %v", err)
	}
	ts2 := startServerAt(t, ts.Socket)
	ts2.assertAlive(t)
}

// The policy is reloaded (SIGHUP) into broken ones, several times, while
// clients send requests continuously: the old policy keeps serving and no
// request fails.
func TestBrokenReloadUnderLoad(t *testing.T) {
	dir := shortTempDir(t)
	polDir := filepath.Join(dir, "policy")
	os.Mkdir(polDir, 0o755)
	file := filepath.Join(polDir, "policy.rego")
	copyFile(t, "testdata/policy/basic.rego", file)
	good, _ := os.ReadFile(file)
	cfg, tr := auditConfig(t, dir, "")
	ts := startServer(t, "-c", cfg, "-p", polDir)
	ts.assertAlive(t)

	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				arg := fmt.Sprintf("w%d-%d", w, i)
				got, err := roundTripErr(ts.Socket, request([]string{"echo", arg}, nil, true))
				if want := pairs("stdout", arg+"\n", "exitcode", "0"); err != nil || !bytes.Equal(got, want) {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %q, %v", arg, got, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	hup := func(want string) {
		t.Helper()
		n := strings.Count(ts.logs.String(), want)
		ts.Cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(20 * time.Second); strings.Count(ts.logs.String(), want) == n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP", want)
			}
		}
	}
	broken := []struct{ name, rego string }{
		{"syntax error", "package sockwarden\n\ndecision := {\"allow\": true\n"},
		{"no decision", "package other\n\nx := 1\n"},
		{"garbage", "\x00\xff\xfe binary garbage {{{"},
		{"undefined for a plain request", "package sockwarden\n\ndecision := {\"allow\": true} if input.argv[0] == \"never\"\n"},
		{"syntax error again", "package sockwarden\n\ndecision := \n"},
	}
	for _, b := range broken {
		before := ok.Load()
		if err := os.WriteFile(file, []byte(b.rego), 0o644); err != nil {
			t.Fatal(err)
		}
		hup("policy reload failed")
		// Requests keep being served between reloads.
		for deadline := time.Now().Add(10 * time.Second); ok.Load() < before+20; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after the %s reload: only %d requests served", b.name, ok.Load()-before)
			}
		}
	}
	os.WriteFile(file, good, 0o644)
	hup("policy reloaded")
	close(stop)
	wg.Wait()
	t.Logf("%d requests served during %d broken reloads and a good one, %d failed", ok.Load(), len(broken), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed; first: %v", failed.Load(), firstFailure.Load())
	}
	rs := tr.all(t)
	tr.verify(t)
	reloads := withAction(rs, audit.ActionPolicyReload)
	fails := 0
	for _, r := range reloads {
		if r.Str("event.outcome") == "failure" {
			fails++
		}
	}
	if fails != len(broken) || len(reloads) != len(broken)+1 {
		t.Errorf("%d reload records, %d failed; want %d failed and one success", len(reloads), fails, len(broken))
	}
	for _, r := range withAction(rs, audit.ActionDecision) {
		if r.Get("sockwarden.decision.allow") != true {
			t.Errorf("a request was denied: %v", r)
		}
	}
}

// roundTripErr sends req and reads the reply to the end.
func roundTripErr(sock string, req []byte) ([]byte, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// With the audit file on a full file system and many clients at once,
// every request either ran with its decision, start and exit records in
// the file, or was refused with the "unavailable" reply and did not run.
//
// Phase 1: the trail fills its file system by itself; the free-space
// reserve lets the running requests record their exits, so the
// invariant holds exactly. Phase 2: space returns and service resumes by
// itself. Phase 3: another process fills the disk to the last byte while
// requests run: the reserve is gone too, so the guarantee is weaker, and
// the test checks what still holds (nothing runs without its allowing
// decision record; nothing refused before its decision ran) and reports
// the requests whose later records were lost. The chain verifies across
// all of it.
func TestAuditDiskFullUnderLoad(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := shortTempDir(t)
	fsDir := filepath.Join(dir, "fs")
	os.Mkdir(fsDir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", fsDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fsDir).Run() })
	markers := filepath.Join(dir, "markers")
	os.Mkdir(markers, 0o777)
	os.Chmod(markers, 0o777)
	os.Chmod(dir, 0o755)
	polDir := filepath.Join(dir, "policy")
	os.Mkdir(polDir, 0o755)
	os.WriteFile(filepath.Join(polDir, "p.rego"), []byte(`package sockwarden

default decision := {"allow": false}

decision := {"allow": true, "run_as": {"user": "65534", "group": "65534", "groups": []}} if input.peer.uid == 0
`), 0o644)
	tr := &trail{Path: filepath.Join(fsDir, "audit.jsonl")}
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[audit]\nsink = \"file\"\npath = %q\n", tr.Path)), 0o600)
	ts := startServer(t, "-c", cfg, "-p", polDir, "-m", "200")

	type outcome struct {
		marker string
		phase  int
		ran    bool // the reply says so
	}
	var mu sync.Mutex
	var outcomes []outcome
	var next, refused atomic.Int64
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(outcomes) }
	load := func(phase, workers int, until func() bool) {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !until() && !t.Failed() {
					m := filepath.Join(markers, "m"+strconv.FormatInt(next.Add(1), 10))
					got, err := roundTripErr(ts.Socket, request([]string{"touch", m}, nil, true))
					o := outcome{m, phase, true}
					switch s := string(got); {
					case err == nil && s == string(pairs("exitcode", "0")):
					case err == nil && strings.Contains(s, "sockwarden: unavailable: the audit log cannot be written") && strings.HasSuffix(s, "8:exitcode,3:126,"):
						o.ran = false
						refused.Add(1)
					default:
						t.Errorf("touch %s: %q, %v", m, s, err)
						return
					}
					mu.Lock()
					outcomes = append(outcomes, o)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}

	// Phase 1: leave 300 KiB free, room for about a hundred requests'
	// records, and let the trail fill it.
	filler := filepath.Join(fsDir, "filler")
	var st syscall.Statfs_t
	syscall.Statfs(fsDir, &st)
	if err := os.WriteFile(filler, make([]byte, int64(st.Bfree)*st.Bsize-300<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	load(1, 16, func() bool { return refused.Load() >= 50 || time.Now().After(deadline) })
	if refused.Load() < 50 {
		t.Fatalf("only %d refusals on a full disk", refused.Load())
	}

	// Phase 2: space returns: service resumes by itself.
	os.Remove(filler)
	n := count()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		load(2, 1, func() bool { return count() > n })
		if outcomes[n].ran {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("service did not resume after space returned")
		}
		n++
	}
	n = count()
	load(2, 8, func() bool { return count() >= n+50 })

	// Phase 3: another process fills the disk to the last byte under load.
	r := refused.Load()
	go func() {
		time.Sleep(200 * time.Millisecond)
		f, _ := os.Create(filepath.Join(fsDir, "filler2"))
		buf := make([]byte, 4096)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
		f.Close()
	}()
	deadline = time.Now().Add(60 * time.Second)
	load(3, 8, func() bool { return refused.Load() >= r+20 || time.Now().After(deadline) })
	os.Remove(filepath.Join(fsDir, "filler2"))
	if refused.Load() < r+20 {
		t.Fatalf("only %d refusals after the disk was filled", refused.Load()-r)
	}

	rs := tr.all(t)
	tr.verify(t)
	var ranPerPhase, refusedPerPhase [4]int
	var lostExit, refusedButRan []string
	for _, o := range outcomes {
		_, err := os.Stat(o.marker)
		ranReally := err == nil
		reqs := requestsWithArgv(rs, "touch", o.marker)
		var g []rec
		for _, x := range reqs {
			g = x
		}
		acts := actionsOf(g)
		if o.ran {
			ranPerPhase[o.phase]++
		} else {
			refusedPerPhase[o.phase]++
		}
		switch {
		case len(reqs) > 1:
			t.Errorf("%s: %d requests in the trail", o.marker, len(reqs))
		case o.ran && !ranReally:
			t.Errorf("%s: the reply says it ran, but it did not", o.marker)
		case ranReally && (len(g) == 0 || g[0].Get("sockwarden.decision.allow") != true):
			t.Errorf("%s ran with no allowing decision record (records %q)", o.marker, acts)
		case o.phase < 3 && ranReally != o.ran:
			t.Errorf("%s ran although it was refused (records %q)", o.marker, acts)
		case o.phase < 3 && o.ran && (acts != "exec.decision exec.start exec.exit" || g[2].Num("process.exit_code") != 0):
			t.Errorf("%s ran with records %q", o.marker, acts)
		case !o.ran && len(withAction(g, audit.ActionStart)) > 0:
			t.Errorf("%s was refused but has records %q", o.marker, acts)
		case o.phase == 3 && ranReally && !o.ran:
			refusedButRan = append(refusedButRan, acts)
		case o.phase == 3 && o.ran && acts != "exec.decision exec.start exec.exit":
			lostExit = append(lostExit, acts)
		}
	}
	t.Logf("phase 1 (the trail fills the disk): %d ran, %d refused; phase 2 (space back): %d ran; "+
		"phase 3 (another process fills the disk): %d ran, %d refused, of which %d ran with their exit record lost and %d were refused after they had started (records %q)",
		ranPerPhase[1], refusedPerPhase[1], ranPerPhase[2], ranPerPhase[3], refusedPerPhase[3], len(lostExit), len(refusedButRan), refusedButRan)
}
