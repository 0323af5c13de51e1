package sandbox

import "golang.org/x/sys/unix"

// The MPTCP filter: Landlock's TCP rules (ABI 4) only see sockets of
// protocol IPPROTO_TCP, so a child could otherwise bypass ConnectTCP and
// BindTCP with socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP). When TCP is
// restricted, a seccomp filter makes such socket(2) calls fail with
// EPROTONOSUPPORT, as on a kernel without MPTCP (programs fall back to
// TCP). The child installs the filter on itself before its exec
// (fork.go); nothing of the server has it.

const ipprotoMPTCP = 262

// seccomp_data offsets.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // low 32 bits on little-endian
	offArg2 = 32
)

func bpfStmt(code uint16, k uint32) unix.SockFilter {
	return unix.SockFilter{Code: code, K: k}
}

func bpfJump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// mptcpFilter builds the filter for a native architecture, its socket(2)
// numbers, and an optional compat architecture with its socket(2) and
// socketcall(2) numbers (socketcall's SYS_SOCKET is refused outright,
// its protocol argument being out of the filter's reach).
func mptcpFilter(nativeArch uint32, nativeSocket []uint32, compatArch uint32, compatSocket, compatSocketcall uint32) []unix.SockFilter {
	const (
		ld    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		allow = unix.SECCOMP_RET_ALLOW
		deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPROTONOSUPPORT)
	)
	// Layout (jump offsets are relative to the next instruction):
	//  0 ld arch
	//  1 jeq native ? 2 : 2+len(native)+3
	//  2 ld nr
	//  . jeq socket_i ? checkProto : next      (one per native number)
	//  . ret allow
	//  . checkProto: ld arg2
	//  . jeq MPTCP ? deny : allow
	//  . ret allow
	//  . ret deny
	//  compat: jeq compatArch ? next : allow-end
	//  ...
	var f []unix.SockFilter
	n := len(nativeSocket)
	f = append(f, bpfStmt(ld, offArch))
	// Native block is: ld nr, n jeq, ret allow, ld arg2, jeq, ret allow, ret deny = n+6.
	f = append(f, bpfJump(jeq, nativeArch, 0, uint8(n+6)))
	f = append(f, bpfStmt(ld, offNr))
	for i, nr := range nativeSocket {
		// Jump to "ld arg2", which is after the remaining jeqs and "ret allow".
		f = append(f, bpfJump(jeq, nr, uint8(n-i), 0))
	}
	f = append(f, bpfStmt(ret, allow))
	f = append(f, bpfStmt(ld, offArg2))
	f = append(f, bpfJump(jeq, ipprotoMPTCP, 1, 0))
	f = append(f, bpfStmt(ret, allow))
	f = append(f, bpfStmt(ret, deny))
	if compatArch == 0 {
		return append(f, bpfStmt(ret, allow))
	}
	// Compat block:
	//  c0 jeq compatArch ? c1 : end(allow)
	//  c1 ld nr
	//  c2 jeq compatSocket ? c6 : c3
	//  c3 jeq compatSocketcall ? c8 : c4
	//  c4 ret allow
	//  c5 (unused slot kept simple) ret allow
	//  c6 ld arg2
	//  c7 jeq MPTCP ? deny : allow
	//  c8 ld arg0 (socketcall's call number)
	//  c9 jeq 1 (SYS_SOCKET) ? deny : allow
	//  c10 ret allow
	//  c11 ret deny
	f = append(f,
		bpfJump(jeq, compatArch, 0, 9),       // c0 -> c10
		bpfStmt(ld, offNr),                   // c1
		bpfJump(jeq, compatSocket, 3, 0),     // c2 -> c6
		bpfJump(jeq, compatSocketcall, 4, 0), // c3 -> c8
		bpfStmt(ret, allow),                  // c4
		bpfStmt(ret, allow),                  // c5
		bpfStmt(ld, offArg2),                 // c6
		bpfJump(jeq, ipprotoMPTCP, 3, 2),     // c7 -> c11 : c10
		bpfStmt(ld, offArg0),                 // c8
		bpfJump(jeq, 1, 1, 0),                // c9 -> c11 : c10
		bpfStmt(ret, allow),                  // c10
		bpfStmt(ret, deny),                   // c11
	)
	return f
}
