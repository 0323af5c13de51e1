package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
)

// Status is a program's final status as the server reported it.
type Status struct {
	// Code is the exit status; meaningful when Signal is "".
	Code int
	// Signal is the name of the signal that killed the program, without
	// "SIG", or "".
	Signal string
}

func (s Status) String() string {
	if s.Signal != "" {
		return "killed by SIG" + s.Signal
	}
	return "exit status " + strconv.Itoa(s.Code)
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// errNoStatus is a connection that ended without a final pair.
var errNoStatus = errors.New("connection closed without an exit status")

// encodeRequest returns argc, the argv and, if closeStdin, the empty
// netstring that closes the program's stdin: a whole request in one write.
func encodeRequest(argv []string, closeStdin bool) []byte {
	b := netstring.AppendString(nil, strconv.Itoa(len(argv)))
	for _, a := range argv {
		b = netstring.AppendString(b, a)
	}
	if closeStdin {
		b = append(b, "0:,"...)
	}
	return b
}

// dialUnix connects to the socket, retrying while the server's accept
// queue is full (EAGAIN on a non-blocking connect) until ctx is done.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	wait := 100 * time.Microsecond
	for {
		c, err := net.DialUnix("unix", nil, addr)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Output stream kinds passed to a frames callback.
const (
	stdout = 1
	stderr = 2
)

// frames reads the server's half of the protocol: "type, data" pairs
// ending with one exitcode or termsig pair, with the netstring package's
// Decoder. Output is handed to the callback as slices of the read buffer
// (Decoder.BodyFunc), so a byte from the socket is never copied again
// before it is verified.
type frames struct {
	br  *bufio.Reader
	dec *netstring.Decoder
}

// newFrames returns frames reading from br.
func newFrames(br *bufio.Reader) *frames {
	return &frames{br: br, dec: netstring.NewDecoder(br, 1<<40)}
}

// reset makes f read a new connection.
func (f *frames) reset(r io.Reader) {
	f.br.Reset(r)
	f.dec.Reset(f.br)
}

// small reads a whole netstring of at most len(dst) bytes into dst.
func (f *frames) small(dst []byte) ([]byte, error) {
	f.dec.SetMax(int64(len(dst)))
	return f.dec.Decode(dst[:0])
}

// maxStatus bounds the data of an exitcode or termsig pair.
const maxStatus = 32

// status reads pairs until the final one and returns it; output goes to
// onOut(kind, data), data valid only during the call.
func (f *frames) status(onOut func(kind int, b []byte)) (Status, error) {
	var tbuf, dbuf [maxStatus]byte
	for {
		typ, err := f.small(tbuf[:8]) // "exitcode", the longest type
		if err == io.EOF {
			return Status{}, errNoStatus
		}
		if err != nil {
			return Status{}, fmt.Errorf("reading reply type: %w", err)
		}
		switch string(typ) {
		case "stdout", "stderr":
			kind := stdout
			if typ[3] == 'e' {
				kind = stderr
			}
			f.dec.SetMax(1 << 40)
			_, err := f.dec.Header()
			if err == nil {
				err = f.dec.BodyFunc(func(b []byte) { onOut(kind, b) })
			}
			if err != nil {
				return Status{}, fmt.Errorf("reading %s data: %w", typ, unexpectedEOF(err))
			}
		case "exitcode":
			d, err := f.small(dbuf[:])
			if err != nil {
				return Status{}, fmt.Errorf("reading exit code: %w", unexpectedEOF(err))
			}
			code, err := parseCode(d)
			if err != nil {
				return Status{}, err
			}
			return Status{Code: code}, nil
		case "termsig":
			d, err := f.small(dbuf[:])
			if err != nil {
				return Status{}, fmt.Errorf("reading signal: %w", unexpectedEOF(err))
			}
			if len(d) == 0 {
				return Status{}, errors.New("empty signal name")
			}
			return Status{Code: -1, Signal: string(d)}, nil
		default:
			return Status{}, fmt.Errorf("unknown reply type %q", typ)
		}
	}
}

// parseCode parses a decimal exit status: digits only, 0..255.
func parseCode(b []byte) (int, error) {
	if len(b) == 0 || len(b) > 3 {
		return 0, fmt.Errorf("bad exit code %q", b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad exit code %q", b)
		}
		n = n*10 + int(c-'0')
	}
	if n > 255 {
		return 0, fmt.Errorf("bad exit code %q", b)
	}
	return n, nil
}

// end checks that the server closes the connection after the final pair,
// as the protocol requires.
func (f *frames) end() error {
	b, err := f.br.Peek(1)
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return fmt.Errorf("after the final pair: %w", err)
	}
	return fmt.Errorf("data after the final pair: %q", b)
}
