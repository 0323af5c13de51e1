// Package client talks the sockexec protocol to sockwarden (or to
// sockexec itself) over a UNIX socket.
//
// [Client.Run] has the shape of lua-resty-exec's one-shot call: argv and
// optional stdin in, stdout, stderr and the exit status out, with optional
// callbacks to stream the output. [Client.Start] opens a duplex
// [Session], like resty.exec.socket: send stdin while reading output.
//
// The client never half-closes the connection: sockexec and sockwarden
// take a half-close as a disconnect and kill the program.
package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/sockwarden/sockwarden/netstring"
)

// Chunk types sent by the server.
const (
	Stdout   = "stdout"
	Stderr   = "stderr"
	ExitCode = "exitcode"
	TermSig  = "termsig"
)

// MaxChunk is the largest output chunk the client accepts.
const MaxChunk = 64 << 20

// ErrNoStatus is returned when the server closed the connection without
// sending an exit status (for example after a malformed request).
var ErrNoStatus = errors.New("connection closed without an exit status")

// Client runs programs through a sockexec-protocol server.
type Client struct {
	// Socket is the path of the server's UNIX socket.
	Socket string
	// Dialer, if non-nil, is used to connect.
	Dialer *net.Dialer
}

// New returns a client of the server listening on socket.
func New(socket string) *Client { return &Client{Socket: socket} }

// Result is the outcome of [Client.Run].
type Result struct {
	// Stdout and Stderr hold the output not passed to a callback.
	Stdout, Stderr []byte
	// ExitCode is the program's exit status, or -1 if it died by a signal.
	ExitCode int
	// TermSig is the name of the signal that killed the program, without
	// the "SIG" prefix ("TERM", "KILL"), or "".
	TermSig string
}

// Options tunes [Client.Run].
type Options struct {
	// Stdin, if non-nil, is sent to the program, then its stdin is closed.
	Stdin io.Reader
	// OnStdout and OnStderr, if non-nil, receive the output as it
	// arrives instead of collecting it in the Result. The slice is only
	// valid during the call.
	OnStdout, OnStderr func([]byte)
}

// Run runs argv and returns its output and exit status. Canceling ctx
// closes the connection, which makes the server kill the program.
func (c *Client) Run(ctx context.Context, argv []string, opts *Options) (*Result, error) {
	if opts == nil {
		opts = &Options{}
	}
	s, err := c.Start(ctx, argv)
	if err != nil {
		return nil, err
	}
	defer s.Close()

	stdinErr := make(chan error, 1)
	go func() {
		var err error
		if opts.Stdin != nil {
			_, err = io.Copy(s, opts.Stdin)
		}
		if err == nil {
			err = s.CloseStdin()
		}
		stdinErr <- err
	}()

	res := &Result{ExitCode: -1}
	for {
		ch, err := s.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		switch ch.Type {
		case Stdout:
			if opts.OnStdout != nil {
				opts.OnStdout(ch.Data)
			} else {
				res.Stdout = append(res.Stdout, ch.Data...)
			}
		case Stderr:
			if opts.OnStderr != nil {
				opts.OnStderr(ch.Data)
			} else {
				res.Stderr = append(res.Stderr, ch.Data...)
			}
		case ExitCode:
			res.ExitCode = ch.Code
			return res, nil
		case TermSig:
			res.TermSig = string(ch.Data)
			return res, nil
		}
	}
}

// Session is one duplex request: write stdin while receiving output.
type Session struct {
	c    net.Conn
	dec  *netstring.Decoder
	stop func() bool

	rbuf []byte // reused for chunk data

	wmu  sync.Mutex
	wbuf []byte
}

// Start connects, sends argv and returns the session. The program starts
// as soon as the server has the argv.
func (c *Client) Start(ctx context.Context, argv []string) (*Session, error) {
	if len(argv) == 0 {
		return nil, errors.New("client: empty argv")
	}
	d := c.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	s := &Session{
		c:   conn,
		dec: netstring.NewDecoder(bufio.NewReaderSize(conn, 64<<10), MaxChunk),
	}
	s.stop = context.AfterFunc(ctx, func() { conn.Close() })
	b := netstring.AppendString(nil, strconv.Itoa(len(argv)))
	for _, a := range argv {
		b = netstring.AppendString(b, a)
	}
	if _, err := conn.Write(b); err != nil {
		s.Close()
		return nil, fmt.Errorf("client: sending argv: %w", err)
	}
	return s, nil
}

// Write sends p as one stdin netstring. An empty p sends nothing (an empty
// netstring would close the program's stdin; use CloseStdin for that).
func (s *Session) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = netstring.Append(s.wbuf[:0], p)
	if _, err := s.c.Write(s.wbuf); err != nil {
		return 0, fmt.Errorf("client: sending stdin: %w", err)
	}
	return len(p), nil
}

// CloseStdin sends the empty netstring, which closes the program's stdin.
// The connection stays open for the output.
func (s *Session) CloseStdin() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.c.Write([]byte("0:,")); err != nil {
		return fmt.Errorf("client: closing stdin: %w", err)
	}
	return nil
}

// Chunk is one typed message from the server.
type Chunk struct {
	// Type is Stdout, Stderr, ExitCode or TermSig.
	Type string
	// Data is the output, the decimal exit status, or the signal name.
	Data []byte
	// Code is the exit status when Type is ExitCode.
	Code int
}

// Final reports whether the chunk is the last one (an exit status).
func (c Chunk) Final() bool { return c.Type == ExitCode || c.Type == TermSig }

// Receive returns the next chunk. When the server has closed the
// connection (which it does after the final chunk) it returns ErrNoStatus.
// Data is only valid until the next call.
func (s *Session) Receive() (Chunk, error) {
	s.dec.SetMax(16)
	typ, err := s.dec.Decode(nil)
	if err == io.EOF {
		return Chunk{}, ErrNoStatus
	}
	if err != nil {
		return Chunk{}, fmt.Errorf("client: reading reply: %w", err)
	}
	s.dec.SetMax(MaxChunk)
	data, err := s.dec.Decode(s.rbuf[:0])
	s.rbuf = data[:0]
	if err != nil {
		return Chunk{}, fmt.Errorf("client: reading %s data: %w", typ, eofIsUnexpected(err))
	}
	ch := Chunk{Type: string(typ), Data: data}
	switch ch.Type {
	case Stdout, Stderr, TermSig:
	case ExitCode:
		ch.Code, err = strconv.Atoi(string(data))
		if err != nil {
			return Chunk{}, fmt.Errorf("client: bad exit code %q", data)
		}
	default:
		return Chunk{}, fmt.Errorf("client: unknown reply type %q", typ)
	}
	return ch, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Close closes the connection. Closing before the final chunk makes the
// server kill the program.
func (s *Session) Close() error {
	s.stop()
	return s.c.Close()
}
