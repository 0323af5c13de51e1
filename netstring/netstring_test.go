package netstring

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", "0:,"},
		{"hello", "5:hello,"},
		{"a\x00b", "3:a\x00b,"},
		{strings.Repeat("x", 10), "10:xxxxxxxxxx,"},
	}
	for _, tt := range tests {
		if got := string(Append(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("Append(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := string(AppendString(nil, tt.in)); got != tt.want {
			t.Errorf("AppendString(%q) = %q, want %q", tt.in, got, tt.want)
		}
		var buf bytes.Buffer
		if err := Encode(&buf, []byte(tt.in)); err != nil || buf.String() != tt.want {
			t.Errorf("Encode(%q) = %q, %v; want %q", tt.in, buf.String(), err, tt.want)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int64
		want    []string
		wantErr error // error after the values in want
	}{
		{"one", "5:hello,", 100, []string{"hello"}, io.EOF},
		{"empty", "0:,", 100, []string{""}, io.EOF},
		{"several", "1:2,5:uname,2:-a,0:,", 100, []string{"2", "uname", "-a", ""}, io.EOF},
		{"binary", "3:\x00\xff\n,", 100, []string{"\x00\xff\n"}, io.EOF},
		{"exactly max", "3:abc,", 3, []string{"abc"}, io.EOF},
		{"too long", "4:abcd,", 3, nil, ErrTooLong},
		{"non-digit", "x:abc,", 100, nil, ErrSyntax},
		{"sign", "-1:a,", 100, nil, ErrSyntax},
		{"space", " 1:a,", 100, nil, ErrSyntax},
		{"leading zero", "01:a,", 100, nil, ErrSyntax},
		{"empty length", ":a,", 100, nil, ErrSyntax},
		{"missing comma", "1:ab", 100, nil, ErrSyntax},
		{"missing colon", "1;a,", 100, nil, ErrSyntax},
		{"30 digits", "123456789012345678901234567890:", 1 << 62, nil, ErrOverflow},
		{"truncated header", "12", 100, nil, io.ErrUnexpectedEOF},
		{"truncated body", "5:he", 100, nil, io.ErrUnexpectedEOF},
		{"truncated trailer", "2:he", 100, nil, io.ErrUnexpectedEOF},
		{"second bad", "1:a,1:bb", 100, []string{"a"}, ErrSyntax},
		{"4 GiB then close", "4294967296:", 1 << 40, nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One byte at a time: the decoder must not depend on read sizes.
			d := NewDecoder(iotest.OneByteReader(strings.NewReader(tt.in)), tt.max)
			var got []string
			var err error
			for {
				var b []byte
				b, err = d.Decode(nil)
				if err != nil {
					break
				}
				got = append(got, string(b))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("values = %q, want %q", got, tt.want)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestSyntaxErrorOffset(t *testing.T) {
	d := NewDecoder(strings.NewReader("1:a,2:bc,x"), 100)
	for i := 0; i < 2; i++ {
		if _, err := d.Decode(nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.Decode(nil)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 9 {
		t.Fatalf("err = %v, want *SyntaxError at offset 9", err)
	}
	if !strings.Contains(err.Error(), "at byte 9") {
		t.Errorf("message %q does not name the offset", err)
	}
}

// A huge declared length must not be allocated before its bytes arrive.
func TestDecodeDoesNotPreallocate(t *testing.T) {
	in := "1000000000:abc" // 1 GB declared, 3 bytes sent, then EOF
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d := NewDecoder(strings.NewReader(in), 1<<40)
	if _, err := d.Decode(nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("decoding a 1 GB header with 3 bytes allocated %d bytes", grew)
	}
}

func TestStreamingBody(t *testing.T) {
	payload := strings.Repeat("0123456789", 10000)
	in := string(AppendString(nil, payload)) + "0:,"
	d := NewDecoder(strings.NewReader(in), 1<<20)
	n, err := d.Header()
	if err != nil || n != int64(len(payload)) {
		t.Fatalf("Header = %d, %v", n, err)
	}
	var out bytes.Buffer
	if _, err := io.CopyBuffer(&out, d.Body(), make([]byte, 777)); err != nil {
		t.Fatal(err)
	}
	if out.String() != payload {
		t.Fatal("body differs")
	}
	if err := d.Trailer(); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Header(); n != 0 || err != nil {
		t.Fatalf("second Header = %d, %v", n, err)
	}
	if err := d.Trailer(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Header(); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func TestTrailerSkipsUnreadBody(t *testing.T) {
	d := NewDecoder(strings.NewReader("5:hello,2:ok,"), 100)
	if _, err := d.Header(); err != nil {
		t.Fatal(err)
	}
	if err := d.Trailer(); err != nil {
		t.Fatal(err)
	}
	b, err := d.Decode(nil)
	if err != nil || string(b) != "ok" {
		t.Fatalf("Decode = %q, %v", b, err)
	}
}

func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"0:,", "5:hello,", "1:2,5:uname,2:-a,0:,", "01:a,", "x", "99999999999999999999:", "3:ab", "1:a;"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDecoder(bytes.NewReader(in), 1<<16)
		var vals [][]byte
		var err error
		for {
			var b []byte
			b, err = d.Decode(nil)
			if err != nil {
				break
			}
			vals = append(vals, b)
		}
		// Whatever decoded must re-encode to exactly the consumed prefix.
		var re []byte
		for _, v := range vals {
			re = Append(re, v)
		}
		if !bytes.HasPrefix(in, re) {
			t.Fatalf("re-encoding %q is not a prefix of the input %q", re, in)
		}
		if err == io.EOF && len(re) != len(in) {
			t.Fatalf("clean EOF after %d of %d bytes", len(re), len(in))
		}
		if d.Offset() > int64(len(in)) {
			t.Fatalf("offset %d beyond input length %d", d.Offset(), len(in))
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		data := bytes.Repeat([]byte("x"), size)
		buf := make([]byte, 0, size+32)
		b.Run(sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf = Append(buf[:0], data)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		one := Append(nil, bytes.Repeat([]byte("x"), size))
		stream := bytes.Repeat(one, 64)
		b.Run(sizeName(size), func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			r := bytes.NewReader(stream)
			buf := make([]byte, 0, size)
			d := NewDecoder(r, 1<<20)
			for b.Loop() {
				r.Reset(stream)
				d = NewDecoder(r, 1<<20)
				for {
					var err error
					if buf, err = d.Decode(buf[:0]); err != nil {
						break
					}
				}
			}
		})
	}
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BodyFunc streams a body in pieces of the read buffer, then the
// trailer; Reset starts a new stream.
func TestBodyFuncAndReset(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  error
	}{
		{"5:hello,", "hello", nil},
		{"0:,", "", nil},
		{"5:hel", "hel", io.ErrUnexpectedEOF},
		{"5:hello;", "hello", ErrSyntax},
	}
	d := NewDecoder(strings.NewReader(""), 1<<20)
	for _, tt := range tests {
		d.Reset(iotest.OneByteReader(strings.NewReader(tt.in)))
		if _, err := d.Header(); err != nil {
			t.Fatalf("%q: header: %v", tt.in, err)
		}
		var got []byte
		err := d.BodyFunc(func(b []byte) { got = append(got, b...) })
		if string(got) != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("%q: got %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// chunkReader returns one chunk per Read.
type chunkReader struct{ chunks []string }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// Buffered says how much of the body the reader holds; Consumed accounts
// for body bytes taken from the stream past it, so that the trailer and
// the offset come out right, and refuses more than the body has left.
func TestConsumed(t *testing.T) {
	tests := []struct {
		name     string
		consumed int64
		wantErr  bool
	}{
		{"the rest of the body", 6, false},
		{"more than is left", 7, true},
		{"negative", -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The reader's first read brings the header and 4 body bytes;
			// the other 6 are taken past it.
			src := &chunkReader{chunks: []string{"10:0123", "456789", ","}}
			d := NewDecoder(bufio.NewReaderSize(src, 16), 100)
			if n, err := d.Header(); err != nil || n != 10 {
				t.Fatalf("header: %d, %v", n, err)
			}
			if got := d.Buffered(); got != 4 {
				t.Fatalf("Buffered %d, want 4", got)
			}
			head := make([]byte, 4)
			if _, err := io.ReadFull(d.Body(), head); err != nil || string(head) != "0123" {
				t.Fatalf("body: %q, %v", head, err)
			}
			past := make([]byte, 6)
			if _, err := io.ReadFull(src, past); err != nil || string(past) != "456789" {
				t.Fatalf("past the decoder: %q, %v", past, err)
			}
			err := d.Consumed(tt.consumed)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Consumed(%d): %v", tt.consumed, err)
			}
			if tt.wantErr {
				if d.Offset() != 7 {
					t.Errorf("offset %d after a refused Consumed, want 7", d.Offset())
				}
				return
			}
			if err := d.Trailer(); err != nil {
				t.Fatalf("trailer: %v", err)
			}
			if d.Offset() != 14 {
				t.Errorf("offset %d, want 14", d.Offset())
			}
		})
	}
	// A reader holding more than the body: Buffered is the body's rest.
	d := NewDecoder(bufio.NewReader(strings.NewReader("3:abc,5:hello,")), 100)
	if _, err := d.Header(); err != nil {
		t.Fatal(err)
	}
	if got := d.Buffered(); got != 3 {
		t.Errorf("Buffered %d, want 3", got)
	}
}
