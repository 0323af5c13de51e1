package bench

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Ways FindServerPID found a pid.
const (
	PIDFromSockDiag  = "sock_diag"
	PIDFromProcNet   = "proc_net_unix"
	PIDFromPeerCreds = "peercred"
)

// FindServerPID returns the pid of the process listening on the UNIX
// socket at path, and how it was found:
//
//  1. sock_diag (what "ss -xlp" uses): the kernel lists the listening
//     UNIX sockets with the device and inode of the file each is bound to,
//     which identify the socket file even after it was renamed into place
//     (sockwarden binds a temporary name, then renames it, so the path
//     the kernel recorded at bind time is not the socket's path);
//  2. /proc/net/unix: the listening socket whose recorded path is path;
//
// then, for the socket inode found, the process holding a descriptor
// "socket:[inode]" in /proc/*/fd (all processes are visible to root;
// otherwise only one's own). Failing both, 3. the SO_PEERCRED of a
// connection, which names the process that called listen(2): wrong for a
// socket-activated server, hence last.
func FindServerPID(path string) (int, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, "", err
	}
	var errs []error
	if inodes, err := diagListenerInodes(abs); err != nil {
		errs = append(errs, fmt.Errorf("sock_diag: %w", err))
	} else if pid, err := pidHoldingSocket(inodes); err != nil {
		errs = append(errs, fmt.Errorf("sock_diag: %w", err))
	} else {
		return pid, PIDFromSockDiag, nil
	}
	if inodes, err := procNetUnixInodes("/proc/net/unix", abs); err != nil {
		errs = append(errs, fmt.Errorf("/proc/net/unix: %w", err))
	} else if pid, err := pidHoldingSocket(inodes); err != nil {
		errs = append(errs, fmt.Errorf("/proc/net/unix: %w", err))
	} else {
		return pid, PIDFromProcNet, nil
	}
	if pid, err := peerCredPID(abs); err != nil {
		errs = append(errs, fmt.Errorf("SO_PEERCRED: %w", err))
	} else {
		return pid, PIDFromPeerCreds, nil
	}
	return 0, "", errors.Join(errs...)
}

// Netlink sock_diag for AF_UNIX (linux/unix_diag.h).
const (
	udiagShowVFS = 0x2 // UDIAG_SHOW_VFS
	unixDiagVFS  = 1   // UNIX_DIAG_VFS attribute
	tcpListen    = 10  // the state of a listening UNIX socket
)

// diagListenerInodes returns the socket inodes of the listening UNIX
// sockets bound to the file at path.
func diagListenerInodes(path string) ([]uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s is not a socket", path)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)

	// struct nlmsghdr, then struct unix_diag_req.
	req := make([]byte, unix.NLMSG_HDRLEN+24)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // seq
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], 1<<tcpListen) // udiag_states
	ne.PutUint32(r[12:], udiagShowVFS)
	ne.PutUint32(r[16:], ^uint32(0)) // no cookie
	ne.PutUint32(r[20:], ^uint32(0))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var inodes []uint64
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if len(inodes) == 0 {
					return nil, errors.New("no listening socket is bound to that file")
				}
				return inodes, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return nil, unix.Errno(-e)
					}
				}
				continue
			}
			// struct unix_diag_msg: family, type, state, pad, ino, cookie[2].
			if len(m.Data) < 16 {
				continue
			}
			ino := ne.Uint32(m.Data[4:])
			for a := m.Data[16:]; len(a) >= 4; {
				l, typ := int(ne.Uint16(a)), ne.Uint16(a[2:])
				if l < 4 || l > len(a) {
					break
				}
				if typ == unixDiagVFS && l >= 12 {
					vino, vdev := ne.Uint32(a[4:]), ne.Uint32(a[8:])
					// The kernel's dev_t: major << 20 | minor.
					if uint64(vino) == st.Ino && vdev>>20 == unix.Major(st.Dev) && vdev&(1<<20-1) == unix.Minor(st.Dev) {
						inodes = append(inodes, uint64(ino))
					}
				}
				a = a[min((l+3)&^3, len(a)):]
			}
		}
	}
}

// procNetUnixInodes returns the inodes of the listening sockets that
// /proc/net/unix (the file at table) lists with the given path.
func procNetUnixInodes(table, path string) ([]uint64, error) {
	f, err := os.Open(table)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseProcNetUnix(f, path)
}

// parseProcNetUnix reads the /proc/net/unix format:
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	0000000066c78acb: 00000002 00000000 00010000 0001 01 72967 /tmp/s.sock
//
// A listening socket has the __SO_ACCEPTCON flag (0x10000).
func parseProcNetUnix(r io.Reader, path string) ([]uint64, error) {
	sc := bufio.NewScanner(r)
	var inodes []uint64
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&0x10000 == 0 {
			continue
		}
		if pathField(sc.Text()) != path {
			continue
		}
		ino, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil {
			continue
		}
		inodes = append(inodes, ino)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(inodes) == 0 {
		return nil, fmt.Errorf("no listening socket with path %s", path)
	}
	return inodes, nil
}

// pathField returns what follows the seventh field of a /proc/net/unix
// line: the path, which may hold spaces.
func pathField(line string) string {
	for range 7 {
		line = strings.TrimLeft(line, " ")
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return ""
		}
		line = line[i:]
	}
	return strings.TrimPrefix(line, " ")
}

// pidHoldingSocket returns the process that has a descriptor for one of
// the socket inodes. When several do (a socket-activated server and its
// manager), it prefers a process other than pid 1, then the lowest pid.
func pidHoldingSocket(inodes []uint64) (int, error) {
	want := make(map[string]bool, len(inodes))
	for _, ino := range inodes {
		want["socket:["+strconv.FormatUint(ino, 10)+"]"] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name() + "/fd/"
		d, err := os.Open(dir)
		if err != nil {
			continue // gone, or not ours to read
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			if l, err := os.Readlink(dir + n); err == nil && want[l] {
				pids = append(pids, pid)
				break
			}
		}
	}
	if len(pids) == 0 {
		return 0, fmt.Errorf("no visible process holds socket inode %v", inodes)
	}
	slices.SortFunc(pids, func(a, b int) int {
		if (a == 1) != (b == 1) {
			if a == 1 {
				return 1
			}
			return -1
		}
		return a - b
	})
	return pids[0], nil
}

// peerCredPID connects and returns the pid the kernel recorded for the
// listening side (the process that called listen(2)). The connection is
// closed without a request: a server sees a client that left.
func peerCredPID(path string) (int, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	if cred.Pid <= 0 {
		return 0, errors.New("no pid recorded")
	}
	return int(cred.Pid), nil
}
