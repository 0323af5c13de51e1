package server

import (
	"context"
	"fmt"
	"time"

	"github.com/sockwarden/sockwarden/sandbox"
)

// Peer is the identity of a client. Pid, UID and GID are the kernel's
// record (SO_PEERCRED) from when the connection was made; the names and
// the executable are looked up for convenience, may be empty, and are not
// to be trusted for decisions.
type Peer struct {
	Pid   int32
	UID   uint32
	GID   uint32
	User  string
	Group string
	Exe   string
}

// Request is what an [Authorizer] judges: a complete argv from a peer.
type Request struct {
	// ID identifies the request in logs and audit records.
	ID string
	// Argv is the argv exactly as the client sent it.
	Argv []string
	// Exe is Argv[0] resolved to an absolute path with the server's PATH,
	// or "" when it could not be resolved.
	Exe string
	// Peer is the client's kernel-verified identity.
	Peer Peer
	// Socket is the path of the listening socket.
	Socket string
	// Time is when the argv was complete.
	Time time.Time
}

// Verdict is an [Authorizer]'s answer.
type Verdict struct {
	// Allow says whether the request may run.
	Allow bool
	// Message is shown to the client when the request is denied.
	Message string
	// Reasons explain the verdict to the operator, never to the client.
	Reasons []string
	// Spec is the sandbox to run an allowed request in. The server sets
	// its Path and Args; the authorizer sets everything else.
	Spec sandbox.Spec
	// Timeout and KillTimeout override the server's deadline and kill
	// timeout for this request when non-zero.
	Timeout, KillTimeout time.Duration
	// MaxOutputBytes caps stdout plus stderr; past it the child is killed.
	// Zero means no cap.
	MaxOutputBytes int64
	// MaxStdinBytes caps the stdin forwarded to the child; the rest is
	// discarded and the child's stdin closed. Zero means no cap.
	MaxStdinBytes int64
	// Revision identifies the rules that produced the verdict.
	Revision string
	// EvalDuration is how long the judgement took.
	EvalDuration time.Duration
	// Cached reports that the verdict is a memoized decision of the same
	// policy revision (see policy.Engine.Cacheable).
	Cached bool
	// Err is the error that made the verdict a deny, if any (for the
	// audit trail; the client sees only Message).
	Err error
}

// An Authorizer decides whether a request may run and in which sandbox.
// The policy engine implements it; [SameUID] is the fallback.
type Authorizer interface {
	Authorize(ctx context.Context, req *Request) (*Verdict, error)
}

// SameUID admits only peers whose uid is the server's own or 0, and runs
// them with the server's identity and a clean environment.
type SameUID struct {
	// UID is the server's uid.
	UID uint32
	// Env is the environment of every child.
	Env []string
}

// Authorize implements [Authorizer].
func (a SameUID) Authorize(_ context.Context, req *Request) (*Verdict, error) {
	if req.Peer.UID != a.UID && req.Peer.UID != 0 {
		return &Verdict{
			Message: "caller is not the server's user",
			Reasons: []string{fmt.Sprintf("peer uid %d is neither 0 nor the server's uid %d", req.Peer.UID, a.UID)},
		}, nil
	}
	return &Verdict{
		Allow:   true,
		Reasons: []string{fmt.Sprintf("peer uid %d is trusted", req.Peer.UID)},
		Spec:    sandbox.Spec{Env: a.Env},
	}, nil
}
