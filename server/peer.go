package server

import (
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"
)

// nameTTL is how long a looked-up user or group name is reused.
const nameTTL = time.Minute

// names caches uid and gid to name lookups: a lookup reads /etc/passwd (or
// asks NSS) and costs more than the rest of the request's bookkeeping.
type names struct {
	mu     sync.Mutex
	users  map[uint32]cachedName
	groups map[uint32]cachedName
}

type cachedName struct {
	name string
	at   time.Time
}

func (n *names) lookup(m *map[uint32]cachedName, id uint32, find func(string) (string, error)) string {
	n.mu.Lock()
	if *m == nil {
		*m = make(map[uint32]cachedName)
	}
	c, ok := (*m)[id]
	n.mu.Unlock()
	if ok && time.Since(c.at) < nameTTL {
		return c.name
	}
	name, err := find(strconv.FormatUint(uint64(id), 10))
	if err != nil {
		name = ""
	}
	n.mu.Lock()
	if len(*m) > 4096 {
		clear(*m)
	}
	(*m)[id] = cachedName{name, time.Now()}
	n.mu.Unlock()
	return name
}

// user returns the name of uid, or "".
func (n *names) user(uid uint32) string {
	return n.lookup(&n.users, uid, func(id string) (string, error) {
		u, err := user.LookupId(id)
		if err != nil {
			return "", err
		}
		return u.Username, nil
	})
}

// group returns the name of gid, or "".
func (n *names) group(gid uint32) string {
	return n.lookup(&n.groups, gid, func(id string) (string, error) {
		g, err := user.LookupGroupId(id)
		if err != nil {
			return "", err
		}
		return g.Name, nil
	})
}

// describe fills in the names and the executable of a peer, where they
// can be found. They are conveniences: only the ids come from the kernel.
func (n *names) describe(p *Peer) {
	p.User = n.user(p.UID)
	p.Group = n.group(p.GID)
	if p.Pid > 0 {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(int(p.Pid)) + "/exe"); err == nil {
			p.Exe = exe
		}
	}
}
