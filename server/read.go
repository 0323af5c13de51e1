package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/sockwarden/sockwarden/netstring"
)

// Reading: the argc netstring, then argv, bounded in count, size and
// time.

// readArgv reads argc and argv.
func (cn *conn) readArgv(dec *netstring.Decoder) ([]string, error) {
	b, err := dec.Decode(nil)
	if err != nil {
		return nil, fmt.Errorf("reading argc: %w", err)
	}
	argc, err := parseCount(b)
	if err != nil {
		return nil, fmt.Errorf("argc: %w", err)
	}
	if argc < 1 || argc > cn.lim.MaxArgs {
		return nil, fmt.Errorf("argc %d out of range 1..%d", argc, cn.lim.MaxArgs)
	}
	dec.SetMax(cn.lim.MaxArgBytes)
	argv := make([]string, 0, min(argc, 64))
	var total int64
	var buf []byte
	for i := range argc {
		buf, err = dec.Decode(buf[:0])
		if err != nil {
			return nil, fmt.Errorf("reading argv[%d] of %d: %w", i, argc, err)
		}
		if total += int64(len(buf)); total > cn.lim.MaxArgvBytes {
			return nil, fmt.Errorf("argv larger than %d bytes", cn.lim.MaxArgvBytes)
		}
		if i := strings.IndexByte(string(buf), 0); i >= 0 {
			return nil, fmt.Errorf("argv[%d] contains a NUL byte", len(argv))
		}
		argv = append(argv, string(buf))
	}
	if argv[0] == "" {
		return nil, errors.New("argv[0] is empty")
	}
	dec.SetMax(maxStdinNetstr)
	return argv, nil
}

// parseCount parses a decimal count: digits only, no sign.
func parseCount(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("empty")
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", b)
		}
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, fmt.Errorf("%q: %w", b, err)
	}
	return n, nil
}

// requestError handles a request that could not be read. A malformed
// one is answered by closing the connection, after a bounded drain of
// what the client sent meanwhile (linger), so that the client reads a
// clean end of stream rather than a reset.
func (cn *conn) requestError(ctx context.Context, br *bufio.Reader, err error, off int64) {
	switch {
	case off == 0 && errors.Is(err, io.EOF):
		cn.log.Debug("client closed before sending a request")
	case ctx.Err() != nil:
		cn.log.Info("closing connection at shutdown before the request was complete", "bytes", off)
	case errors.Is(err, os.ErrDeadlineExceeded):
		cn.s.cfg.Metrics.request(OutcomeError)
		cn.log.Warn("connection deadline passed before the request was complete", "bytes", off)
		cn.recordProtocolError(&ProtocolError{Offset: off, Err: errors.New("connection deadline passed before the request was complete")})
	default:
		cn.s.cfg.Metrics.request(OutcomeError)
		pe := &ProtocolError{Offset: off, Err: err}
		cn.log.Warn("malformed request; closing connection", "err", pe)
		cn.recordProtocolError(pe)
		cn.setState(StateFinishing)
		cn.linger(func() { io.Copy(io.Discard, br) })
	}
}
