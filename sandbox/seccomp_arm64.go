package sandbox

import "golang.org/x/sys/unix"

const mptcpFilterSupported = true

// arm64: socket is 198; the 32-bit ARM compat ABI has socket 281 and
// socketcall 102.
var mptcpFilterProg = mptcpFilter(unix.AUDIT_ARCH_AARCH64, []uint32{198},
	unix.AUDIT_ARCH_ARM, 281, 102)
