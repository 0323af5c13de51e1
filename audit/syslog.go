package audit

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Syslog facilities commonly used for audit records (RFC 5424 numbers).
const (
	FacilityAuth     = 4  // security/authorization messages
	FacilityDaemon   = 3  // system daemons
	FacilityAuthpriv = 10 // private security/authorization messages
	FacilityLocal0   = 16 // local use 0
)

// Syslog severities used by SyslogSink.
const (
	severityWarning = 4
	severityInfo    = 6
)

// SyslogOptions configure a SyslogSink. The zero value logs to /dev/log
// with facility authpriv.
type SyslogOptions struct {
	// Path is the local syslog socket; empty means /dev/log.
	Path string
	// Facility is the syslog facility number; 0 (kern) means authpriv.
	Facility int
	// AppName is the RFC 5424 APP-NAME; empty means "sockwarden".
	AppName string
	// Hostname is the RFC 5424 HOSTNAME; empty means os.Hostname.
	Hostname string
	// Now returns the time of the header's TIMESTAMP; nil means time.Now.
	Now func() time.Time
	// RFC3164 selects the traditional local format that glibc's syslog()
	// writes, "<PRI>Mmm dd hh:mm:ss APP-NAME[PID]: RECORD", instead of
	// RFC 5424. Use it when /dev/log is journald's socket: journald does
	// not parse RFC 5424 and would keep its header as part of the message,
	// while with this format it sets SYSLOG_IDENTIFIER and SYSLOG_PID and
	// MESSAGE is exactly the JSON record.
	RFC3164 bool
}

// SyslogSink sends each record as one RFC 5424 message to the local
// syslog daemon (rsyslog, syslog-ng, journald's /dev/log). It tries a
// datagram socket first and falls back to a stream socket, where each
// message ends with '\n' (non-transparent framing, RFC 6587; a record
// never contains a raw newline).
//
// The message is
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - RECORD
//
// with MSGID the record's event.action, no structured data, and the JSON
// record (without its newline) as MSG; see SyslogOptions.RFC3164 for the
// traditional format. The severity is warning for records whose
// event.outcome is failure, else info.
//
// A failed send is retried once on a fresh connection; if that fails too
// the record counts as not written. A datagram is atomic, so no partial
// record reaches the daemon; on a stream a partial message ends with the
// connection it was sent on, and the next record goes on a new one.
// A record larger than the socket's datagram limit fails to send: keep
// records small (the server bounds argv) or use a file.
type SyslogSink struct {
	opts   SyslogOptions
	header []byte // " HOSTNAME APP-NAME PROCID "

	mu     sync.Mutex
	conn   net.Conn
	stream bool
	buf    []byte
	closed bool
}

// DialSyslog connects to the local syslog socket.
func DialSyslog(opts SyslogOptions) (*SyslogSink, error) {
	s := newSyslogSink(opts)
	if err := s.dial(); err != nil {
		return nil, fmt.Errorf("syslog %s: %w", s.opts.Path, err)
	}
	return s, nil
}

// newSyslogSink fills in opts' defaults and makes the sink's header,
// without connecting.
func newSyslogSink(opts SyslogOptions) *SyslogSink {
	if opts.Path == "" {
		opts.Path = "/dev/log"
	}
	if opts.Facility <= 0 || opts.Facility > 23 {
		opts.Facility = FacilityAuthpriv
	}
	if opts.AppName == "" {
		opts.AppName = "sockwarden"
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &SyslogSink{opts: opts}
	h := []byte{' '}
	if opts.RFC3164 {
		h = append(h, headerField(opts.AppName, 48)...)
		h = append(h, '[')
		h = strconv.AppendInt(h, int64(os.Getpid()), 10)
		h = append(h, "]: "...)
	} else {
		h = append(h, headerField(opts.Hostname, 255)...)
		h = append(h, ' ')
		h = append(h, headerField(opts.AppName, 48)...)
		h = append(h, ' ')
		h = strconv.AppendInt(h, int64(os.Getpid()), 10)
		h = append(h, ' ')
	}
	s.header = h
	return s
}

// headerField makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most max bytes, "-" when empty.
func headerField(s string, max int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

func (s *SyslogSink) dial() error {
	var errs []error
	for _, network := range []string{"unixgram", "unix"} {
		c, err := net.Dial(network, s.opts.Path)
		if err == nil {
			s.conn, s.stream = c, network == "unix"
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// format builds the RFC 5424 message for record into s.buf.
func (s *SyslogSink) format(record []byte) []byte {
	record = bytes.TrimSuffix(record, []byte{'\n'})
	sev := severityInfo
	if bytes.Contains(record, []byte(`"outcome":"failure"`)) {
		sev = severityWarning
	}
	b := append(s.buf[:0], '<')
	b = strconv.AppendInt(b, int64(s.opts.Facility*8+sev), 10)
	if s.opts.RFC3164 {
		b = append(b, '>')
		b = s.opts.Now().AppendFormat(b, time.Stamp) // local time, as syslog(3)
		b = append(b, s.header...)
	} else {
		b = append(b, ">1 "...)
		// TIME-SECFRAC has at most 6 digits.
		b = s.opts.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
		b = append(b, s.header...)
		b = append(b, msgID(record)...)
		b = append(b, " - "...)
	}
	b = append(b, record...)
	if s.stream {
		b = append(b, '\n')
	}
	s.buf = b
	return b
}

// msgID returns the record's event.action: the first "action" key, which
// the Logger writes before any caller-supplied text.
func msgID(record []byte) []byte {
	const key = `"action":"`
	i := bytes.Index(record, []byte(key))
	if i < 0 {
		return []byte{'-'}
	}
	rest := record[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 || j > 32 {
		return []byte{'-'}
	}
	return rest[:j]
}

// Write sends one record.
func (s *SyslogSink) Write(record []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if s.conn == nil {
			if err = s.dial(); err != nil {
				continue
			}
		}
		msg := s.format(record)
		var n int
		n, err = s.conn.Write(msg)
		if err == nil && n == len(msg) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("short write (%d of %d bytes)", n, len(msg))
		}
		// Drop the connection: on a stream, a partial message ends with
		// it and cannot merge with the next record.
		s.conn.Close()
		s.conn = nil
	}
	return fmt.Errorf("syslog %s: %w", s.opts.Path, err)
}

// Reopen reconnects to the syslog socket.
func (s *SyslogSink) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	if err := s.dial(); err != nil {
		return fmt.Errorf("syslog %s: %w", s.opts.Path, err)
	}
	return nil
}

// Probe reconnects if the last write dropped the connection.
func (s *SyslogSink) Probe() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.conn != nil {
		return nil
	}
	if err := s.dial(); err != nil {
		return fmt.Errorf("syslog %s: %w", s.opts.Path, err)
	}
	return nil
}

// Sync does nothing: the daemon decides about durability.
func (s *SyslogSink) Sync() error { return nil }

// Close closes the connection.
func (s *SyslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}
