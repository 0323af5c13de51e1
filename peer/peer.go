// Package peer identifies the process at the other end of a UNIX socket:
// the credentials the kernel recorded when it connected (SO_PEERCRED), and
// the names and executable looked up for convenience.
//
// Only the numeric ids and the pid come from the kernel; a policy must
// decide on them. Names and the executable path may be absent, and the
// executable may have changed since the connection was made.
package peer

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockwarden/sockwarden/internal/ttlcache"
)

// Peer is a client's identity. Its JSON form is the policy input's "peer"
// object.
type Peer struct {
	// PID, UID and GID are the kernel's record (SO_PEERCRED) from when
	// the connection was made.
	PID int    `json:"pid"`
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// User and Group are the names of UID and GID; Exe is the target of
	// /proc/PID/exe. Each is empty when it cannot be looked up.
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
	Exe   string `json:"exe,omitempty"`
}

// FromConn returns the kernel's record of the process at the other end of
// c, without names (see [Names.Describe]).
func FromConn(c syscall.Conn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	return Peer{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}, nil
}

// NameTTL is how long a looked-up user or group name is reused.
const NameTTL = time.Minute

// Names looks up user and group names by id, caching them for NameTTL
// (a lookup reads /etc/passwd or asks NSS, about 15 µs, more with LDAP).
// Failed lookups are cached too. Make one with [NewNames]; it is safe for
// concurrent use.
type Names struct {
	users, groups *ttlcache.Cache[uint32, string]
}

// NewNames returns an empty name cache.
func NewNames() *Names {
	return &Names{
		users:  ttlcache.New[uint32, string](NameTTL, 4096),
		groups: ttlcache.New[uint32, string](NameTTL, 4096),
	}
}

// User returns the name of uid, or "".
func (n *Names) User(uid uint32) string {
	return n.users.Get(uid, func() string {
		u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
		if err != nil {
			return ""
		}
		return u.Username
	})
}

// Group returns the name of gid, or "".
func (n *Names) Group(gid uint32) string {
	return n.groups.Get(gid, func() string {
		g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
		if err != nil {
			return ""
		}
		return g.Name
	})
}

// Describe fills in p's names and executable where they can be found.
func (n *Names) Describe(p *Peer) {
	p.User = n.User(p.UID)
	p.Group = n.Group(p.GID)
	p.Exe = ""
	if p.PID > 0 {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(p.PID) + "/exe"); err == nil {
			p.Exe = exe
		}
	}
}
