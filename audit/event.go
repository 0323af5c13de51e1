package audit

import (
	"time"

	"github.com/sockwarden/sockwarden/peer"
)

// Event actions: the value of event.action in a record.
const (
	ActionDecision      = "exec.decision"
	ActionStart         = "exec.start"
	ActionExit          = "exec.exit"
	ActionKill          = "exec.kill"
	ActionProtocolError = "protocol.error"
	// ActionQuota is a caller's connections turned away over its quota,
	// one record per caller per interval with the count.
	ActionQuota = "quota.exceeded"
	// ActionDenials follows an exec.exit whose sandbox denials were not
	// final when it was written (see [Denials]).
	ActionDenials      = "sandbox.denials"
	ActionPolicyReload = "policy.reload"
	ActionServerStart  = "server.start"
	ActionServerStop   = "server.stop"
)

// Kill reasons: the value of event.reason in an exec.kill record.
const (
	KillTimeout     = "timeout"
	KillDisconnect  = "disconnect"
	KillOutputLimit = "output_limit"
	// KillStdinLimit: the client sent more stdin than the request's cap.
	KillStdinLimit = "stdin_limit"
	// KillOutputBuffer: more output waited for a client still sending its
	// stdin than the server buffers (server.output_buffer).
	KillOutputBuffer = "output_buffer"
	KillShutdown     = "shutdown"
	// KillProtocolError: the client sent malformed stdin while the child ran.
	KillProtocolError = "protocol_error"
)

// Peer is the client at the other end of the socket (see package peer):
// UID, GID and PID come from the kernel (SO_PEERCRED); User, Group and
// Exe are looked up for convenience and may be empty.
type Peer = peer.Peer

// Decision is the policy's verdict on one request (exec.decision).
type Decision struct {
	// RequestID correlates the records of one request.
	RequestID string
	// Allow is the verdict. A deny is written with event.outcome "failure".
	Allow bool
	// Message is the policy's message (shown to the client on deny).
	Message string
	// Reasons are the policy's audit-only explanations.
	Reasons []string
	// Argv is the requested argv, Argv[0] included.
	Argv []string
	// Exe is argv[0] resolved to an absolute path; empty if it did not resolve.
	Exe string
	// Peer is the client.
	Peer Peer
	// Revision identifies the policy that decided.
	Revision string
	// EvalDuration is how long the evaluation took (event.duration); for
	// a cached decision, how long the lookup took.
	EvalDuration time.Duration
	// Cached reports that the decision is a stored one of the same policy
	// revision for the same request (argv, exe, peer, socket): the policy
	// is a pure function of those (see policy.Engine.Cacheable).
	Cached bool
	// Error is set when evaluation failed (which is a deny).
	Error string
	// Masked are the JSON pointers of the arguments of Argv that were
	// masked (see [Mask]); Argv is then the masked argv.
	Masked []string
}

// Group is a group ID and, when known, its name.
type Group struct {
	ID   uint32 // group ID
	Name string // group name; may be empty
}

// RunAs is the identity a child runs with.
type RunAs struct {
	UID   uint32 // user ID
	GID   uint32 // primary group ID
	User  string // user name; may be empty
	Group string // group name; may be empty
	// Groups are the supplementary groups.
	Groups []Group
	// Dynamic is true when the uid is the request's own, from the
	// server's dynamic uid range.
	Dynamic bool
}

// Landlock summarises the Landlock ruleset applied to a child.
type Landlock struct {
	// ABI is the Landlock ABI version that was enforced.
	ABI int
	// RO and RW are the paths granted read-only and read-write access.
	RO, RW []string
	// TCPRestricted says whether TCP is restricted at all: when false
	// (the decision named no TCP ports), ConnectTCP and BindTCP are empty
	// and every port is open; when true, they are the only ports open
	// (empty: none).
	TCPRestricted bool
	// ConnectTCP and BindTCP are the TCP ports the child may connect to
	// and bind.
	ConnectTCP, BindTCP []uint16
	// Dropped are the paths of the decision that do not exist on this
	// host and were left out of the rules (which only takes access away).
	Dropped []string
	// BestEffort is true when the policy allowed running with a weaker
	// ruleset than requested if the kernel lacks an ABI.
	BestEffort bool
	// Downgraded is true when rules were actually dropped for that reason.
	Downgraded bool
}

// Seccomp summarises the system call filters applied to a child.
type Seccomp struct {
	// Profile is the base profile ("default" or "none").
	Profile string
	// Allow and Deny are the decision's extra allowed and refused calls.
	Allow, Deny []string
	// Network is true when the network filter applied (Landlock
	// restricts TCP): no IP socket but plain TCP, no TCP Fast Open, no
	// io_uring. UDP is true when it let UDP through.
	Network, UDP bool
}

// Namespaces are the namespaces of a child, in the decision's words.
type Namespaces struct {
	// IPC is "private" (its own IPC namespace) or "host".
	IPC string
	// Network is "none" (the empty network namespace) or "host".
	Network string
}

// Start records a child that was started, or could not be (exec.start).
type Start struct {
	// RequestID correlates the records of one request.
	RequestID string
	// PID of the child; its process group ID is PGID.
	PID  int
	PGID int
	// Exe is the executable path; Dir the working directory. Both optional.
	Exe string
	Dir string
	// RunAs is the child's identity.
	RunAs RunAs
	// Rlimits maps the rlimit name as the policy spells it ("cpu", "as",
	// "nofile", ...) to the limit; [sandbox.RlimitInfinity] means
	// unlimited, written as -1, because 2^64-1 does not fit the signed
	// 64-bit integers that Elasticsearch, Splunk and most JSON parsers use.
	Rlimits map[string]uint64
	// Landlock is nil when no Landlock ruleset was applied.
	Landlock *Landlock
	// Seccomp is nil when no system call filter was applied.
	Seccomp *Seccomp
	// Namespaces is nil when the child could not be started.
	Namespaces *Namespaces
	// TmpDir is the child's private temporary directory, "" without one.
	TmpDir string
	// Error is set when the child could not be started; the record then
	// has event.outcome "failure".
	Error string
}

// Exit records how a child ended (exec.exit).
type Exit struct {
	// RequestID correlates the records of one request.
	RequestID string
	// PID is the child's process ID.
	PID int
	// ExitCode is the exit status. It is ignored when Signal is set.
	ExitCode int
	// Signal is the name of the signal that killed the child, without the
	// SIG prefix ("TERM", "KILL", "XFSZ"), or empty.
	Signal string
	// Duration is the wall time from start to exit (event.duration).
	Duration time.Duration
	// End is when the child ended; zero means the record's time.
	End time.Time
	// Byte counts of the child's standard streams.
	StdinBytes, StdoutBytes, StderrBytes int64
	// Truncation flags: the stream was cut at its limit.
	StdinTruncated, StdoutTruncated, StderrTruncated bool
	// Resource usage of the child.
	UserCPU, SystemCPU time.Duration
	// MaxRSS is the maximum resident set size in bytes, as wait4(2)
	// reports it. The child is forked with vfork, sharing the server's
	// address space until its exec, and the kernel counts that address
	// space's peak in it: the figure is at least the server's resident
	// size at the fork (tens of MB even for /bin/true). The request's own
	// peak is Cgroup.MemoryPeak, where measured.
	MaxRSS int64
	// Cgroup is what the child's own cgroup recorded; nil when it had
	// none (kills then reached its process group only).
	Cgroup *ExitCgroup
	// Denials are the child's sandbox denials as the kernel reported
	// them by the time the child ended (sockwarden.denials); nil where
	// denials are not reported.
	Denials *SandboxDenials
}

// SandboxDenials are what the kernel reported of a child's sandbox
// denials (sockwarden.denials).
type SandboxDenials struct {
	// Landlock are the distinct Landlock denials, first seen first.
	Landlock []Denial
	// Received counts the denials received, repeats included; Unlisted
	// those not in Landlock (past the bound of the list or the record).
	Received, Unlisted int
	// Total is the kernel's count, -1 while unknown.
	Total int
	// Final is true once the kernel's count came or the wait for it
	// ended; Complete is true when Final and every denial the kernel
	// counted was received.
	Final, Complete bool
}

// Denial is one kind of access the sandbox refused: Access as Landlock
// names it ("fs.write_file"), Target the path, address or process it was
// refused on, Count the times.
type Denial struct {
	Access, Target string
	Count          int
}

// Denials records the final sandbox denials of a child
// (sandbox.denials), for an exit record that could not give them all:
// the kernel's count comes 30-70 ms after the child is reaped, and
// records may come late or be lost.
type Denials struct {
	// RequestID correlates the records of one request.
	RequestID string
	// PID is the child's process ID.
	PID int
	// Denials is the whole report.
	Denials SandboxDenials
}

// ExitCgroup is the accounting of a child's cgroup
// (sockwarden.exit.cgroup). Unlike the rusage of Exit, it covers every
// process of the request, those that left the process group included.
type ExitCgroup struct {
	// Path is the cgroup's directory.
	Path string
	// Killed counts the processes still in the cgroup when sockwarden
	// killed it (at a kill, or after the child exited).
	Killed int
	// OOMKills counts the processes the kernel killed for exceeding the
	// cgroup's memory limit.
	OOMKills int64
	// MemoryPeak is the peak memory use in bytes; 0 = not measured.
	MemoryPeak int64
	// PidsPeak is the peak number of processes and threads; 0 = not
	// measured.
	PidsPeak int64
	// CPU is the CPU time of all the cgroup's processes; 0 = not
	// measured.
	CPU time.Duration
	// Lingering is true when processes of the cgroup were still dying
	// when the record was made.
	Lingering bool
}

// Kill records the server killing a child's process group (exec.kill).
// Log it once the outcome is known: Signal is the first signal sent and
// Escalated tells whether KILL followed after the kill timeout.
type Kill struct {
	// RequestID correlates the records of one request.
	RequestID string
	// PID and PGID are the child's process and process group IDs.
	PID, PGID int
	// Reason is one of KillTimeout, KillDisconnect, KillOutputLimit,
	// KillShutdown, KillProtocolError (event.reason).
	Reason string
	// Signal is the first signal sent, without the SIG prefix.
	Signal string
	// Escalated is true when the group was sent KILL after Signal.
	Escalated bool
	// Error is set when the signal could not be delivered.
	Error string
}

// ProtocolError records malformed client input (protocol.error).
type ProtocolError struct {
	// RequestID is optional: the connection's ID if one was assigned.
	RequestID string
	// Peer is the client.
	Peer Peer
	// Error says what was wrong with the input.
	Error string
	// BytesRead is how many bytes were read from the client.
	BytesRead int64
}

// Quota records the connections of one caller turned away over its quota
// during an interval (quota.exceeded): one record for many refusals.
type Quota struct {
	// Peer is the caller (the last one refused: the uid is what counts).
	Peer Peer
	// Kind is what ran out: "connections" (at once), "rate" (per
	// second) or "decision" (a policy rule's quota, named by Key).
	Kind string
	// Limit is the caller's quota: connections at once, or the burst of
	// its rate.
	Limit int
	// Rate is the rate quota, connections a second (kind "rate").
	Rate float64
	// Key is the decision's quota key (kind "decision": a policy rule's
	// limit of requests at once).
	Key string
	// Refused is how many connections were turned away in the interval.
	Refused int64
	// Since is when the first of them was.
	Since time.Time
}

// PolicyReload records an attempt to load a new policy (policy.reload).
// An empty Error means it succeeded.
type PolicyReload struct {
	// Revision of the policy now in force (the new one on success, the
	// old one on failure).
	Revision string
	// Source is where the policy came from (directory, "embedded").
	Source string
	// Error is why the new policy was rejected; empty on success.
	Error string
}

// ServerEvent records the server starting or stopping (server.start,
// server.stop).
type ServerEvent struct {
	// Version is sockwarden's version (service.version).
	Version string
	// Socket is the path of the listening socket.
	Socket string
	// PID of the server; 0 means the current process.
	PID int
	// LandlockABI is the kernel's Landlock ABI (0: unsupported).
	LandlockABI int
	// Message is a human-readable summary (ECS message).
	Message string
	// Error is set when the server stops because of an error.
	Error string
	// Details holds any other facts; it is written with encoding/json
	// under sockwarden.server.details.
	Details map[string]any
}
