package server

import (
	"context"
	"fmt"
	"time"

	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/policy"
)

// Request is what an [Authorizer] judges: a complete argv from a peer.
type Request struct {
	// ID identifies the request in logs and audit records.
	ID string
	// Argv is the argv exactly as the client sent it.
	Argv []string
	// Exe is Argv[0] resolved to an absolute path with the server's PATH
	// (plan.ResolveExe), or "" when it could not be resolved.
	Exe string
	// Peer is the client's kernel-verified identity.
	Peer peer.Peer
	// Socket is the path of the listening socket.
	Socket string
	// Time is when the argv was complete.
	Time time.Time
}

// An Authorizer decides whether a request may run and with which
// settings; the server turns the decision into what it runs with
// plan.Planner. The policy engine ([PolicyGate]) implements it; [SameUID]
// is the fallback. An error is a deny.
type Authorizer interface {
	Authorize(ctx context.Context, req *Request) (*policy.Decision, error)
}

// SameUID admits only peers whose uid is the server's own or 0, and runs
// them with the server's identity (which, for a server running as root,
// needs plan.Defaults.AllowRoot) and the environment of the defaults.
type SameUID struct {
	// UID is the server's uid.
	UID uint32
}

// Authorize implements [Authorizer].
func (a SameUID) Authorize(_ context.Context, req *Request) (*policy.Decision, error) {
	if req.Peer.UID != a.UID && req.Peer.UID != 0 {
		return &policy.Decision{
			Message: "caller is not the server's user",
			Reasons: []string{fmt.Sprintf("peer uid %d is neither 0 nor the server's uid %d", req.Peer.UID, a.UID)},
		}, nil
	}
	return &policy.Decision{
		Allow:   true,
		Reasons: []string{fmt.Sprintf("peer uid %d is trusted", req.Peer.UID)},
	}, nil
}
