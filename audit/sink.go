package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sink is where records go. The Logger calls a sink from one goroutine
// at a time, but Reopen, Sync and Close may come from other goroutines
// than Write, so implementations lock what they share.
type Sink interface {
	// Write writes one record: a complete JSON line ending in '\n'.
	// It must not keep record after returning. On error the record must
	// count as not written: a sink either removes a partial write or makes
	// sure it cannot merge with the next record.
	Write(record []byte) error
	// Reopen reopens the destination (after log rotation). Records already
	// written stay where they are.
	Reopen() error
	// Sync flushes written records to stable storage, if the sink can.
	Sync() error
	// Close releases the sink.
	Close() error
}

// SyncPolicy says when a FileSink calls fsync.
type SyncPolicy int

const (
	// SyncNone leaves flushing to the kernel: a record survives a crash of
	// sockwarden but may be lost on power failure.
	SyncNone SyncPolicy = iota
	// SyncEvery fsyncs each record before the Logger's method returns.
	SyncEvery
	// SyncInterval fsyncs at most every FileOptions.Interval, from a
	// background goroutine, when records were written since the last one.
	SyncInterval
)

// ParseSyncPolicy parses "none", "every" or "interval".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "none", "":
		return SyncNone, nil
	case "every":
		return SyncEvery, nil
	case "interval":
		return SyncInterval, nil
	}
	return 0, fmt.Errorf("audit: unknown sync policy %q (want none, every or interval)", s)
}

// String returns the name ParseSyncPolicy accepts.
func (p SyncPolicy) String() string {
	switch p {
	case SyncNone:
		return "none"
	case SyncEvery:
		return "every"
	case SyncInterval:
		return "interval"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// FileOptions configure a FileSink.
type FileOptions struct {
	// Sync is the fsync policy.
	Sync SyncPolicy
	// Interval is the SyncInterval period; 0 means one second.
	Interval time.Duration
	// Mode is the permission of a file the sink creates; 0 means 0600.
	// An existing file keeps its mode (logrotate's "create" sets it).
	Mode os.FileMode
	// MinFree is the free space Probe requires; 0 means 64 KiB.
	MinFree int64
}

// FileSink appends records to a file opened with O_APPEND|O_CREATE.
//
// A failed write is rolled back: the file is truncated to its size before
// the write, so a partial line (ENOSPC in mid-record) never reaches a
// reader or merges with the next record. If even the truncation fails,
// the next record is preceded by a newline, which ends the fragment; the
// verifier then reports that fragment as a malformed line.
//
// If the file is removed (its link count drops to 0), the next write
// recreates it at the same path, so records never go to an unlinked
// inode. The chain shows the removal: the new file starts in the middle
// of a run.
type FileSink struct {
	path string
	opts FileOptions
	root bool // the server is root: it may use the reserved blocks

	mu     sync.Mutex
	f      *os.File
	dirty  bool // written since the last fsync
	needNL bool // a partial record could not be removed
	stop   chan struct{}
	done   chan struct{}
}

// OpenFile opens (creating it if needed) the audit file at path.
func OpenFile(path string, opts FileOptions) (*FileSink, error) {
	if opts.Mode == 0 {
		opts.Mode = 0o600
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.MinFree <= 0 {
		opts.MinFree = 64 << 10
	}
	s := &FileSink{path: path, opts: opts, root: os.Geteuid() == 0}
	f, err := s.open()
	if err != nil {
		return nil, err
	}
	s.f = f
	if opts.Sync == SyncInterval {
		s.stop = make(chan struct{})
		s.done = make(chan struct{})
		go s.syncLoop(s.stop, s.done)
	}
	return s, nil
}

func (s *FileSink) open() (*os.File, error) {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_CLOEXEC, s.opts.Mode)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (s *FileSink) Path() string { return s.path }

// ensureFileLocked returns the state of the open file, recreating the
// file first if it was removed behind our back. s.mu must be held.
func (s *FileSink) ensureFileLocked() (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.f.Fd()), &st); err != nil {
		return st, fmt.Errorf("fstat %s: %w", s.path, err)
	}
	if st.Nlink == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG {
		f, err := s.open()
		if err != nil {
			return st, err
		}
		s.f.Close()
		s.f = f
		if err := unix.Fstat(int(s.f.Fd()), &st); err != nil {
			return st, fmt.Errorf("fstat %s: %w", s.path, err)
		}
	}
	return st, nil
}

// Write appends record with a single write(2).
func (s *FileSink) Write(record []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	st, err := s.ensureFileLocked()
	if err != nil {
		return err
	}
	if s.needNL {
		if _, err := s.f.Write([]byte{'\n'}); err != nil {
			return err
		}
		s.needNL = false
		st.Size++
	}
	n, err := s.f.Write(record)
	if err == nil && s.opts.Sync == SyncEvery {
		if err = s.f.Sync(); errors.Is(err, syscall.EINVAL) {
			err = nil // not a regular file: nothing to flush
		} else if err != nil {
			n = len(record) // the whole record is in the file but not durable
		}
	}
	if err != nil {
		if n > 0 {
			if terr := s.f.Truncate(st.Size); terr != nil {
				s.needNL = true
			}
		}
		return err
	}
	s.dirty = true
	return nil
}

// Reopen opens the path anew (after logrotate renamed the file) and
// closes the old descriptor. If the path cannot be opened, the sink keeps
// writing to the old file and Reopen returns the error.
func (s *FileSink) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	f, err := s.open()
	if err != nil {
		return err
	}
	if s.dirty {
		s.f.Sync() // best effort: the old file is done
	}
	s.f.Close()
	s.f = f
	s.dirty = false
	s.needNL = false // a new file has no fragment to end
	return nil
}

// Sync fsyncs the file if records were written since the last fsync.
func (s *FileSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncLocked()
}

func (s *FileSink) syncLocked() error {
	if s.f == nil {
		return ErrClosed
	}
	if !s.dirty {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		if errors.Is(err, syscall.EINVAL) { // not a regular file (/dev/stdout, a pipe)
			s.dirty = false
			return nil
		}
		return err
	}
	s.dirty = false
	return nil
}

func (s *FileSink) syncLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.Sync()
		}
	}
}

// Probe checks, without writing, that the file is in place (recreating
// it if it was removed) and that its file system has at least MinFree
// bytes free.
func (s *FileSink) Probe() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	if _, err := s.ensureFileLocked(); err != nil {
		return err
	}
	return s.checkSpaceLocked()
}

// CheckSpace checks that the file's file system has at least MinFree
// bytes free (Probe without the check that the file is in place, which
// the next Write makes anyway).
func (s *FileSink) CheckSpace() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	return s.checkSpaceLocked()
}

func (s *FileSink) checkSpaceLocked() error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(s.f.Fd()), &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", s.path, err)
	}
	free := fs.Bavail
	if s.root {
		free = fs.Bfree // root may use the reserved blocks
	}
	if int64(free)*int64(fs.Bsize) < s.opts.MinFree {
		return fmt.Errorf("audit: %s: %w", s.path, syscall.ENOSPC)
	}
	return nil
}

// Close stops the background fsync, fsyncs and closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	err := s.syncLocked()
	err = errors.Join(err, s.f.Close())
	s.f = nil
	return err
}

// WriterSink writes records to an io.Writer such as os.Stdout. Reopen is
// a no-op; Sync and Close do nothing to the writer (it is not closed).
// A failed or short write cannot be undone on a stream, so the next
// record is preceded by a newline that ends the fragment.
type WriterSink struct {
	mu     sync.Mutex
	w      io.Writer
	needNL bool
}

// NewWriterSink returns a sink writing to w.
func NewWriterSink(w io.Writer) *WriterSink { return &WriterSink{w: w} }

// Write writes record to the writer.
func (s *WriterSink) Write(record []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.needNL {
		if _, err := s.w.Write([]byte{'\n'}); err != nil {
			return err
		}
		s.needNL = false
	}
	n, err := s.w.Write(record)
	if err == nil && n < len(record) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 {
			s.needNL = true
		}
		return err
	}
	return nil
}

// Reopen does nothing.
func (s *WriterSink) Reopen() error { return nil }

// Sync does nothing.
func (s *WriterSink) Sync() error { return nil }

// Close does nothing; the writer stays open.
func (s *WriterSink) Close() error { return nil }
