package kaudit

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestReaderClose: Listen joins the read-log group, and Close ends a
// Read that waits for a record (the reader's goroutine does not leak).
func TestReaderClose(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_AUDIT_READ)")
	}
	if _, err := GetStatus(); err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	r, err := Listen(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r.Read(); err != nil && !errors.Is(err, ErrOverrun) && !errors.Is(err, ErrMalformed) {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the Read")
	}
}
