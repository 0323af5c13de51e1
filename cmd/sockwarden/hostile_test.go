package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
)

// Hostile clients over the real socket, against the built binary. Every
// case is followed by a liveness check, and its audit record is checked:
// the protocol.error record of a malformed request (what was wrong, how
// many bytes were read, the kernel's peer), or the records of a
// well-formed one.

// TestMalformedRequests sends requests that are not valid sockexec
// input. Each must be answered by a plain close (no reply bytes), leave
// exactly one protocol.error record naming the fault, and leave the
// server serving.
func TestMalformedRequests(t *testing.T) {
	ts, tr := startAuditServer(t)
	digits30 := strings.Repeat("1234567890", 3)
	tests := []struct {
		name    string
		send    string
		hangup  bool   // the request is incomplete: the client closes after sending it
		errText string // in error.message
		bytes   int64  // sockwarden.protocol.bytes_read
	}{
		{"non-digit length", "x:1,", false, `unexpected 'x' in length`, 0},
		{"non-digit length after digits", "1x:1,", false, `unexpected 'x' in length`, 1},
		{"missing comma", "1:1;5:uname,", false, `expected ',' after body, got ';'`, 3},
		{"missing colon", "1,", false, `unexpected ',' in length`, 1},
		{"leading zero", "01:1,", false, "leading zero in length", 1},
		{"30-digit argc length", digits30 + ":1,", false, "length overflows", 18},
		{"30-digit argv length", "1:1," + digits30 + ":", false, "length overflows", 4 + 18},
		{"4 GiB argc, then close", "4294967296:", true, "length 4294967296, limit 20", 11},
		{"4 GiB argv[0], then close", "1:1,4294967296:", true, "length 4294967296, limit 131072", 15},
		{"argc 0", "1:0,", false, "argc 0 out of range 1..4096", 4},
		{"argc -1", "2:-1,", false, `argc: "-1" is not a decimal number`, 5},
		{"argc non-numeric", "3:abc,5:uname,", false, `argc: "abc" is not a decimal number`, 6},
		{"argc 1e9", "3:1e9,5:uname,", false, `argc: "1e9" is not a decimal number`, 6},
		{"argc 1000000000", "10:1000000000,5:uname,", false, "argc 1000000000 out of range 1..4096", 14},
		{"argc 4097", "4:4097,", false, "argc 4097 out of range 1..4096", 7},
		{"argc with 21 digits", "21:" + strings.Repeat("9", 21) + ",", false, "length 21, limit 20", 3},
		{"empty argv[0]", "1:1,0:,", false, "argv[0] is empty", 7},
		{"empty argv[0] with arguments", "1:2,0:,2:-a,", false, "argv[0] is empty", 12},
		{"NUL in argv[1]", string(request([]string{"echo", "a\x00b"}, nil, true)), false, "argv[1] contains a NUL byte", 17},
		{"NUL in argv[0]", string(request([]string{"ec\x00ho"}, nil, true)), false, "argv[0] contains a NUL byte", 12},
		{"argument over 128 KiB", "1:1,131073:", false, "length 131073, limit 131072", 11},
		{"cut off inside argv[0]", "1:2,5:un", true, "reading argv[0] of 2: unexpected EOF", 8},
		{"cut off before argv[1]", "1:2,5:uname,", true, "reading argv[1] of 2: EOF", 12},
		{"cut off inside argv[1] length", "1:2,5:uname,2", true, "reading argv[1] of 2: unexpected EOF", 13},
		{"cut off before argv[1] comma", "1:2,5:uname,2:-a", true, "reading argv[1] of 2: unexpected EOF", 16},
		{"cut off inside argc", "1:", true, "reading argc: unexpected EOF", 2},
	}
	// argv over 1 MiB in all: nine arguments of 128 KiB.
	big := []string{"echo"}
	for range 8 {
		big = append(big, strings.Repeat("a", 128<<10))
	}
	bigReq := request(big, nil, false)
	tests = append(tests, struct {
		name    string
		send    string
		hangup  bool
		errText string
		bytes   int64
	}{"argv over 1 MiB", string(bigReq), false, "argv larger than 1048576 bytes", int64(len(bigReq))})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mark := tr.count(t)
			c := dial(t, ts.Socket)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte(tt.send)); err != nil {
				t.Fatal(err)
			}
			if tt.hangup {
				c.CloseWrite()
			}
			got, err := io.ReadAll(c)
			if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
				t.Fatalf("got %q, %v; want a plain close", got, err)
			}
			// The record is written before the connection is closed.
			rs := tr.since(t, mark)
			if len(rs) != 1 || rs[0].Action() != audit.ActionProtocolError {
				t.Fatalf("want one protocol.error record, got:\n%s", dumpRecs(rs))
			}
			r := rs[0]
			if msg := r.Str("error.message"); !strings.Contains(msg, tt.errText) {
				t.Errorf("error.message %q, want it to contain %q", msg, tt.errText)
			}
			if n := r.Num("sockwarden.protocol.bytes_read"); n != tt.bytes {
				t.Errorf("bytes_read %d, want %d", n, tt.bytes)
			}
			if r.Str("event.outcome") != "failure" || r.Str("client.user.id") != "0" ||
				r.Num("sockwarden.peer.pid") != int64(os.Getpid()) || r.RequestID() == "" {
				t.Errorf("record does not name the peer (uid 0, pid %d): %v", os.Getpid(), r)
			}
			ts.assertAlive(t)
		})
	}
}

// TestUnusualArgv sends well-formed requests whose argv is legal but
// unusual: the program gets exactly the bytes sent, and the decision
// record carries them as valid JSON.
func TestUnusualArgv(t *testing.T) {
	ts, tr := startAuditServer(t)
	t.Run("newline, tab, quote, control bytes, 2028", func(t *testing.T) {
		args := []string{"line1\nline2", "tab\there", `quo"te\back`, "\x01\x1b[31m\x7f", "sep\u2028par\u2029", "}}}\"hash\":\"x"}
		mark := tr.count(t)
		r := decodeReply(t, exchange(t, ts.Socket, request(append([]string{"printf", "%s|"}, args...), nil, true)))
		if want := strings.Join(args, "|") + "|"; r.Stdout.String() != want || r.Final[1] != "0" {
			t.Fatalf("program got %q (%v), want %q", r.Stdout.String(), r.Final, want)
		}
		d := withAction(tr.since(t, mark), audit.ActionDecision)
		if len(d) != 1 {
			t.Fatalf("%d decision records", len(d))
		}
		if got := d[0].Args(); !slicesEqual(got, append([]string{"printf", "%s|"}, args...)) {
			t.Errorf("process.args %q, want the argv byte for byte", got)
		}
		if d[0].Num("process.args_count") != int64(len(args)+2) {
			t.Errorf("args_count %d", d[0].Num("process.args_count"))
		}
		ts.assertAlive(t)
	})
	t.Run("non-UTF-8", func(t *testing.T) {
		args := []string{"\xff\xfe", "ok\xc3", "\xed\xa0\x80"} // invalid bytes, a cut sequence, a surrogate
		mark := tr.count(t)
		r := decodeReply(t, exchange(t, ts.Socket, request(append([]string{"printf", "%s|"}, args...), nil, true)))
		if want := strings.Join(args, "|") + "|"; r.Stdout.String() != want || r.Final[1] != "0" {
			t.Fatalf("program got %q (%v), want %q", r.Stdout.String(), r.Final, want)
		}
		rs := tr.since(t, mark)
		d := withAction(rs, audit.ActionDecision)
		if len(d) != 1 {
			t.Fatalf("%d decision records", len(d))
		}
		// The record is valid JSON (tr.all checked the schema, and JSON
		// cannot carry invalid UTF-8): each invalid byte is recorded as
		// U+FFFD, the rest exactly. That is lossy: "\xff" and "\xfe"
		// read the same in the trail (a limitation of the audit
		// encoder, see the README's security model).
		got := d[0].Args()
		for i, a := range args {
			if want := fffdEach(a); got[i+2] != want {
				t.Errorf("process.args[%d] = %q, want %q", i+2, got[i+2], want)
			}
		}
		if actionsOf(byID(rs)[d[0].RequestID()]) != "exec.decision exec.start exec.exit" {
			t.Errorf("records %s", actionsOf(byID(rs)[d[0].RequestID()]))
		}
		ts.assertAlive(t)
	})
	t.Run("relative program paths", func(t *testing.T) {
		for _, argv0 := range []string{"./echo", "../bin/echo", "bin/echo", "../../../../../../usr/bin/echo"} {
			mark := tr.count(t)
			got := exchange(t, ts.Socket, request([]string{argv0, "x"}, nil, true))
			want := pairs("stderr", "sockwarden: "+strconv.Quote(argv0)+": relative program paths are not allowed\n", "exitcode", "127")
			if !bytes.Equal(got, want) {
				t.Errorf("%s: got %q, want %q", argv0, got, want)
			}
			rs := tr.since(t, mark)
			g := byID(rs)
			if len(g) != 1 {
				t.Fatalf("%s: records:\n%s", argv0, dumpRecs(rs))
			}
			for _, recs := range g {
				if actionsOf(recs) != "exec.decision exec.start" {
					t.Fatalf("%s: records %q, want a decision and a failed start", argv0, actionsOf(recs))
				}
				if recs[0].Get("process.executable") != nil {
					t.Errorf("%s: decision names an executable: %v", argv0, recs[0])
				}
				st := recs[1]
				if st.Str("event.outcome") != "failure" || !strings.Contains(st.Str("error.message"), "relative program paths are not allowed") {
					t.Errorf("%s: start record %v", argv0, st)
				}
				// The identity it would have run as: the default policy's
				// dynamic uid, never given out, so no user is named.
				if os.Getuid() == 0 && (st.Get("user") != nil || st.Get("sockwarden.run_as.dynamic") != true) {
					t.Errorf("%s: start record names user %v, dynamic %v; want no user and a dynamic uid", argv0, st.Get("user"), st.Get("sockwarden.run_as.dynamic"))
				}
			}
			ts.assertAlive(t)
		}
	})
	t.Run("not in PATH", func(t *testing.T) {
		mark := tr.count(t)
		got := exchange(t, ts.Socket, request([]string{"no-such-program-xyz"}, nil, true))
		if want := pairs("stderr", "sockwarden: \"no-such-program-xyz\": command not found\n", "exitcode", "127"); !bytes.Equal(got, want) {
			t.Errorf("got %q", got)
		}
		rs := tr.since(t, mark)
		if actionsOf(rs) != "exec.decision exec.start" || rs[1].Str("event.outcome") != "failure" ||
			!strings.Contains(rs[1].Str("error.message"), "command not found") {
			t.Errorf("records:\n%s", dumpRecs(rs))
		}
		ts.assertAlive(t)
	})
}

// TestSlowloris: a client that sends one byte a second is cut off at the
// connection deadline (-t 2), audited, and costs nobody else anything.
func TestSlowloris(t *testing.T) {
	ts, tr := startAuditServer(t, "-t", "2", "-k", "1")
	t.Run("request", func(t *testing.T) {
		mark := tr.count(t)
		c := dial(t, ts.Socket)
		start := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			var b [64]byte
			n, _ := c.Read(b[:]) // returns when the server closes
			if n != 0 {
				t.Errorf("slowloris got a reply %q", b[:n])
			}
			closed <- time.Since(start)
		}()
		req := request([]string{"echo", "slow"}, nil, true)
		sent := 0
		var el time.Duration
	send:
		for _, b := range req {
			if _, err := c.Write([]byte{b}); err != nil {
				break
			}
			sent++
			ts.assertAlive(t) // others are served meanwhile
			select {
			case el = <-closed:
				break send
			case <-time.After(time.Second):
			}
		}
		if el == 0 {
			el = <-closed
		}
		if el < 1900*time.Millisecond || el > 4*time.Second {
			t.Errorf("connection closed after %v, want at the 2 s deadline", el)
		}
		rs := withAction(tr.waitFor(t, mark, 5*time.Second, "protocol.error", func(rs []rec) bool {
			return len(withAction(rs, audit.ActionProtocolError)) > 0
		}), audit.ActionProtocolError)
		if len(rs) != 1 || !strings.Contains(rs[0].Str("error.message"), "connection deadline passed before the request was complete") {
			t.Fatalf("records:\n%s", dumpRecs(rs))
		}
		if n := rs[0].Num("sockwarden.protocol.bytes_read"); n < 1 || n > int64(sent) {
			t.Errorf("bytes_read %d, sent %d", n, sent)
		}
		ts.assertAlive(t)
	})
	// Once the argv is complete the deadline kills the program instead:
	// the client gets the termsig, the trail the kill.
	t.Run("stdin", func(t *testing.T) {
		mark := tr.count(t)
		c := dial(t, ts.Socket)
		start := time.Now()
		c.Write(request([]string{"cat"}, nil, false))
		d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
		var out bytes.Buffer
		done := make(chan []string, 1)
		go func() {
			for {
				typ, data := readPair(t, d)
				if typ == "stdout" {
					out.WriteString(data)
					continue
				}
				done <- []string{typ, data}
				return
			}
		}()
		var final []string
		for i := 0; final == nil; i++ {
			c.Write(pairs(strconv.Itoa(i % 10)))
			select {
			case final = <-done:
			case <-time.After(time.Second):
			}
		}
		if el := time.Since(start); el < 1900*time.Millisecond || el > 4*time.Second {
			t.Errorf("final pair after %v, want at the 2 s deadline", el)
		}
		if final[0] != "termsig" || final[1] != "TERM" || out.Len() < 1 {
			t.Errorf("final %v after %q", final, out.String())
		}
		rs := tr.waitFor(t, mark, 5*time.Second, "exit", func(rs []rec) bool { return len(withAction(rs, audit.ActionExit)) > 0 })
		if got := actionsOf(rs); got != "exec.decision exec.start exec.kill exec.exit" {
			t.Fatalf("records %q", got)
		}
		if rs[2].Str("event.reason") != "timeout" || rs[3].Str("sockwarden.exit.signal") != "TERM" ||
			rs[3].Num("sockwarden.exit.bytes.stdout") != int64(out.Len()) || rs[3].Num("sockwarden.exit.bytes.stdin") < int64(out.Len()) {
			t.Errorf("records:\n%s", dumpRecs(rs))
		}
		ts.assertAlive(t)
	})
}

// TestIdleFlood opens 1000 connections at once that send nothing. With
// the default -m 100, everything over the limit is closed at once; the
// rest go at the deadline; the server serves again afterwards and holds
// nothing of them.
func TestIdleFlood(t *testing.T) {
	// One uid opens them all: the global limit alone, without the
	// caller quota (TestCallerQuota).
	ts, tr := startAuditServerExtra(t, noCallerQuota, "-t", "3")
	pid := ts.Cmd.Process.Pid
	ts.assertAlive(t)
	// The liveness connection lingers for a second after its reply.
	time.Sleep(1500 * time.Millisecond)
	fdsBefore := openFDs(pid)
	mark := tr.count(t)

	const n = 1000
	conns := make([]net.Conn, n)
	dialErrs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], dialErrs[i] = net.Dial("unix", ts.Socket)
		}()
	}
	wg.Wait()
	opened := time.Now()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	refusedByKernel := 0
	for _, err := range dialErrs {
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("dial: %v", err)
			}
			refusedByKernel++ // the listen backlog is full: the queue is bounded
		}
	}

	// Each connection either is closed by the server (EOF or reset) or
	// stays open until the deadline. Watch them all.
	closedAt := make([]time.Duration, n)
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(start.Add(10 * time.Second))
			var b [16]byte
			m, err := c.Read(b[:])
			if m != 0 {
				t.Errorf("idle connection got %q", b[:m])
			}
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("idle connection: %v", err)
			}
			closedAt[i] = time.Since(start)
		}()
	}
	// While the slots are taken by idle clients, a new client is turned
	// away at once: the limit is global, first come first served.
	time.Sleep(500 * time.Millisecond)
	c := dial(t, ts.Socket)
	c.Write(request([]string{"echo", "x"}, nil, true))
	if got, _ := io.ReadAll(c); len(got) != 0 {
		t.Errorf("a request was served while idle clients held every slot: %q", got)
	}
	wg.Wait()

	early, atDeadline := 0, 0
	for i, d := range closedAt {
		if conns[i] == nil {
			continue
		}
		switch {
		case d < opened.Sub(start)+time.Second:
			early++
		case d > 2900*time.Millisecond && d < 5*time.Second:
			atDeadline++
		default:
			t.Errorf("connection %d closed after %v: neither at once nor at the deadline", i, d)
		}
	}
	t.Logf("%d connected (%d refused by the kernel, backlog full), %d closed at once, %d at the 3 s deadline",
		n-refusedByKernel, refusedByKernel, early, atDeadline)
	if atDeadline != 100 {
		t.Errorf("%d connections held until the deadline, want the 100 of -m", atDeadline)
	}
	if early+atDeadline+refusedByKernel != n {
		t.Errorf("%d + %d + %d != %d", early, atDeadline, refusedByKernel, n)
	}
	// The held ones are audited as requests cut off by the deadline.
	rs := tr.waitFor(t, mark, 5*time.Second, "protocol errors", func(rs []rec) bool {
		return len(withAction(rs, audit.ActionProtocolError)) >= atDeadline
	})
	for _, r := range withAction(rs, audit.ActionProtocolError) {
		if !strings.Contains(r.Str("error.message"), "connection deadline passed") || r.Num("sockwarden.protocol.bytes_read") != 0 {
			t.Errorf("record %v", r)
		}
	}
	if n := len(withAction(rs, audit.ActionProtocolError)); n != atDeadline {
		t.Errorf("%d protocol.error records for %d connections cut off", n, atDeadline)
	}
	if !ts.logHas("connection limit reached") {
		t.Error("rejections not logged")
	}
	ts.assertAlive(t)
	waitFDs(t, pid, fdsBefore)
}

// waitFDs waits for pid's descriptor count to be back to at most want.
func waitFDs(t testing.TB, pid, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := openFDs(pid)
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server holds %d descriptors, %d before", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLateStdin: stdin sent after the program exited (even a lot of it)
// is read and discarded; the client reads the complete reply and a clean
// end of stream, and nothing but the request's own records is written.
func TestLateStdin(t *testing.T) {
	ts, tr := startAuditServer(t)
	for _, size := range []int{0, 5, 256 << 10} {
		mark := tr.count(t)
		c := dial(t, ts.Socket)
		c.Write(request([]string{"sh", "-c", "echo bye"}, nil, false))
		d := netstring.NewDecoder(bufio.NewReader(c), 1<<20)
		if typ, data := readPair(t, d); typ != "stdout" || data != "bye\n" {
			t.Fatalf("got %q %q", typ, data)
		}
		if typ, data := readPair(t, d); typ != "exitcode" || data != "0" {
			t.Fatalf("got %q %q", typ, data)
		}
		late := netstring.Append(nil, bytes.Repeat([]byte("L"), size))
		late = append(late, "0:,"...)
		if _, err := c.Write(late); err != nil {
			t.Fatalf("late write of %d bytes: %v", size, err)
		}
		if _, err := d.Decode(nil); err != io.EOF {
			t.Fatalf("after the final pair and %d late bytes: %v, want a clean EOF", size, err)
		}
		c.Close()
		rs := tr.since(t, mark)
		if got := actionsOf(rs); got != "exec.decision exec.start exec.exit" {
			t.Fatalf("records %q", got)
		}
		if rs[2].Num("process.exit_code") != 0 || rs[2].Num("sockwarden.exit.bytes.stdout") != 4 {
			t.Errorf("exit %v", rs[2])
		}
	}
	ts.assertAlive(t)
}

// TestCloseWhileOutputFlows: a client that hangs up while the program
// writes as fast as it can gets the program killed (disconnect), and the
// server goes on.
func TestCloseWhileOutputFlows(t *testing.T) {
	ts, tr := startAuditServer(t, "-k", "1")
	for _, halfClose := range []bool{false, true} {
		mark := tr.count(t)
		c, d, line := startHeld(t, ts.Socket, []string{"sh", "-c", "echo $$; exec yes flowing"})
		pid := pidsOf(t, line)[0]
		// Some output flows, then the client goes.
		for range 20 {
			if typ, _ := readPair(t, d); typ != "stdout" {
				t.Fatalf("got %q", typ)
			}
		}
		if halfClose {
			c.CloseWrite()
		} else {
			c.Close()
		}
		waitGone(t, 3*time.Second, pid)
		rs := tr.waitFor(t, mark, 5*time.Second, "exit", func(rs []rec) bool { return len(withAction(rs, audit.ActionExit)) > 0 })
		if got := actionsOf(rs); got != "exec.decision exec.start exec.kill exec.exit" {
			t.Fatalf("records %q", got)
		}
		if rs[2].Str("event.reason") != "disconnect" || rs[2].Str("sockwarden.kill.signal") != "TERM" {
			t.Errorf("kill %v", rs[2])
		}
		if sig := rs[3].Str("sockwarden.exit.signal"); sig != "TERM" && sig != "PIPE" {
			t.Errorf("exit %v", rs[3])
		}
		if rs[3].Num("sockwarden.exit.bytes.stdout") < 20 {
			t.Errorf("exit %v", rs[3])
		}
		c.Close()
		ts.assertAlive(t)
	}
}

// fffdEach is s with each byte that is not part of valid UTF-8 replaced
// by U+FFFD, as the audit encoder (and encoding/json) writes it.
func fffdEach(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// TestHugeDeclaredStdin: a stdin netstring that declares 4 GiB and then
// stops after 1 MiB. The server streams what comes (it never allocates
// the declared length), and when the client hangs up the program is
// killed as for any disconnect.
func TestHugeDeclaredStdin(t *testing.T) {
	ts, tr := startAuditServer(t, "-k", "1")
	ts.assertAlive(t)
	pid := ts.Cmd.Process.Pid
	rssBefore := procStatus(pid, "VmRSS")
	mark := tr.count(t)
	c := dial(t, ts.Socket)
	req := request([]string{"sh", "-c", "cat >/dev/null"}, nil, false)
	req = append(req, "4294967296:"...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("z"), 64<<10)
	for range 16 {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	tr.waitFor(t, mark, 5*time.Second, "start", func(rs []rec) bool { return len(withAction(rs, audit.ActionStart)) > 0 })
	if grown := procStatus(pid, "VmRSS") - rssBefore; grown > 4<<10 {
		t.Errorf("server RSS grew by %d KiB for a 4 GiB declared length", grown)
	}
	c.Close()
	rs := tr.waitFor(t, mark, 5*time.Second, "exit", func(rs []rec) bool { return len(withAction(rs, audit.ActionExit)) > 0 })
	if got := actionsOf(rs); got != "exec.decision exec.start exec.kill exec.exit" {
		t.Fatalf("records %q", got)
	}
	if rs[2].Str("event.reason") != "disconnect" || rs[3].Num("sockwarden.exit.bytes.stdin") != 1<<20 {
		t.Errorf("records:\n%s", dumpRecs(rs))
	}
	ts.assertAlive(t)
}
