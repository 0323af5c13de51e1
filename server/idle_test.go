package server

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/policy"
)

// The poller calls a registration back once per arming, and never after
// remove has returned.
func TestPollerOneShot(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	raw, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fired := make(chan struct{}, 10)
	reg, err := p.register(raw, unix.EPOLLIN, func(*pollReg) { fired <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	wait := func(want bool) {
		t.Helper()
		select {
		case <-fired:
			if !want {
				t.Fatal("called back while not armed")
			}
		case <-time.After(200 * time.Millisecond):
			if want {
				t.Fatal("not called back")
			}
		}
	}
	wait(false) // nothing to read yet
	w.Write([]byte("x"))
	wait(true)
	wait(false) // one-shot: still readable, but not armed
	if err := reg.arm(); err != nil {
		t.Fatal(err)
	}
	wait(true) // still readable: reported again at once
	reg.remove()
	if err := reg.arm(); err == nil {
		t.Fatal("a removed registration was armed again")
	}
	wait(false) // removed: no callback, though the pipe is still readable

	// remove leaves the descriptor to close: a new file under the same
	// number registers afresh and reports to its own callback only.
	oldFD := r.Fd()
	r.Close()
	w.Close()
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	defer w2.Close()
	if r2.Fd() != oldFD && w2.Fd() != oldFD {
		t.Logf("descriptor %d not reused (%d, %d)", oldFD, r2.Fd(), w2.Fd())
	}
	raw2, err := r2.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fired2 := make(chan struct{}, 10)
	if _, err := p.register(raw2, unix.EPOLLIN, func(*pollReg) { fired2 <- struct{}{} }); err != nil {
		t.Fatalf("registering a new file under a removed one's number: %v", err)
	}
	w2.Write([]byte("y"))
	select {
	case <-fired2:
	case <-time.After(2 * time.Second):
		t.Fatal("the new registration was not called back")
	}
	wait(false) // the removed one stays silent
}

// A held connection whose program runs quietly costs no goroutine: the
// pumps and the wait for the exit are parked with the poller. Closing the
// connection still kills the program.
func TestHeldConnectionsParked(t *testing.T) {
	s, sock := startServer(t, Config{KillTimeout: time.Second})
	const n = 40
	base := runtime.NumGoroutine()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write(encode("2", "sleep", "30", ""))
	}
	var pids []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pids = pids[:0]
		for _, ci := range s.Conns() {
			if ci.ChildPid != 0 {
				pids = append(pids, ci.ChildPid)
			}
		}
		if len(pids) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d programs started", len(pids), n)
		}
	}
	// Parking happens once each pump has found nothing to do.
	var g int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if g = runtime.NumGoroutine() - base; g < n/4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for %d held connections, want next to none", g, n)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	for _, pid := range pids {
		for start := time.Now(); !childGone(pid); time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("child %d still running after its client hung up", pid)
			}
		}
	}
}

// Output and stdin resume after their pumps parked: a pause longer than
// the output grace, then more output; stdin sent after the program has
// been waiting for it.
func TestPumpsResumeAfterParking(t *testing.T) {
	_, sock := startServer(t, Config{})
	got := roundTrip(t, sock, encode("3", "sh", "-c", "echo a; sleep 0.3; echo b; sleep 0.3; echo c >&2; sleep 0.3; echo d", ""))
	want := encode("stdout", "a\n", "stdout", "b\n", "stderr", "c\n", "stdout", "d\n", "exitcode", "0")
	if !bytes.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(encode("1", "cat"))
	for _, chunk := range []string{"one ", "two ", "three"} {
		time.Sleep(300 * time.Millisecond)
		c.Write(encode(chunk))
	}
	c.Write([]byte("0:,"))
	var out bytes.Buffer
	if _, err := io.Copy(&out, c); err != nil {
		t.Fatal(err)
	}
	// cat may forward the chunks in fewer reads; compare the data.
	var data []byte
	rest := out.Bytes()
	for len(rest) > 0 {
		typ, r1, ok := cutNetstring(rest)
		val, r2, ok2 := cutNetstring(r1)
		if !ok || !ok2 {
			t.Fatalf("malformed reply %q", out.Bytes())
		}
		if string(typ) == "stdout" {
			data = append(data, val...)
		}
		rest = r2
	}
	if string(data) != "one two three" || !bytes.HasSuffix(out.Bytes(), encode("exitcode", "0")) {
		t.Errorf("reply %q", out.Bytes())
	}
}

func cutNetstring(b []byte) (val, rest []byte, ok bool) {
	i := bytes.IndexByte(b, ':')
	if i < 0 {
		return nil, nil, false
	}
	n := 0
	for _, d := range b[:i] {
		n = n*10 + int(d-'0')
	}
	if len(b) < i+1+n+1 || b[i+1+n] != ',' {
		return nil, nil, false
	}
	return b[i+1 : i+1+n], b[i+1+n+1:], true
}

// blockingAuth blocks every judgement until want of them are in
// progress at once.
type blockingAuth struct {
	want    int32
	n       atomic.Int32
	all     chan struct{}
	release sync.Once
}

func (a *blockingAuth) Authorize(ctx context.Context, req *Request) (*policy.Decision, error) {
	if a.n.Add(1) == a.want {
		a.release.Do(func() { close(a.all) })
	}
	select {
	case <-a.all:
		return &policy.Decision{Allow: true}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Judgements are never queued behind one another: with more requests in
// judgement than there are judges, all proceed at once.
func TestJudgementsNotQueued(t *testing.T) {
	want := newJudgePool().max + 3
	a := &blockingAuth{want: want, all: make(chan struct{})}
	_, sock := startServer(t, Config{Authorizer: a, MaxConns: int(want) + 1, MaxConnsPerUID: -1}) // one uid
	var wg sync.WaitGroup
	for range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(encode("1", "true", ""))
			if got, err := io.ReadAll(c); err != nil || !bytes.Equal(got, encode("exitcode", "0")) {
				t.Errorf("got %q, %v", got, err)
			}
		}()
	}
	wg.Wait()
}
