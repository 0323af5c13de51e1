package audit_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/sockwarden/sockwarden/audit"
)

// TestConcurrentSeq logs from many goroutines and checks that seq is
// gap-free and in file order, and that the chain verifies.
func TestConcurrentSeq(t *testing.T) {
	const goroutines, each = 16, 250
	path := filepath.Join(t.TempDir(), "audit.log")
	fs, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	if err := l.ServerStart(sampleServerStart); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				var err error
				id := fmt.Sprintf("g%d-%d", g, i)
				switch i % 4 {
				case 0:
					d := sampleDecision
					d.RequestID = id
					err = l.Decision(d)
				case 1:
					s := sampleStart
					s.RequestID = id
					err = l.Start(s)
				case 2:
					e := sampleExit
					e.RequestID = id
					err = l.Exit(e)
				case 3:
					k := sampleKill
					k.RequestID = id
					err = l.Kill(k)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := splitLines(string(data))
	if want := goroutines*each + 1; len(lines) != want {
		t.Fatalf("%d lines, want %d", len(lines), want)
	}
	for i, line := range lines {
		var rec struct{ Seq uint64 }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Seq != uint64(i+1) {
			t.Fatalf("line %d has seq %d", i+1, rec.Seq)
		}
	}
	rep := verifyOK(t, path)
	if rep.Records != len(lines) || !rep.Anchored || rep.Runs != 1 || rep.LastSeq != uint64(len(lines)) {
		t.Errorf("report %+v", rep)
	}
	if seq, hash := l.Last(); seq != rep.LastSeq || hash != rep.LastHash {
		t.Errorf("Last() = %d %s, report %d %s", seq, hash, rep.LastSeq, rep.LastHash)
	}
}

// TestFailureKeepsChain: a failed write returns an error, makes the
// Logger unhealthy, consumes no seq; the next successful write heals it
// and the log verifies.
func TestFailureKeepsChain(t *testing.T) {
	var m memSink
	var healthMu sync.Mutex
	var changes []error
	l := audit.New(schemaSink{&m, t}, audit.Options{Host: "h", Now: clock(), OnHealthChange: func(err error) {
		healthMu.Lock()
		changes = append(changes, err)
		healthMu.Unlock()
	}})
	must(t, l.ServerStart(sampleServerStart))
	must(t, l.Decision(sampleDecision))
	seq, hash := l.Last()

	m.setFail(syscall.ENOSPC)
	err := l.Start(sampleStart)
	var we *audit.WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.ENOSPC) || we.Seq != 3 || we.Action != audit.ActionStart {
		t.Fatalf("Start error = %#v", err)
	}
	if h := l.Healthy(); !errors.Is(h, syscall.ENOSPC) {
		t.Fatalf("Healthy() = %v", h)
	}
	if err := l.Exit(sampleExit); err == nil {
		t.Fatal("second write succeeded on a failing sink")
	}
	if s, h := l.Last(); s != seq || h != hash {
		t.Fatalf("failed writes moved the chain: %d %s", s, h)
	}
	// memSink has no probe: Probe cannot clear the state.
	if err := l.Probe(); err == nil {
		t.Fatal("Probe cleared the state of a sink that cannot be probed")
	}

	m.setFail(nil)
	must(t, l.Exit(sampleExit))
	if h := l.Healthy(); h != nil {
		t.Fatalf("Healthy() = %v after a successful write", h)
	}
	if s, _ := l.Last(); s != 3 {
		t.Fatalf("seq after recovery = %d, want 3", s)
	}
	p := writeLog(t, t.TempDir(), "a.log", m.lines())
	verifyOK(t, p)

	healthMu.Lock()
	defer healthMu.Unlock()
	if len(changes) != 2 || changes[0] == nil || changes[1] != nil {
		t.Errorf("health changes = %v, want [err nil]", changes)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDevFull: a file sink on /dev/full fails closed.
func TestDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	fs, err := audit.OpenFile("/dev/full", audit.FileOptions{Sync: audit.SyncEvery})
	if err != nil {
		t.Skip(err)
	}
	l := newLogger(t, fs)
	err = l.Decision(sampleDecision)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Decision on /dev/full: %v", err)
	}
	if !errors.Is(l.Healthy(), syscall.ENOSPC) {
		t.Fatalf("Healthy() = %v", l.Healthy())
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := l.Decision(sampleDecision); !errors.Is(err, audit.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// mountTmpfs mounts a small tmpfs at a temporary directory, or skips.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return dir
}

// fill writes zeros to path until the file system is full, and returns
// how much it wrote.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return n
		}
	}
}

// TestDiskFull fills a real file system mid-run: writes fail with
// ENOSPC, partial records are rolled back, the Logger is unhealthy; once
// space returns, Probe and writes recover and the file verifies with a
// gap-free seq.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "64k")
	path := filepath.Join(dir, "audit.log")
	fs, err := audit.OpenFile(path, audit.FileOptions{Sync: audit.SyncEvery, MinFree: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	t.Cleanup(func() { l.Close() }) // before the umount
	must(t, l.ServerStart(sampleServerStart))
	must(t, l.Decision(sampleDecision))

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// Free less than a record, so the next write is partial: tmpfs
	// accepts bytes up to the end of the last page.
	sizeBefore := fileSize(t, path)
	var failures int
	for i := 0; i < 50; i++ {
		err := l.Exit(sampleExit)
		if err == nil {
			continue // the file's last page still had room
		}
		failures++
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("error %v, want ENOSPC", err)
		}
		break
	}
	if failures == 0 {
		t.Fatal("no write failed on a full file system")
	}
	if l.Healthy() == nil {
		t.Fatal("healthy after a failed write")
	}
	if err := l.Probe(); err == nil {
		t.Fatal("Probe succeeded on a full file system")
	}
	data, _ := os.ReadFile(path)
	if len(data) == 0 || data[len(data)-1] != '\n' {
		t.Fatalf("file ends in a partial record (size %d, was %d)", len(data), sizeBefore)
	}
	verifyOK(t, path)

	// Space returns.
	must(t, os.Remove(filler))
	if err := l.Probe(); err != nil {
		t.Fatalf("Probe after freeing space: %v", err)
	}
	if l.Healthy() != nil {
		t.Fatal("still unhealthy after a successful probe")
	}
	must(t, l.Kill(sampleKill))
	must(t, l.Exit(sampleSignalExit))
	must(t, l.ServerStop(sampleServerStop))
	must(t, l.Sync())
	rep := verifyOK(t, path)
	if !rep.Anchored || rep.Records != int(rep.LastSeq) {
		t.Errorf("report %+v", rep)
	}
}

// TestPartialWriteRollback makes the free space smaller than one record
// but larger than zero, so write(2) stores part of the record: the part
// must not stay in the file.
func TestPartialWriteRollback(t *testing.T) {
	dir := mountTmpfs(t, "64k")
	path := filepath.Join(dir, "audit.log")
	fs, err := audit.OpenFile(path, audit.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLogger(t, fs)
	t.Cleanup(func() { l.Close() }) // before the umount
	must(t, l.ServerStart(sampleServerStart))
	fill(t, filepath.Join(dir, "filler"))
	// Whatever fits in the file's last page is written; keep logging
	// until a write is cut short.
	var err2 error
	for i := 0; i < 100 && err2 == nil; i++ {
		err2 = l.Exit(sampleExit)
	}
	if err2 == nil {
		t.Fatal("never ran out of space")
	}
	data, _ := os.ReadFile(path)
	if data[len(data)-1] != '\n' {
		t.Fatalf("partial record left in the file: ...%q", data[max(0, len(data)-80):])
	}
	verifyOK(t, path)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestClosed(t *testing.T) {
	var m memSink
	l := newLogger(t, &m)
	must(t, l.Close())
	for name, err := range map[string]error{
		"Close": l.Close(), "Reopen": l.Reopen(), "Sync": l.Sync(),
		"Kill": l.Kill(sampleKill), "ServerStop": l.ServerStop(sampleServerStop),
	} {
		if !errors.Is(err, audit.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

// TestTimestampOrder: records are timestamped under the lock, so time
// never goes backwards along seq.
func TestTimestampOrder(t *testing.T) {
	var m memSink
	l := audit.New(schemaSink{&m, t}, audit.Options{Host: "h"})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				l.Exit(sampleExit)
			}
		})
	}
	wg.Wait()
	var last string
	for _, line := range m.lines() {
		var rec struct {
			TS string `json:"@timestamp"`
		}
		json.Unmarshal([]byte(line), &rec)
		if rec.TS < last {
			t.Fatalf("timestamp %s after %s", rec.TS, last)
		}
		last = rec.TS
	}
}
