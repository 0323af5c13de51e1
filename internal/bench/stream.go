package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockwarden/sockwarden/netstring"
)

// readBufSize is the read buffer of Echo and Flood: larger than a UNIX
// socket's queue, so one read(2) takes all that is there.
const readBufSize = 1 << 20

// The Echo stream is a deterministic pseudo-random pattern of
// patternPeriod bytes, repeated. The period is not a multiple of the
// chunk size, so chunks lost, repeated or reordered anywhere in the stream
// change its content, not only its length. patternExt holds the pattern
// followed by its first ChunkSize bytes, so that ChunkSize contiguous
// bytes start at every offset of the period.
const patternPeriod = 1<<20 + 4093

var (
	patternOnce sync.Once
	patternExt  []byte
)

func pattern() []byte {
	patternOnce.Do(func() {
		rng := rand.NewChaCha8([32]byte{'s', 'o', 'c', 'k', 'w', 'a', 'r', 'd', 'e', 'n'})
		b := make([]byte, patternPeriod+ChunkSize)
		rng.Read(b[:patternPeriod])
		copy(b[patternPeriod:], b[:ChunkSize])
		patternExt = b
	})
	return patternExt
}

// zeros is what Flood output is compared with; small enough to stay in
// the L1 cache.
var zeros [16 << 10]byte

// verifier checks a stream of output against the expected bytes as it
// arrives.
type verifier struct {
	want   int64 // expected length
	got    int64 // bytes received
	echo   bool  // compare with the pattern (Echo), else with zeros (Flood)
	badAt  int64 // offset of the first wrong byte, -1 if none
	stderr []byte
	nerr   int64
}

func newVerifier(want int64, echo bool) *verifier {
	return &verifier{want: want, echo: echo, badAt: -1}
}

// out is the frames callback.
func (v *verifier) out(kind int, b []byte) {
	if kind == stderr {
		v.nerr += int64(len(b))
		if len(v.stderr) < 200 {
			v.stderr = append(v.stderr, b[:min(len(b), 200-len(v.stderr))]...)
		}
		return
	}
	off := v.got
	v.got += int64(len(b))
	if v.badAt >= 0 || off >= v.want {
		return
	}
	b = b[:min(int64(len(b)), v.want-off)]
	for len(b) > 0 {
		var ref []byte
		if v.echo {
			p := int(off % patternPeriod)
			ref = pattern()[p:]
		} else {
			ref = zeros[:]
		}
		k := min(len(b), len(ref))
		if !bytes.Equal(b[:k], ref[:k]) {
			i := 0
			for b[i] == ref[i] {
				i++
			}
			v.badAt = off + int64(i)
			return
		}
		b = b[k:]
		off += int64(k)
	}
}

// problems lists what is wrong with the stream and the status.
func (v *verifier) problems(st Status) []string {
	var p []string
	if v.badAt >= 0 {
		p = append(p, fmt.Sprintf("wrong stdout byte at offset %d", v.badAt))
	}
	if v.got != v.want {
		p = append(p, fmt.Sprintf("stdout has %d bytes, expected %d", v.got, v.want))
	}
	if v.nerr > 0 {
		p = append(p, fmt.Sprintf("%d bytes of stderr: %q", v.nerr, v.stderr))
	}
	if st.Signal != "" || st.Code != 0 {
		p = append(p, fmt.Sprintf("%v, expected exit status 0", st))
	}
	return p
}

// watchdog closes c when progress has not moved for timeout, and reports
// whether it did.
type watchdog struct {
	progress atomic.Int64
	fired    atomic.Bool
	stop     chan struct{}
}

func startWatchdog(c net.Conn, timeout time.Duration) *watchdog {
	w := &watchdog{stop: make(chan struct{})}
	tick := min(timeout/4+time.Millisecond, time.Second)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		last, since := int64(-1), time.Now()
		for {
			select {
			case <-w.stop:
				return
			case now := <-t.C:
				if p := w.progress.Load(); p != last {
					last, since = p, now
				} else if now.Sub(since) >= timeout {
					w.fired.Store(true)
					c.Close()
					return
				}
			}
		}
	}()
	return w
}

// streamRun runs one streaming request: it connects, lets send write the
// request (and any stdin) on its own goroutine, reads and verifies the
// output and returns the result.
func streamRun(ctx context.Context, cfg *Config, v *verifier, send func(c *net.UnixConn, w *watchdog, replyDone *atomic.Bool) error) (*Result, error) {
	res := &Result{Workload: cfg.Workload, Size: cfg.Size}
	var fail failures
	defer fail.into(res)

	start := time.Now()
	c, err := dialUnix(ctx, cfg.Socket)
	if err != nil {
		fail.add("connect: %v", err)
		return res, nil
	}
	defer c.Close()
	wd := startWatchdog(c, cfg.Timeout)
	defer close(wd.stop)
	stopCtx := context.AfterFunc(ctx, func() { c.Close() })
	defer stopCtx()

	sendErr := make(chan error, 1)
	var replyDone atomic.Bool
	go func() { sendErr <- send(c, wd, &replyDone) }()

	f := newFrames(bufio.NewReaderSize(c, readBufSize))
	st, err := f.status(func(kind int, b []byte) {
		v.out(kind, b)
		wd.progress.Add(int64(len(b)))
	})
	res.Elapsed = time.Since(start)
	if err == nil {
		err = f.end()
	}
	// The reply is complete (or broken): unblock a sender the server no
	// longer reads from.
	replyDone.Store(true)
	c.Close()
	serr := <-sendErr
	var p []string
	switch {
	case wd.fired.Load():
		p = append(p, fmt.Sprintf("no progress for %v", cfg.Timeout))
	case ctx.Err() != nil:
		return res, ctx.Err()
	case err != nil:
		p = append(p, err.Error())
	}
	if serr != nil && err == nil {
		p = append(p, serr.Error())
	}
	if err == nil {
		p = append(p, v.problems(st)...)
	}
	if len(p) > 0 {
		fail.add("%s", strings.Join(p, "; "))
	} else if res.Elapsed > 0 {
		res.MiBps = float64(cfg.Size) / (1 << 20) / res.Elapsed.Seconds()
	}
	return res, nil
}

// runFlood: head -c Size /dev/zero; the output must be exactly Size zero
// bytes.
func runFlood(ctx context.Context, cfg *Config) (*Result, error) {
	req := encodeRequest([]string{"head", "-c", strconv.FormatInt(cfg.Size, 10), "/dev/zero"}, true)
	v := newVerifier(cfg.Size, false)
	return streamRun(ctx, cfg, v, func(c *net.UnixConn, _ *watchdog, _ *atomic.Bool) error {
		if _, err := c.Write(req); err != nil {
			return fmt.Errorf("sending request: %w", err)
		}
		return nil
	})
}

// echoBatch is the number of stdin netstrings per writev.
const echoBatch = 4

// runEcho: cat, fed Size bytes of the pattern in ChunkSize netstrings
// while its output is read; the output must be the same bytes.
func runEcho(ctx context.Context, cfg *Config) (*Result, error) {
	ext := pattern()
	req := encodeRequest([]string{"cat"}, false)
	v := newVerifier(cfg.Size, true)
	return streamRun(ctx, cfg, v, func(c *net.UnixConn, wd *watchdog, replyDone *atomic.Bool) error {
		hdr := netstring.AppendHeader(nil, ChunkSize)
		comma, end := []byte(","), []byte("0:,")
		var arr [1 + 3*echoBatch + 1][]byte
		bufs := append(arr[:0], req)
		var sent, written int64
		for {
			for j := 0; j < echoBatch && sent < cfg.Size; j++ {
				k := min(ChunkSize, cfg.Size-sent)
				h := hdr
				if k != ChunkSize {
					h = netstring.AppendHeader(nil, int(k))
				}
				p := sent % patternPeriod
				bufs = append(bufs, h, ext[p:p+k], comma)
				sent += k
			}
			if sent == cfg.Size {
				bufs = append(bufs, end)
			}
			nb := net.Buffers(bufs)
			n, err := nb.WriteTo(c)
			written += n
			wd.progress.Add(n)
			if err != nil {
				if replyDone.Load() {
					return fmt.Errorf("the reply ended before all stdin was sent (%d bytes of requests and stdin netstrings written)", written)
				}
				return fmt.Errorf("sending stdin: %w", err)
			}
			if sent == cfg.Size {
				return nil
			}
			bufs = arr[:0]
		}
	})
}
