//go:build !amd64 && !arm64

package sandbox

import "golang.org/x/sys/unix"

// No MPTCP filter for this architecture: a spec restricting TCP reports
// the gap (an error unless BestEffort).
const mptcpFilterSupported = false

var mptcpFilterProg []unix.SockFilter
