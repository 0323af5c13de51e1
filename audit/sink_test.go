package audit_test

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/audit/audittest"
)

func TestFileSinkModeAndAppend(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")

	now := clock()
	for run := 1; run <= 2; run++ {
		fs, err := audit.OpenFile(path, audit.FileOptions{Sync: audit.SyncEvery})
		if err != nil {
			t.Fatal(err)
		}
		l := newLoggerClock(t, fs, now)
		must(t, l.ServerStart(sampleServerStart))
		must(t, l.Decision(sampleDecision))
		must(t, l.ServerStop(sampleServerStop))
		must(t, l.Close())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if n := len(splitLines(string(data))); n != 6 {
		t.Fatalf("%d lines after two runs, want 6 (appended)", n)
	}
	rep := verifyOK(t, path)
	if rep.Runs != 2 || rep.Records != 6 || !rep.Anchored {
		t.Errorf("report %+v", rep)
	}

	// An existing file keeps the mode logrotate gave it.
	must(t, os.Chmod(path, 0o640))
	fs, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fs.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("existing file's mode changed to %v", st.Mode().Perm())
	}
}

// TestRotation renames the file as logrotate does, reopens, and checks
// that the records go to the new file and the chain spans both.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	rotated := path + ".1"
	fs, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	must(t, l.ServerStart(sampleServerStart))
	must(t, l.Decision(sampleDecision))

	must(t, os.Rename(path, rotated))
	must(t, l.Start(sampleStart)) // still goes to the renamed file until SIGHUP
	must(t, l.Reopen())
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600&^currentUmask() {
		t.Fatalf("new file: %v %v", st, err)
	}
	must(t, l.Exit(sampleExit))
	must(t, l.ServerStop(sampleServerStop))
	must(t, l.Close())

	oldLines := readLines(t, rotated)
	newLines := readLines(t, path)
	if len(oldLines) != 3 || len(newLines) != 2 {
		t.Fatalf("%d lines in rotated file, %d in new; want 3 and 2", len(oldLines), len(newLines))
	}
	rep := verifyOK(t, rotated, path)
	if rep.Records != 5 || rep.Files != 2 || rep.Runs != 1 || rep.LastSeq != 5 {
		t.Errorf("report %+v", rep)
	}
	// The new file alone verifies too, as a chain that starts mid-run.
	rep = verifyOK(t, path)
	if rep.Anchored || rep.FirstSeq != 4 {
		t.Errorf("new file alone: %+v", rep)
	}
	// In the wrong order they do not.
	if rep, _ := audit.VerifyFiles(path, rotated); rep.Problem == nil {
		t.Error("files in the wrong order verified")
	}
}

func currentUmask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitLines(string(data))
}

// TestFileRemoved: a removed audit file is recreated on the next write,
// so no record goes to an unlinked inode.
func TestFileRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	fs, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	defer l.Close()
	must(t, l.ServerStart(sampleServerStart))
	must(t, os.Remove(path))
	must(t, l.Decision(sampleDecision))
	lines := readLines(t, path)
	if len(lines) != 1 || !strings.Contains(lines[0], `"seq":2,`) {
		t.Fatalf("recreated file has %q", lines)
	}
	if rep := verifyOK(t, path); rep.Anchored {
		t.Error("a file that lost its start verified as anchored")
	}

	// If the directory is gone too, writing fails closed.
	must(t, os.Remove(path))
	must(t, os.Remove(dir))
	if err := l.Exit(sampleExit); err == nil || l.Healthy() == nil {
		t.Fatalf("write with the directory gone: %v, health %v", err, l.Healthy())
	}
	if err := l.Probe(); err == nil {
		t.Fatal("Probe succeeded with the directory gone")
	}
	must(t, os.Mkdir(dir, 0o700))
	if err := l.Probe(); err != nil {
		t.Fatalf("Probe after the directory came back: %v", err)
	}
	must(t, l.Exit(sampleExit))
	if lines := readLines(t, path); len(lines) != 1 || !strings.Contains(lines[0], `"seq":3,`) {
		t.Fatalf("after recovery: %q", lines)
	}
}

func TestSyncInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	fs, err := audit.OpenFile(path, audit.FileOptions{Sync: audit.SyncInterval, Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	for range 20 {
		must(t, l.Exit(sampleExit))
		time.Sleep(100 * time.Microsecond)
	}
	must(t, l.Close())
	verifyOK(t, path)
}

func TestParseSyncPolicy(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want audit.SyncPolicy
		err  bool
	}{
		{"", audit.SyncNone, false}, {"none", audit.SyncNone, false}, {"every", audit.SyncEvery, false},
		{"interval", audit.SyncInterval, false}, {"always", 0, true},
	} {
		got, err := audit.ParseSyncPolicy(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseSyncPolicy(%q) = %v, %v", tt.in, got, err)
		}
		if err == nil && tt.in != "" && got.String() != tt.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

// shortWriter accepts n bytes, then fails.
type shortWriter struct {
	buf bytes.Buffer
	n   int
}

func (w *shortWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		w.buf.Write(p)
		return len(p), nil
	}
	k := min(w.n, len(p))
	w.buf.Write(p[:k])
	w.n = 0
	return k, errors.New("pipe broke")
}

// TestWriterSinkPartial: on a stream a partial record cannot be taken
// back, so the next record starts on a new line.
func TestWriterSinkPartial(t *testing.T) {
	w := &shortWriter{}
	l := newLogger(t, audit.NewWriterSink(w))
	must(t, l.ServerStart(sampleServerStart))
	w.n = 10
	if err := l.Decision(sampleDecision); err == nil {
		t.Fatal("no error from a failing writer")
	}
	must(t, l.Decision(sampleDecision))
	lines := splitLines(w.buf.String())
	if len(lines) != 3 || len(lines[1]) != 10 {
		t.Fatalf("lines: %q", lines)
	}
	audittest.Validate(t, []byte(lines[2]))
	// The verifier reports the fragment.
	p := writeLog(t, t.TempDir(), "out.log", lines)
	rep, err := audit.VerifyFiles(p)
	if err != nil || rep.Problem == nil || rep.Problem.Kind != audit.Malformed || rep.Problem.Line != 2 {
		t.Fatalf("report %+v %v", rep.Problem, err)
	}
}

// rfc5424 matches the header the syslog sink writes.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) (\S+) (\d+) (\S+) - (\{.*\})$`)

func TestSyslogDatagram(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "log")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ss, err := audit.DialSyslog(audit.SyslogOptions{Path: sock, Hostname: "web 1", Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, ss)
	defer l.Close()
	must(t, l.ServerStart(sampleServerStart))
	must(t, l.Decision(sampleDeny))

	want := []struct {
		pri, msgid string
	}{{"86", "server.start"}, {"84", "exec.decision"}} // authpriv.info, authpriv.warning
	buf := make([]byte, 64<<10)
	var records []string
	for i, w := range want {
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		msg := string(buf[:n])
		m := rfc5424.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("message %d is not RFC 5424: %q", i, msg)
		}
		if m[1] != w.pri || m[2] != "2026-11-21T10:00:00.123456Z" || m[3] != "web1" || m[4] != "sockwarden" ||
			m[5] != strconv.Itoa(os.Getpid()) || m[6] != w.msgid {
			t.Errorf("header %q", m[1:7])
		}
		audittest.Validate(t, []byte(m[7]))
		records = append(records, m[7])
	}
	// The records inside the messages still verify as a chain.
	verifyOK(t, writeLog(t, dir, "from-syslog.log", records))
}

// TestSyslogStream: with only a stream socket, messages are framed by
// newlines; when the daemon restarts, the sink reconnects.
func TestSyslogStream(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "log")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	var conns []net.Conn
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					mu.Lock()
					got = append(got, sc.Text())
					mu.Unlock()
				}
			}()
		}
	}
	go serve(ln)
	ss, err := audit.DialSyslog(audit.SyslogOptions{Path: sock, Facility: audit.FacilityLocal0})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, ss)
	defer l.Close()
	must(t, l.ServerStart(sampleServerStart))
	must(t, l.Exit(sampleExit))
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })

	// The daemon goes away: writing fails closed.
	ln.Close()
	os.Remove(sock)
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	var failed bool
	for range 20 { // the first write after the peer left may still be buffered
		if err := l.Kill(sampleKill); err != nil {
			failed = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !failed || l.Healthy() == nil {
		t.Fatal("writes kept succeeding with syslog down")
	}
	if err := l.Probe(); err == nil {
		t.Fatal("Probe succeeded with syslog down")
	}
	// It comes back.
	ln2, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go serve(ln2)
	if err := l.Probe(); err != nil {
		t.Fatalf("Probe with syslog back: %v", err)
	}
	must(t, l.ServerStop(sampleServerStop))
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && strings.Contains(got[len(got)-1], "server.stop")
	})
	mu.Lock()
	defer mu.Unlock()
	var records []string
	for _, msg := range got {
		m := rfc5424.FindStringSubmatch(msg)
		if m == nil {
			t.Fatalf("not RFC 5424: %q", msg)
		}
		if !strings.HasPrefix(msg, "<13") { // local0 (16*8) + info/warning
			t.Errorf("priority in %q", msg[:6])
		}
		records = append(records, m[7])
	}
	// Records sent into the dying connection may be lost with it (a
	// stream sink cannot know), but what arrived is a valid chain prefix
	// plus the records after recovery, which link to the last record the
	// Logger believes written.
	if len(records) < 3 {
		t.Fatalf("records: %q", records)
	}
	verifyOK(t, writeLog(t, dir, "first.log", records[:2]))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSyslogRFC3164 checks the journald-friendly local format.
func TestSyslogRFC3164(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ss, err := audit.DialSyslog(audit.SyslogOptions{Path: sock, RFC3164: true, Facility: audit.FacilityAuth,
		Now: func() time.Time { return time.Date(2026, 11, 1, 9, 5, 7, 0, time.Local) }})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, ss)
	defer l.Close()
	must(t, l.Exit(sampleExit))
	buf := make([]byte, 64<<10)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := pc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "<38>Nov  1 09:05:07 sockwarden[" + strconv.Itoa(os.Getpid()) + "]: {"
	msg := string(buf[:n])
	if !strings.HasPrefix(msg, prefix) {
		t.Fatalf("message %q, want prefix %q", msg, prefix)
	}
	audittest.Validate(t, []byte(msg[len(prefix)-1:]))
}

func TestSyslogDialFails(t *testing.T) {
	if _, err := audit.DialSyslog(audit.SyslogOptions{Path: filepath.Join(t.TempDir(), "nope")}); err == nil {
		t.Fatal("dial to a missing socket succeeded")
	}
}
