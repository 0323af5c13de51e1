package audit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSyslogBacklog bounds what a SyslogNetSink keeps while its
// collector is away.
const DefaultSyslogBacklog = 4 << 20

// SyslogNetOptions configure a SyslogNetSink.
type SyslogNetOptions struct {
	// SyslogOptions give the message format (Path is not used).
	SyslogOptions
	// Address is the collector's host:port.
	Address string
	// TLS, when set, makes the connection TLS (RFC 5425); nil is plain
	// TCP (RFC 6587).
	TLS *tls.Config
	// Backlog bounds, in bytes, the messages kept while the collector
	// cannot be reached; 0 means DefaultSyslogBacklog.
	Backlog int
}

// SyslogNetSink sends each record to a remote syslog collector over TCP
// or TLS, one message per record with octet-counting framing ("LEN MSG",
// RFC 6587 3.4.1, which RFC 5425 uses too), MSG as SyslogSink formats it.
//
// A write only queues the message; a goroutine of the sink sends the
// queue in order, reconnecting with a backoff (up to 5 s) while the
// collector is away, so that a slow or absent collector never holds up
// the server. The queue is bounded (Backlog bytes): a write that would
// exceed it fails, and that record is not shipped (the sink's
// on_failure decides what that means; the hash chain shows the gap where
// the records arrive). A record counts as written once queued: keep a
// file as the source of truth. A message cut by a dropped connection is
// sent again on the next one, whole; before each message the sink checks
// that the collector has not closed the connection. Plain syslog over TCP
// has no acknowledgements, so records in flight when a collector crashes
// can still be lost (the chain shows it); a local rsyslog with a disk
// queue and RELP is the remedy where that matters.
type SyslogNetSink struct {
	opts SyslogNetOptions
	f    *SyslogSink // formats the messages

	mu      sync.Mutex
	wake    *sync.Cond
	queue   [][]byte
	queued  int // bytes in queue
	closed  bool
	lastErr error         // the last connection error, for Probe
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when the sender has stopped
}

// DialSyslogNet starts a sink sending to opts.Address. It fails only on
// an address that is not host:port: the collector may come later.
func DialSyslogNet(opts SyslogNetOptions) (*SyslogNetSink, error) {
	if _, _, err := net.SplitHostPort(opts.Address); err != nil {
		return nil, fmt.Errorf("syslog %s: %w", opts.Address, err)
	}
	if opts.Backlog <= 0 {
		opts.Backlog = DefaultSyslogBacklog
	}
	s := &SyslogNetSink{opts: opts, f: newSyslogSink(opts.SyslogOptions), closing: make(chan struct{}), done: make(chan struct{})}
	s.wake = sync.NewCond(&s.mu)
	go s.send()
	return s, nil
}

// ErrBacklogFull is returned by SyslogNetSink.Write while its collector
// is away and its backlog is full.
var ErrBacklogFull = errors.New("the collector is away and the backlog is full; record not shipped")

// Write queues one record.
func (s *SyslogNetSink) Write(record []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	msg := s.f.format(record)
	frame := make([]byte, 0, len(msg)+8)
	frame = strconv.AppendInt(frame, int64(len(msg)), 10)
	frame = append(frame, ' ')
	frame = append(frame, msg...)
	if s.queued+len(frame) > s.opts.Backlog {
		if s.lastErr != nil {
			return fmt.Errorf("syslog %s: %w (%v)", s.opts.Address, ErrBacklogFull, s.lastErr)
		}
		return fmt.Errorf("syslog %s: %w", s.opts.Address, ErrBacklogFull)
	}
	s.queue = append(s.queue, frame)
	s.queued += len(frame)
	s.wake.Signal()
	return nil
}

// send sends the queue, in order, reconnecting as needed.
func (s *SyslogNetSink) send() {
	defer close(s.done)
	var (
		conn    net.Conn
		backoff time.Duration
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.wake.Wait()
		}
		if len(s.queue) == 0 {
			s.mu.Unlock()
			return // closed, and everything sent
		}
		frame, closed := s.queue[0], s.closed
		s.mu.Unlock()

		if conn == nil {
			c, err := s.dial()
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			if err != nil {
				if closed {
					return // closing: no more waiting for the collector
				}
				backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
				s.sleep(backoff)
				continue
			}
			conn, backoff = c, 0
		}
		if !alive(conn) {
			conn.Close()
			conn = nil
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(frame); err != nil {
			conn.Close()
			conn = nil
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.queued -= len(frame)
		s.mu.Unlock()
	}
}

// sleep waits d, or less if the sink is closed meanwhile.
func (s *SyslogNetSink) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.closing:
	}
}

// alive tells whether the collector has not closed conn: a peek at the
// socket, without waiting, finds its FIN (end of file) or a reset.
// Without this check the first record after a collector closed would be
// written into the void (TCP takes it, the peer answers with a reset).
// Over TLS, bytes the collector sent (a session ticket, its
// close_notify) hide a FIN behind them; the check then passes and the
// write after it fails.
func alive(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	up := true
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		up = n > 0 || err == unix.EAGAIN || err == unix.EINTR
		return true // never wait
	})
	return up
}

func (s *SyslogNetSink) dial() (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if s.opts.TLS != nil {
		return tls.DialWithDialer(d, "tcp", s.opts.Address, s.opts.TLS)
	}
	return d.Dial("tcp", s.opts.Address)
}

// Queued returns the messages and bytes waiting to be sent.
func (s *SyslogNetSink) Queued() (messages, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), s.queued
}

// Probe reports a full backlog, with the collector's error.
func (s *SyslogNetSink) Probe() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued >= s.opts.Backlog/2 && s.lastErr != nil {
		return fmt.Errorf("syslog %s: %d bytes waiting: %w", s.opts.Address, s.queued, s.lastErr)
	}
	return nil
}

// Reopen does nothing: the connection is the sink's own business.
func (s *SyslogNetSink) Reopen() error { return nil }

// Sync waits, up to 5 s, until the queue is sent.
func (s *SyslogNetSink) Sync() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := s.Queued(); n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			s.mu.Lock()
			err := s.lastErr
			s.mu.Unlock()
			return fmt.Errorf("syslog %s: records still waiting: %v", s.opts.Address, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close sends what is queued (trying once more if the collector is
// away) and stops.
func (s *SyslogNetSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.wake.Broadcast()
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	if n, _ := s.Queued(); n > 0 {
		return fmt.Errorf("syslog %s: %d records not sent", s.opts.Address, n)
	}
	return nil
}
