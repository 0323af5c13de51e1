// Package kaudit talks to the Linux kernel's audit subsystem over a
// NETLINK_AUDIT socket: it reads and sets the audit status (AUDIT_GET,
// AUDIT_SET) and reads the records the kernel multicasts to the
// AUDIT_NLGRP_READLOG group, the way journald and auditbeat do, without
// being the host's audit daemon.
//
// Reading the records needs CAP_AUDIT_READ and the initial network
// namespace; setting the status needs CAP_AUDIT_CONTROL. The kernel emits
// records only while its audit is enabled ([Status].Enabled).
package kaudit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Status is the kernel's struct audit_status.
type Status struct {
	Mask         uint32
	Enabled      uint32 // 0 off, 1 on, 2 on and locked
	Failure      uint32
	PID          uint32 // the audit daemon's pid, 0 without one
	RateLimit    uint32
	BacklogLimit uint32
	Lost         uint32 // records the kernel dropped since boot
	Backlog      uint32
	// Newer fields; a kernel that does not know them leaves them 0.
	FeatureBitmap         uint32
	BacklogWaitTime       uint32
	BacklogWaitTimeActual uint32
}

// GetStatus returns the kernel's audit status.
func GetStatus() (Status, error) {
	var st Status
	reply, err := request(unix.AUDIT_GET, nil)
	if err != nil {
		return st, fmt.Errorf("kaudit: get status: %w", err)
	}
	n := copy(unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)), reply)
	if n < int(unsafe.Offsetof(st.FeatureBitmap)) {
		return st, fmt.Errorf("kaudit: get status: short reply (%d bytes)", n)
	}
	return st, nil
}

// SetEnabled turns the kernel's audit on or off, for the whole host. It
// fails with EPERM when the setting is locked (Enabled 2).
func SetEnabled(on bool) error {
	st := Status{Mask: unix.AUDIT_STATUS_ENABLED}
	if on {
		st.Enabled = 1
	}
	if err := set(st); err != nil {
		return fmt.Errorf("kaudit: set enabled=%d: %w", st.Enabled, err)
	}
	return nil
}

// SetBacklogLimit sets how many records the kernel queues for its
// readers before it drops them (64 by default), for the whole host.
func SetBacklogLimit(n uint32) error {
	if err := set(Status{Mask: unix.AUDIT_STATUS_BACKLOG_LIMIT, BacklogLimit: n}); err != nil {
		return fmt.Errorf("kaudit: set backlog_limit=%d: %w", n, err)
	}
	return nil
}

func set(st Status) error {
	_, err := request(unix.AUDIT_SET, unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st)))
	return err
}

// request sends one message to the kernel and returns the payload of its
// reply: for AUDIT_GET the status, for AUDIT_SET nothing (the ack).
func request(typ uint16, payload []byte) ([]byte, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// Replies never take long; a kernel that does not answer is a bug,
	// not a reason to hang the server.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	copy(msg[unix.NLMSG_HDRLEN:], payload)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	var data []byte
	// AUDIT_GET answers with the status, then the ack; AUDIT_SET with the
	// ack only. An ack (NLMSG_ERROR) with error 0 ends the exchange.
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("netlink: short error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return nil, syscall.Errno(-errno)
				}
				if typ != unix.AUDIT_GET || data != nil {
					return data, nil
				}
			case typ:
				data = append([]byte(nil), m.Data...)
				if typ == unix.AUDIT_GET {
					return data, nil
				}
			}
		}
	}
}

// A Reader receives the audit records the kernel multicasts. Its socket
// is non-blocking and registered with the Go runtime's poller, so Close
// ends a Read in progress.
type Reader struct {
	closed atomic.Bool
	f      *os.File
	rc     syscall.RawConn
	buf    []byte
}

// ErrOverrun is returned by [Reader.Read] when records were lost because
// the reader's receive buffer was full; reading goes on after it.
var ErrOverrun = errors.New("kaudit: receive buffer overrun: records were lost")

// ErrMalformed is wrapped by the error [Reader.Read] returns for a
// message it cannot use; reading goes on after it. Any other error ends
// the reading.
var ErrMalformed = errors.New("kaudit: malformed message")

// Listen joins the AUDIT_NLGRP_READLOG group. rcvbuf, when above 0, is
// the socket's receive buffer in bytes (set with SO_RCVBUFFORCE where
// the process may, else SO_RCVBUF within the host's rmem_max).
func Listen(rcvbuf int) (*Reader, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_AUDIT)
	if err != nil {
		return nil, fmt.Errorf("kaudit: netlink socket: %w", err)
	}
	if rcvbuf > 0 {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.AUDIT_NLGRP_READLOG}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kaudit: join the audit read-log group (needs CAP_AUDIT_READ and the initial network namespace): %w", err)
	}
	f := os.NewFile(uintptr(fd), "audit-netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kaudit: %w", err)
	}
	return &Reader{f: f, rc: rc, buf: make([]byte, 1<<16)}, nil
}

// Record is one audit record as the kernel sent it.
type Record struct {
	// Type is the record type (unix.AUDIT_LANDLOCK_ACCESS, ...).
	Type uint16
	// Data is the text: "audit(SECONDS.MILLIS:SERIAL): key=value ...".
	// It is valid until the next Read.
	Data []byte
}

// Read returns the next record. After lost records it returns
// ErrOverrun, after a message it cannot use an error wrapping
// ErrMalformed; any other error (after Close, one wrapping
// os.ErrClosed) means the reading is over.
func (r *Reader) Read() (Record, error) {
	var (
		n    int
		from unix.Sockaddr
		rerr error
	)
	err := r.rc.Read(func(fd uintptr) bool {
		n, from, rerr = unix.Recvfrom(int(fd), r.buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		if r.closed.Load() {
			err = os.ErrClosed
		}
		return Record{}, fmt.Errorf("kaudit: read: %w", err)
	}
	if rerr == unix.ENOBUFS {
		return Record{}, ErrOverrun
	}
	if rerr != nil {
		return Record{}, fmt.Errorf("kaudit: read: %w", rerr)
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return Record{}, fmt.Errorf("%w: not from the kernel", ErrMalformed)
	}
	if n < unix.NLMSG_HDRLEN {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrMalformed, n)
	}
	// The kernel sends one record per message, its length in the header
	// (multicast records do not always count the header in it).
	typ := binary.NativeEndian.Uint16(r.buf[4:])
	data := r.buf[unix.NLMSG_HDRLEN:n]
	if l := int(binary.NativeEndian.Uint32(r.buf[0:])); l >= unix.NLMSG_HDRLEN && l-unix.NLMSG_HDRLEN < len(data) {
		data = data[:l-unix.NLMSG_HDRLEN]
	}
	for len(data) > 0 && (data[len(data)-1] == 0 || data[len(data)-1] == '\n') {
		data = data[:len(data)-1]
	}
	return Record{Type: typ, Data: data}, nil
}

// Close closes the socket; a Read in progress returns.
func (r *Reader) Close() error {
	r.closed.Store(true)
	return r.f.Close()
}
