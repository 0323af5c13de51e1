package sandbox

import "golang.org/x/sys/unix"

const mptcpFilterSupported = true

// amd64: socket is 41, also reachable through the x32 ABI (bit 30 set);
// the i386 compat ABI has socket 359 and socketcall 102.
var mptcpFilterProg = mptcpFilter(unix.AUDIT_ARCH_X86_64, []uint32{41, 0x40000000 | 41},
	unix.AUDIT_ARCH_I386, 359, 102)
