package policy

import (
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/sockwarden/sockwarden/peer"
)

// Input is the document the policy sees as `input`. The server fills it for
// every request; see DESIGN.md, "Policy contract".
type Input struct {
	// Argv is the argument vector exactly as the client sent it.
	Argv []string `json:"argv"`
	// Exe is argv[0] resolved by the server with its own PATH (see
	// plan.ResolveExe), "" if it could not be resolved. The server
	// executes exactly this path.
	Exe string `json:"exe"`
	// Peer is the caller's identity.
	Peer Peer `json:"peer"`
	// Socket is the path of the listening socket the request came in on.
	Socket string `json:"socket"`
	// RequestID identifies the request in the audit log.
	RequestID string `json:"request_id"`
	// Time is the time the request was received. The policy sees it as an
	// RFC 3339 string in UTC, and time.now_ns() returns the same instant.
	// A zero Time is replaced by the time of evaluation.
	Time time.Time `json:"time"`
}

// Peer is the caller's identity. PID, UID and GID come from the kernel
// (SO_PEERCRED) and are the only fields to trust; User, Group and Exe are
// looked up for convenience and may be empty.
type Peer = peer.Peer

// Keys of the input document, built once.
var (
	keyArgv      = ast.StringTerm("argv")
	keyExe       = ast.StringTerm("exe")
	keyPeer      = ast.StringTerm("peer")
	keySocket    = ast.StringTerm("socket")
	keyRequestID = ast.StringTerm("request_id")
	keyTime      = ast.StringTerm("time")
	keyPid       = ast.StringTerm("pid")
	keyUID       = ast.StringTerm("uid")
	keyGID       = ast.StringTerm("gid")
	keyUser      = ast.StringTerm("user")
	keyGroup     = ast.StringTerm("group")
)

// Value converts in to the AST value the policy sees as `input`, with the
// same shape as the JSON encoding of Input (time in RFC 3339, UTC). It is
// built by hand: about four times faster than a JSON round trip.
func (in *Input) Value() ast.Value {
	argv := make([]*ast.Term, len(in.Argv))
	for i, a := range in.Argv {
		argv[i] = ast.StringTerm(a)
	}
	peer := make([][2]*ast.Term, 0, 6)
	peer = append(peer,
		[2]*ast.Term{keyPid, ast.IntNumberTerm(in.Peer.PID)},
		[2]*ast.Term{keyUID, ast.UIntNumberTerm(uint64(in.Peer.UID))},
		[2]*ast.Term{keyGID, ast.UIntNumberTerm(uint64(in.Peer.GID))},
	)
	if in.Peer.User != "" {
		peer = append(peer, [2]*ast.Term{keyUser, ast.StringTerm(in.Peer.User)})
	}
	if in.Peer.Group != "" {
		peer = append(peer, [2]*ast.Term{keyGroup, ast.StringTerm(in.Peer.Group)})
	}
	if in.Peer.Exe != "" {
		peer = append(peer, [2]*ast.Term{keyExe, ast.StringTerm(in.Peer.Exe)})
	}
	return ast.NewObject(
		[2]*ast.Term{keyArgv, ast.ArrayTerm(argv...)},
		[2]*ast.Term{keyExe, ast.StringTerm(in.Exe)},
		[2]*ast.Term{keyPeer, ast.ObjectTerm(peer...)},
		[2]*ast.Term{keySocket, ast.StringTerm(in.Socket)},
		[2]*ast.Term{keyRequestID, ast.StringTerm(in.RequestID)},
		[2]*ast.Term{keyTime, ast.StringTerm(in.Time.UTC().Format(time.RFC3339Nano))},
	)
}
