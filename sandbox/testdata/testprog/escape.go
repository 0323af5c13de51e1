package main

// Probes that try to get around the sandbox, as code running inside an
// allowed program would.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var loopback = [4]byte{127, 0, 0, 1}

// escape runs the probe cmd and reports whether cmd is one.
func escape(cmd string, arg func(int) string) bool {
	port := func() int { n, _ := strconv.Atoi(arg(2)); return n }
	switch cmd {
	case "tfo": // tfo PORT: TCP Fast Open sendto, then read the reply
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			report(fmt.Errorf("socket: %w", err))
			return true
		}
		if err := unix.Sendto(fd, []byte("ping\n"), unix.MSG_FASTOPEN, &unix.SockaddrInet4{Port: port(), Addr: loopback}); err != nil {
			report(fmt.Errorf("sendto: %w", err))
			return true
		}
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil {
			report(fmt.Errorf("read: %w", err))
			return true
		}
		fmt.Printf("ok %s", buf[:n])
	case "uring-connect", "uring-bind": // uring-connect PORT: an MPTCP socket made by io_uring
		fd, err := uringSocket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP)
		if err != nil {
			report(err)
			return true
		}
		sa := &unix.SockaddrInet4{Port: port(), Addr: loopback}
		if cmd == "uring-connect" {
			report(unix.Connect(fd, sa))
			return true
		}
		if err := unix.Bind(fd, sa); err != nil {
			report(fmt.Errorf("bind: %w", err))
			return true
		}
		report(unix.Listen(fd, 1))
	case "udp": // udp PORT: send a datagram to 127.0.0.1:PORT
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			report(fmt.Errorf("socket: %w", err))
			return true
		}
		report(unix.Sendto(fd, []byte("hello"), 0, &unix.SockaddrInet4{Port: port(), Addr: loopback}))
	case "clone-newuser": // a child in a user namespace of its own
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
		report(cmd.Run())
	case "shm-write": // shm-write KEY: leave a System V segment holding "secret"
		key, _ := strconv.Atoi(arg(2))
		id, err := unix.SysvShmGet(key, 4096, unix.IPC_CREAT|0o600)
		if err != nil {
			report(fmt.Errorf("shmget: %w", err))
			return true
		}
		b, err := unix.SysvShmAttach(id, 0, 0)
		if err != nil {
			report(fmt.Errorf("shmat: %w", err))
			return true
		}
		copy(b, "secret")
		report(unix.SysvShmDetach(b))
	case "shm-read": // shm-read KEY: what the segment holds
		key, _ := strconv.Atoi(arg(2))
		id, err := unix.SysvShmGet(key, 0, 0)
		if err != nil {
			report(fmt.Errorf("shmget: %w", err))
			return true
		}
		b, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
		if err != nil {
			report(fmt.Errorf("shmat: %w", err))
			return true
		}
		fmt.Printf("ok %s\n", strings.TrimRight(string(b[:16]), "\x00"))
	case "abstract-listen": // abstract-listen NAME: what the first client sends within 3 s
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + arg(2)})
		}
		if err == nil {
			err = unix.Listen(fd, 1)
		}
		if err != nil {
			report(err)
			return true
		}
		fmt.Println("listening")
		tv := unix.Timeval{Sec: 3}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		c, _, err := unix.Accept(fd)
		if err != nil {
			report(fmt.Errorf("accept: %w", err))
			return true
		}
		buf := make([]byte, 64)
		n, _ := unix.Read(c, buf)
		fmt.Printf("ok %s\n", buf[:n])
	case "interfaces": // the network interfaces (a netlink route dump), "name:up|down"
		ifs, err := net.Interfaces()
		if err != nil {
			report(err)
			return true
		}
		var out []string
		for _, i := range ifs {
			state := "down"
			if i.Flags&net.FlagUp != 0 {
				state = "up"
			}
			out = append(out, i.Name+":"+state)
		}
		fmt.Println("ok", strings.Join(out, " "))
	case "key-add": // key-add NAME DATA: a "user" key in the user keyring (@u), readable by the uid
		// Possess @u, as a login session does (pam_keyinit links it).
		_, err := unix.KeyctlInt(unix.KEYCTL_LINK, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
		id := 0
		if err == nil {
			id, err = unix.AddKey("user", arg(2), []byte(arg(3)), unix.KEY_SPEC_USER_KEYRING)
		}
		if err == nil {
			err = unix.KeyctlSetperm(id, 0x3f3f0000) // possessor and user: all
		}
		report(err)
	case "key-read": // key-read NAME: the key NAME of the user keyring
		_, err := unix.KeyctlInt(unix.KEYCTL_LINK, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
		if err != nil {
			report(err)
			return true
		}
		id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", arg(2), 0)
		if err != nil {
			report(err)
			return true
		}
		buf := make([]byte, 256)
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
		if err != nil {
			report(err)
			return true
		}
		fmt.Printf("ok %s\n", buf[:n])
	case "key-clear": // empty the user keyring
		_, err := unix.KeyctlInt(unix.KEYCTL_LINK, unix.KEY_SPEC_USER_KEYRING, unix.KEY_SPEC_SESSION_KEYRING, 0, 0)
		if err == nil {
			_, err = unix.KeyctlInt(unix.KEYCTL_CLEAR, unix.KEY_SPEC_USER_KEYRING, 0, 0, 0)
		}
		report(err)
	case "ptrace": // ptrace PID: attach to another process, and detach
		pid, _ := strconv.Atoi(arg(2))
		if err := unix.PtraceAttach(pid); err != nil {
			report(err)
			return true
		}
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WALL, nil)
		report(unix.PtraceDetach(pid))
	case "environ": // environ PID: another process's environment
		b, err := os.ReadFile("/proc/" + arg(2) + "/environ")
		if err != nil {
			report(err)
			return true
		}
		fmt.Printf("ok %s\n", strings.ReplaceAll(string(b), "\x00", " "))
	default:
		return false
	}
	return true
}

// io_uring's ABI, as much as one IORING_OP_SOCKET needs.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

const (
	ioringOpSocket  = 45
	ioringOffSQRing = 0
	ioringOffCQRing = 0x8000000
	ioringOffSQEs   = 0x10000000
	ioringGetEvents = 1
)

// uringSocket makes a socket with an io_uring IORING_OP_SOCKET request.
func uringSocket(domain, typ, proto int) (int, error) {
	var p uringParams
	r, _, e := syscall.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return -1, fmt.Errorf("io_uring_setup: %w", e)
	}
	ring := int(r)
	sq, err := unix.Mmap(ring, ioringOffSQRing, int(p.sqOff.array+p.sqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return -1, fmt.Errorf("mmap sq: %w", err)
	}
	cq, err := unix.Mmap(ring, ioringOffCQRing, int(p.cqOff.cqes+p.cqEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return -1, fmt.Errorf("mmap cq: %w", err)
	}
	sqes, err := unix.Mmap(ring, ioringOffSQEs, int(p.sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return -1, fmt.Errorf("mmap sqes: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	sqe := sqes[:64]
	clear(sqe)
	sqe[0] = ioringOpSocket
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(domain) // fd: the domain
	*(*uint64)(unsafe.Pointer(&sqe[8])) = uint64(typ)  // off: the type
	*u32(sqe, 24) = uint32(proto)                      // len: the protocol
	tail := *u32(sq, p.sqOff.tail)
	*u32(sq, p.sqOff.array+(tail&*u32(sq, p.sqOff.ringMask))*4) = 0
	*u32(sq, p.sqOff.tail) = tail + 1
	if _, _, e := syscall.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(ring), 1, 1, ioringGetEvents, 0, 0); e != 0 {
		return -1, fmt.Errorf("io_uring_enter: %w", e)
	}
	head := *u32(cq, p.cqOff.head)
	cqe := p.cqOff.cqes + (head&*u32(cq, p.cqOff.ringMask))*16
	res := *(*int32)(unsafe.Pointer(&cq[cqe+8]))
	if res < 0 {
		return -1, fmt.Errorf("IORING_OP_SOCKET: %w", syscall.Errno(-res))
	}
	return int(res), nil
}
