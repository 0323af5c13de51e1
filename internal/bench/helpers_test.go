package bench

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/internal/testutil"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/server"
)

func shortDir(t testing.TB) string { return testutil.ShortDir(t) }

// startServer serves the sockexec protocol in-process with the real
// server package and returns the socket path.
func startServer(t testing.TB) string {
	return testutil.StartServer(t, server.Config{MaxConns: 200, KillTimeout: 2 * time.Second})
}

// fakeReq is a request as a fake server read it.
type fakeReq struct {
	argv []string
	dec  *netstring.Decoder // positioned at the stdin netstrings
	conn *net.UnixConn
}

// stdinChunks reads stdin netstrings until "0:," and calls fn with each.
func (r *fakeReq) stdinChunks(fn func([]byte)) error {
	var buf []byte
	for {
		var err error
		buf, err = r.dec.Decode(buf[:0])
		if err != nil {
			return err
		}
		if len(buf) == 0 {
			return nil
		}
		fn(buf)
	}
}

// startFake serves a fake sockexec-protocol server whose replies come
// from handle; it returns the socket path. After handle returns, the
// connection is half-closed and drained, as a real server lingers.
func startFake(t testing.TB, handle func(r *fakeReq, w io.Writer)) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "f.sock")
	testutil.Serve(t, sock, func(c *net.UnixConn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReaderSize(c, 64<<10)
		dec := netstring.NewDecoder(br, 1<<20)
		b, err := dec.Decode(nil)
		if err != nil {
			return
		}
		argc, _ := strconv.Atoi(string(b))
		r := &fakeReq{dec: dec, conn: c}
		for range argc {
			if b, err = dec.Decode(nil); err != nil {
				return
			}
			r.argv = append(r.argv, string(b))
		}
		bw := bufio.NewWriterSize(c, 64<<10)
		handle(r, bw)
		bw.Flush()
		c.CloseWrite()
		io.Copy(io.Discard, br)
	})
	return sock
}

// pair encodes typed netstring pairs.
func pair(kv ...string) []byte {
	var b []byte
	for _, s := range kv {
		b = netstring.AppendString(b, s)
	}
	return b
}

// writeOut sends data as stdout pairs of at most 32 KiB, as a server does.
func writeOut(w io.Writer, data []byte) {
	for len(data) > 0 {
		k := min(len(data), 32<<10)
		w.Write(netstring.AppendString(nil, "stdout"))
		w.Write(netstring.Append(nil, data[:k]))
		data = data[k:]
	}
}

// waitClose reads the client's input until it closes the connection.
func waitClose(r *fakeReq) {
	for {
		if _, err := r.dec.Decode(nil); err != nil {
			return
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
