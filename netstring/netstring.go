// Package netstring encodes and decodes D. J. Bernstein's netstrings,
// the framing of the sockexec protocol: "<decimal length>:<bytes>,".
//
// The [Decoder] is streaming and bounded: it refuses a declared length
// above its limit as soon as the header is read, never allocates the
// declared length before the bytes arrive, and lets a caller stream a
// large body through [Decoder.Body] instead of holding it in memory.
//
// As the format requires, a length has no leading zeros ("0:," is the only
// length that starts with a zero) and no sign or spaces.
package netstring

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxDigits is the longest length header accepted, in digits. Longer
// headers are reported as [ErrOverflow] without reading further.
const MaxDigits = 18

// Errors reported by the decoder. They are wrapped in a *[SyntaxError]
// that also gives the byte offset; test them with errors.Is.
var (
	// ErrSyntax is a byte that does not belong where it was found:
	// a non-digit in the length, a missing ':' or ',', a leading zero.
	ErrSyntax = errors.New("netstring: syntax error")
	// ErrOverflow is a length with more than MaxDigits digits.
	ErrOverflow = errors.New("netstring: length overflows")
	// ErrTooLong is a declared length above the decoder's limit.
	ErrTooLong = errors.New("netstring: declared length exceeds limit")
)

// SyntaxError describes malformed input and where it was found.
type SyntaxError struct {
	Offset int64  // byte offset in the stream of the offending byte
	Msg    string // what was wrong
	Err    error  // ErrSyntax, ErrOverflow or ErrTooLong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("%v at byte %d: %s", e.Err, e.Offset, e.Msg)
}

// Unwrap returns the sentinel error.
func (e *SyntaxError) Unwrap() error { return e.Err }

// Append appends the netstring encoding of b to dst.
func Append(dst, b []byte) []byte {
	dst = AppendHeader(dst, len(b))
	dst = append(dst, b...)
	return append(dst, ',')
}

// AppendString is Append for a string.
func AppendString(dst []byte, s string) []byte {
	dst = AppendHeader(dst, len(s))
	dst = append(dst, s...)
	return append(dst, ',')
}

// AppendHeader appends the header "<n>:" of a netstring of n bytes; the
// caller appends the n bytes and the trailing ','.
func AppendHeader(dst []byte, n int) []byte {
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, ':')
}

// Encode writes the netstring encoding of b to w in one Write.
func Encode(w io.Writer, b []byte) error {
	_, err := w.Write(Append(make([]byte, 0, len(b)+MaxDigits+2), b))
	return err
}

// Decoder reads netstrings from a stream.
//
// Use [Decoder.Decode] for small values (the whole netstring in memory),
// or [Decoder.Header], then [Decoder.Body] to stream the bytes, then
// [Decoder.Trailer].
type Decoder struct {
	r      *bufio.Reader
	max    int64
	off    int64 // bytes consumed so far
	remain int64 // body bytes not yet read by Body
}

// NewDecoder returns a decoder reading from r that refuses netstrings
// longer than max bytes. If r is not a *bufio.Reader, it is wrapped in
// one with a small buffer.
func NewDecoder(r io.Reader, max int64) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 512)
	}
	return &Decoder{r: br, max: max}
}

// Reset makes d read a new stream from r, with its limit unchanged; a
// *bufio.Reader of d's is reused (reset to r) when r is not one itself.
func (d *Decoder) Reset(r io.Reader) {
	if br, ok := r.(*bufio.Reader); ok {
		d.r = br
	} else {
		d.r.Reset(r)
	}
	d.off, d.remain = 0, 0
}

// Offset returns how many bytes the decoder has consumed.
func (d *Decoder) Offset() int64 { return d.off }

// SetMax changes the limit for the following netstrings.
func (d *Decoder) SetMax(max int64) { d.max = max }

func (d *Decoder) syntax(err error, format string, args ...any) error {
	return &SyntaxError{Offset: d.off, Msg: fmt.Sprintf(format, args...), Err: err}
}

// eof turns an EOF in the middle of a netstring into io.ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Header reads a length header "<n>:" and returns n. It returns io.EOF,
// unwrapped, only when the stream ends cleanly before the first byte.
func (d *Decoder) Header() (int64, error) {
	if d.remain != 0 {
		return 0, errors.New("netstring: Header called before the previous body was read")
	}
	var n int64
	digits := 0
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			if digits == 0 && err == io.EOF {
				return 0, io.EOF
			}
			return 0, eof(err)
		}
		switch {
		case c >= '0' && c <= '9':
			if digits == 1 && n == 0 {
				return 0, d.syntax(ErrSyntax, "leading zero in length")
			}
			if digits == MaxDigits {
				return 0, d.syntax(ErrOverflow, "more than %d digits", MaxDigits)
			}
			n = n*10 + int64(c-'0')
			digits++
			d.off++
		case c == ':' && digits > 0:
			d.off++
			if n > d.max {
				return 0, d.syntax(ErrTooLong, "length %d, limit %d", n, d.max)
			}
			d.remain = n
			return n, nil
		case c == ':':
			return 0, d.syntax(ErrSyntax, "empty length")
		default:
			return 0, d.syntax(ErrSyntax, "unexpected %q in length", c)
		}
	}
}

// Body returns a reader of the remaining bytes of the current netstring
// body. It reads no further than the body.
func (d *Decoder) Body() io.Reader { return (*body)(d) }

type body Decoder

func (b *body) Read(p []byte) (int, error) {
	if b.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.r.Read(p)
	b.remain -= int64(n)
	b.off += int64(n)
	if err != nil {
		return n, eof(err)
	}
	return n, nil
}

// Buffered returns how many bytes of the current body the decoder's
// reader holds (read from the stream, not yet from the body).
func (d *Decoder) Buffered() int64 {
	return min(int64(d.r.Buffered()), d.remain)
}

// Consumed records that n bytes of the current body were taken from the
// stream past the decoder, straight from the reader under its
// bufio.Reader (with splice(2), say), which must have held none of them
// (Buffered is 0). It fails, changing nothing, when the body has fewer
// than n bytes left.
func (d *Decoder) Consumed(n int64) error {
	if n < 0 || n > d.remain {
		return fmt.Errorf("netstring: %d bytes consumed past the decoder, %d left in the body", n, d.remain)
	}
	d.remain -= n
	d.off += n
	return nil
}

// BodyFunc passes the rest of the current body to fn as it arrives, as
// slices of the decoder's read buffer, valid only during the call: no
// byte is copied (Body's Read copies into the caller's buffer). Then it
// reads the ',' after the body.
func (d *Decoder) BodyFunc(fn func([]byte)) error {
	for d.remain > 0 {
		if d.r.Buffered() == 0 {
			if _, err := d.r.Peek(1); err != nil { // one read(2)
				return eof(err)
			}
		}
		k := int(min(int64(d.r.Buffered()), d.remain))
		b, _ := d.r.Peek(k)
		fn(b)
		d.r.Discard(k)
		d.remain -= int64(k)
		d.off += int64(k)
	}
	return d.Trailer()
}

// Trailer consumes what is left of the current body and the ',' after it.
func (d *Decoder) Trailer() error {
	if d.remain > 0 {
		if _, err := io.Copy(io.Discard, d.Body()); err != nil {
			return err
		}
		if d.remain > 0 {
			return io.ErrUnexpectedEOF
		}
	}
	c, err := d.r.ReadByte()
	if err != nil {
		return eof(err)
	}
	if c != ',' {
		return d.syntax(ErrSyntax, "expected ',' after body, got %q", c)
	}
	d.off++
	return nil
}

// Decode reads one whole netstring and appends its body to dst. The
// buffer grows only as bytes arrive, so a huge declared length costs
// nothing until it is sent.
func (d *Decoder) Decode(dst []byte) ([]byte, error) {
	n, err := d.Header()
	if err != nil {
		return dst, err
	}
	for n > 0 {
		chunk := n
		if chunk > 32<<10 {
			chunk = 32 << 10
		}
		start := len(dst)
		dst = grow(dst, int(chunk))
		m, err := io.ReadFull(d.Body(), dst[start:start+int(chunk)])
		dst = dst[:start+m]
		if err != nil {
			return dst, eof(err)
		}
		n -= int64(m)
	}
	return dst, d.Trailer()
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}
