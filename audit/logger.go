package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Genesis is the chain.prev value of the first record of a server run.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// ErrClosed is returned by a Logger or sink used after Close.
var ErrClosed = errors.New("audit: closed")

// WriteError is returned, and kept as the Logger's health, when a record
// could not be written to the sink. The record was not written (see the
// package documentation) and its sequence number was not consumed.
type WriteError struct {
	Action string // event.action of the record that failed
	Seq    uint64 // the sequence number it would have had
	Err    error  // the sink's error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("audit: cannot write %s record (seq %d): %v", e.Action, e.Seq, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// Options configure a Logger. The zero value is usable.
type Options struct {
	// Host is host.name in every record; empty means os.Hostname.
	Host string
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
	// MaxRecordBytes bounds every record (see Bounded records in
	// bound.go); 0 means DefaultMaxRecordBytes, and values under
	// MinMaxRecordBytes are raised to it.
	MaxRecordBytes int
	// OnHealthChange, if set, is called (without any lock of the Logger
	// held) with the new health each time it changes: the write error
	// when the Logger becomes unhealthy, nil when it recovers.
	OnHealthChange func(err error)
}

// Logger writes audit records to a Sink. It is safe for concurrent use:
// sequence numbering, hash chaining and the write happen under one
// mutex, so records appear in the sink in seq order.
type Logger struct {
	mu        sync.Mutex
	maxRecord int
	sink      Sink
	now       func() time.Time
	hostJSON  []byte
	onHealth  func(error)
	pid       int

	seq     uint64   // seq of the last record written
	prevHex [64]byte // chain.hash of the last record written
	buf     []byte
	closed  bool

	health atomic.Pointer[error] // nil: healthy

	written, bytes, failures atomic.Uint64 // see Stats
}

// Stats are a Logger's counters since it was made.
type Stats struct {
	// Records and Bytes count the records written and their bytes;
	// Failures the records that could not be written.
	Records, Bytes, Failures uint64
}

// Stats returns the Logger's counters.
func (l *Logger) Stats() Stats {
	return Stats{Records: l.written.Load(), Bytes: l.bytes.Load(), Failures: l.failures.Load()}
}

// maxKeptBuf bounds the encoding buffer kept between records.
const maxKeptBuf = 64 << 10

// New returns a Logger writing to sink. It writes nothing by itself: the
// server should log ServerStart first, which becomes seq 1, the genesis
// of this run's chain.
func New(sink Sink, opts Options) *Logger {
	host := opts.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	maxRecord := opts.MaxRecordBytes
	switch {
	case maxRecord == 0:
		maxRecord = DefaultMaxRecordBytes
	case maxRecord < MinMaxRecordBytes:
		maxRecord = MinMaxRecordBytes
	}
	l := &Logger{
		maxRecord: maxRecord,
		sink:      sink,
		now:       now,
		hostJSON:  appendString(nil, host),
		onHealth:  opts.OnHealthChange,
		pid:       os.Getpid(),
		buf:       make([]byte, 0, 1024),
	}
	copy(l.prevHex[:], Genesis)
	return l
}

// Healthy returns nil when the last attempt to write a record succeeded,
// else that attempt's *WriteError. While it is non-nil the server should
// refuse new requests (unless configured to continue).
func (l *Logger) Healthy() error {
	if p := l.health.Load(); p != nil {
		return *p
	}
	return nil
}

// Prober is implemented by sinks that can tell, without writing a
// record, whether a write would probably succeed now; the check may
// re-establish the sink (reopen a removed file, redial syslog).
type Prober interface {
	Probe() error
}

// Probe re-checks an unhealthy Logger without writing a record: if the
// sink implements Prober and its probe succeeds, the Logger becomes
// healthy again. It returns the resulting health. A healthy Logger is
// not probed. Sinks without a probe recover only through a record that
// is written successfully.
func (l *Logger) Probe() error {
	l.mu.Lock()
	cur := l.Healthy()
	if cur == nil || l.closed {
		l.mu.Unlock()
		return cur
	}
	p, ok := l.sink.(Prober)
	if !ok {
		l.mu.Unlock()
		return cur
	}
	err := p.Probe()
	if err == nil {
		l.health.Store(nil)
	}
	l.mu.Unlock()
	if err == nil {
		if l.onHealth != nil {
			l.onHealth(nil)
		}
		return nil
	}
	return cur
}

// Admit reports whether a new request may start: the Logger must be
// healthy (or recover on Probe), and a sink that implements Prober must
// pass its probe even when healthy (for a file: at least MinFree bytes
// free). The reserve this keeps is what lets the records of requests
// already running (their kills and exits) still be written when the
// file system fills up.
func (l *Logger) Admit() error {
	if l.Healthy() != nil {
		return l.Probe()
	}
	p, ok := l.sink.(Prober)
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if c, ok := p.(spaceChecker); ok {
		return c.CheckSpace() // healthy: the decision's Write checks the file
	}
	return p.Probe()
}

// spaceChecker is a Prober that can check its free space alone.
type spaceChecker interface {
	CheckSpace() error
}

// Last returns the seq and chain hash of the last record written (0 and
// Genesis before the first).
func (l *Logger) Last() (seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, string(l.prevHex[:])
}

// Reopen reopens the sink (SIGHUP after log rotation). The chain and
// seq continue: the first record in the new file links to the last one
// in the old file.
func (l *Logger) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.sink.Reopen()
}

// Sync flushes the sink to stable storage where that means something.
func (l *Logger) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.sink.Sync()
}

// Close syncs and closes the sink. Later calls return ErrClosed.
func (l *Logger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	return errors.Join(l.sink.Sync(), l.sink.Close())
}

// begin locks the Logger and starts a record. On error the lock is
// released.
func (l *Logger) begin(h *head) ([]byte, time.Time, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, time.Time{}, ErrClosed
	}
	now := l.now()
	return l.appendHead(l.buf[:0], h, now, l.seq+1), now, nil
}

// finish chains, writes and unlocks. On success the record's seq and hash
// become the Logger's; on failure nothing changes but the health, so the
// next record takes the same seq and links to the same predecessor.
func (l *Logger) finish(b []byte, action string) error {
	b = append(b, `"chain":{"prev":"`...)
	b = append(b, l.prevHex[:]...)
	b = append(b, `",`...)
	sum := sha256.Sum256(b)
	b = append(b, `"hash":"`...)
	b = hex.AppendEncode(b, sum[:])
	b = append(b, "\"}}}\n"...)

	seq := l.seq + 1
	err := l.sink.Write(b)
	if cap(b) <= maxKeptBuf {
		l.buf = b[:0]
	}
	var changed bool
	if err != nil {
		l.failures.Add(1)
		health := error(&WriteError{Action: action, Seq: seq, Err: err})
		changed = l.health.Load() == nil
		l.health.Store(&health)
		err = health
	} else {
		l.written.Add(1)
		l.bytes.Add(uint64(len(b)))
		l.seq = seq
		hex.Encode(l.prevHex[:], sum[:])
		if l.health.Load() != nil {
			l.health.Store(nil)
			changed = true
		}
	}
	l.mu.Unlock()
	if changed && l.onHealth != nil {
		l.onHealth(err)
	}
	return err
}

// Decision writes an exec.decision record.
func (l *Logger) Decision(d Decision) error {
	h := head{action: ActionDecision, success: d.Allow && d.Error == "", requestID: d.RequestID,
		duration: int64(d.EvalDuration), hasDur: true}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	sum := ArgvSHA256(d.Argv)
	shown, cut := boundDecision(&d, sum, len(b), l.maxRecord)
	return l.finish(appendDecision(b, shown, len(d.Argv), sum, cut), h.action)
}

// Start writes an exec.start record.
func (l *Logger) Start(s Start) error {
	h := head{action: ActionStart, success: s.Error == "", requestID: s.RequestID}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	// The executable is the caller's argv[0] when absolute, and an error
	// may quote it: a path's worth (PATH_MAX) each at most.
	for _, f := range []*string{&s.Exe, &s.Dir, &s.Error} {
		if len(*f) > 4096 {
			*f = cutUTF8(*f, 4096) + "…"
		}
	}
	return l.finish(appendStart(b, &s), h.action)
}

// Exit writes an exec.exit record. Its outcome is success for exit code
// 0 and failure for any other code or a signal.
func (l *Logger) Exit(e Exit) error {
	h := head{action: ActionExit, success: e.Signal == "" && e.ExitCode == 0, requestID: e.RequestID,
		duration: int64(e.Duration), hasDur: true}
	b, now, err := l.begin(&h)
	if err != nil {
		return err
	}
	end := e.End
	if end.IsZero() {
		end = now
	}
	return l.finish(appendExit(b, &e, end, l.maxRecord-chainReserve), h.action)
}

// Denials writes a sandbox.denials record. Its outcome is "success" when
// the report is complete.
func (l *Logger) Denials(d Denials) error {
	h := head{action: ActionDenials, success: d.Denials.Complete, requestID: d.RequestID}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendDenialsRecord(b, &d, l.maxRecord-chainReserve), h.action)
}

// Kill writes an exec.kill record.
func (l *Logger) Kill(k Kill) error {
	h := head{action: ActionKill, success: k.Error == "", requestID: k.RequestID, reason: k.Reason}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendKill(b, &k), h.action)
}

// ProtocolError writes a protocol.error record.
func (l *Logger) ProtocolError(p ProtocolError) error {
	h := head{action: ActionProtocolError, success: false, requestID: p.RequestID}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendProtocolError(b, &p), h.action)
}

// Quota writes a quota.exceeded record.
func (l *Logger) Quota(q Quota) error {
	h := head{action: ActionQuota, success: false}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendQuota(b, &q), h.action)
}

// PolicyReload writes a policy.reload record.
func (l *Logger) PolicyReload(p PolicyReload) error {
	h := head{action: ActionPolicyReload, success: p.Error == ""}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendPolicyReload(b, &p), h.action)
}

// ServerStart writes a server.start record. Log it first: it is meant to
// be seq 1 of the run.
func (l *Logger) ServerStart(s ServerEvent) error {
	return l.server(ActionServerStart, &s)
}

// ServerStop writes a server.stop record.
func (l *Logger) ServerStop(s ServerEvent) error {
	return l.server(ActionServerStop, &s)
}

func (l *Logger) server(action string, s *ServerEvent) error {
	details, err := marshalDetails(s.Details)
	if err != nil {
		return err
	}
	pid := s.PID
	if pid == 0 {
		pid = l.pid
	}
	h := head{action: action, success: s.Error == ""}
	b, _, err := l.begin(&h)
	if err != nil {
		return err
	}
	return l.finish(appendServer(b, s, pid, details), action)
}
