package server

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// A connection gives its slot back when its reply is complete, not when
// its client gets round to closing: a client that keeps the connection
// open after the reply (or a server too busy to notice the close at
// once) must not turn the next client away.
func TestSlotFreedAtReply(t *testing.T) {
	_, sock := startServer(t, Config{MaxConns: 1, Linger: 5 * time.Second})
	for i := range 3 {
		// Client A: a whole request and its reply; it stays connected.
		a, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.SetDeadline(time.Now().Add(10 * time.Second))
		a.Write(encode("1", "true", ""))
		got, err := io.ReadAll(a) // up to the server's half-close
		if err != nil || !bytes.Equal(got, encode("exitcode", "0")) {
			t.Fatalf("client A: %q, %v", got, err)
		}
		// Client B, at once, with A still lingering: served, clean end.
		got = roundTrip(t, sock, encode("2", "echo", "b", ""))
		if want := encode("stdout", "b\n", "exitcode", "0"); !bytes.Equal(got, want) {
			t.Fatalf("round %d: client B got %q while A lingered, want %q", i, got, want)
		}
	}
}
