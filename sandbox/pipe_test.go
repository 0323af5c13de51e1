package sandbox

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestPipe returns a Pipe on the read end of a new non-blocking pipe,
// and the write end.
func newTestPipe(t *testing.T) (*Pipe, *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "w")
	t.Cleanup(func() { w.Close() })
	return newPipe(p[0], "|test"), w
}

// fdOpen reports whether fd is an open descriptor.
func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// A Pipe is usable through its descriptor (Control) without its file
// being made, and Close then closes the descriptor itself; once read, it
// has its file; after Close, every method says so and none touches the
// descriptor number (which another file may have by then).
func TestPipe(t *testing.T) {
	tests := []struct {
		name string
		use  func(t *testing.T, p *Pipe, w *os.File)
		file bool // the use makes the file
	}{
		{"control only", func(t *testing.T, p *Pipe, w *os.File) {
			w.Write([]byte("hi"))
			var n int
			var rerr error
			if err := p.Control(func(fd uintptr) { n, rerr = unix.Read(int(fd), make([]byte, 8)) }); err != nil {
				t.Fatal(err)
			}
			if n != 2 || rerr != nil {
				t.Fatalf("raw read: %d, %v", n, rerr)
			}
		}, false},
		{"read", func(t *testing.T, p *Pipe, w *os.File) {
			w.Write([]byte("hi"))
			b := make([]byte, 8)
			if n, err := p.Read(b); n != 2 || err != nil {
				t.Fatalf("read: %d, %v", n, err)
			}
			// Control goes through the file now.
			if err := p.Control(func(uintptr) {}); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, w := newTestPipe(t)
			fd := p.fd
			tt.use(t, p, w)
			if got := p.f != nil; got != tt.file {
				t.Errorf("file made: %v, want %v", got, tt.file)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if fdOpen(fd) {
				t.Errorf("descriptor %d still open after Close", fd)
			}
			called := false
			if err := p.Control(func(uintptr) { called = true }); !errors.Is(err, os.ErrClosed) || called {
				t.Errorf("Control after Close: %v (fn called: %v)", err, called)
			}
			if _, err := p.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read after Close: %v", err)
			}
			if err := p.SetReadDeadline(time.Time{}); !errors.Is(err, os.ErrClosed) {
				t.Errorf("SetReadDeadline after Close: %v", err)
			}
			if err := p.Close(); !errors.Is(err, os.ErrClosed) {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// Close ends a read blocked in the pipe's file, as os.File's does.
func TestPipeCloseEndsRead(t *testing.T) {
	p, _ := newTestPipe(t)
	done := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // the read blocks (nothing written)
	p.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) && err != io.EOF {
			t.Errorf("blocked read ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the blocked read")
	}
}
