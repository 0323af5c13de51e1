package server

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/peer"
)

// Quotas per caller.
//
// Each caller uid may hold at most MaxConnsPerUID connections at once
// (by default half of MaxConns, so that one local user cannot hold every
// slot); the global MaxConns stays the last line of defence. A connection
// over its caller's quota gets the reply "sockwarden: busy: ..." on
// stderr and exit code 126, never a bare reset, without its request being
// read. The refusals are recorded once per caller per interval
// (quota.exceeded, with the count), in the audit trail and the operator
// log, not once per connection.

// DefaultQuotaInterval is how often a caller's refusals are recorded.
const DefaultQuotaInterval = 10 * time.Second

// perUID is the connection quota of each caller under l (0: none).
func (l *Limits) perUID() int {
	switch {
	case l.MaxConnsPerUID > 0:
		return l.MaxConnsPerUID
	case l.MaxConnsPerUID < 0:
		return 0
	}
	return max(1, l.MaxConns/2)
}

// quotas counts each caller's connections and coalesces the records of
// the refused ones.
type quotas struct {
	mu       sync.Mutex
	uids     map[uint32]*uidUse
	interval time.Duration
	closed   bool
	// record writes the record of a caller's refusals.
	record func(q audit.Quota)
}

type uidUse struct {
	conns   int
	refused int64
	since   time.Time
	last    peer.Peer
	limit   int
	timer   *time.Timer
}

func newQuotas(interval time.Duration, record func(audit.Quota)) *quotas {
	if interval <= 0 {
		interval = DefaultQuotaInterval
	}
	return &quotas{uids: map[uint32]*uidUse{}, interval: interval, record: record}
}

// admit counts a connection of p when p is under limit (0: no limit), and
// reports whether it did.
func (q *quotas) admit(p peer.Peer, limit int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.uids[p.UID]
	if u == nil {
		u = &uidUse{}
		q.uids[p.UID] = u
	}
	if limit > 0 && u.conns >= limit {
		return false
	}
	u.conns++
	return true
}

// leave gives a connection of uid back.
func (q *quotas) leave(uid uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if u := q.uids[uid]; u != nil {
		u.conns--
		q.forget(uid, u)
	}
}

// forget drops an entry with nothing left to count.
func (q *quotas) forget(uid uint32, u *uidUse) {
	if u.conns <= 0 && u.refused == 0 {
		delete(q.uids, uid)
	}
}

// refuse counts a refused connection of p; the first of an interval
// schedules its record.
func (q *quotas) refuse(p peer.Peer, limit int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.uids[p.UID]
	if u == nil {
		u = &uidUse{}
		q.uids[p.UID] = u
	}
	u.refused++
	u.last, u.limit = p, limit
	if u.refused == 1 {
		u.since = time.Now()
		if !q.closed {
			u.timer = time.AfterFunc(q.interval, func() { q.flush(p.UID) })
		}
	}
}

// flush writes the record of uid's refusals, if any.
func (q *quotas) flush(uid uint32) {
	q.mu.Lock()
	u := q.uids[uid]
	if u == nil || u.refused == 0 {
		q.mu.Unlock()
		return
	}
	rec := audit.Quota{Peer: u.last, Kind: "connections", Limit: u.limit, Refused: u.refused, Since: u.since}
	u.refused, u.timer = 0, nil
	q.forget(uid, u)
	q.mu.Unlock()
	q.record(rec)
}

// close stops the timers and writes every pending record (shutdown).
func (q *quotas) close() {
	q.mu.Lock()
	q.closed = true
	var pending []uint32
	for uid, u := range q.uids {
		if u.timer != nil {
			u.timer.Stop()
		}
		if u.refused > 0 {
			pending = append(pending, uid)
		}
	}
	q.mu.Unlock()
	slices.Sort(pending)
	for _, uid := range pending {
		q.flush(uid)
	}
}

// Usage is one caller's use of its quota.
type Usage struct {
	UID   uint32
	Conns int
	// Refused counts the connections turned away since the last record.
	Refused int64
}

// usage returns each caller's use, by uid.
func (q *quotas) usage() []Usage {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Usage, 0, len(q.uids))
	for uid, u := range q.uids {
		out = append(out, Usage{UID: uid, Conns: u.conns, Refused: u.refused})
	}
	slices.SortFunc(out, func(a, b Usage) int { return int(a.UID) - int(b.UID) })
	return out
}

// replyBusy answers a connection over its caller's quota; linger closes
// it.
func replyBusy(c *net.UnixConn, uid uint32, limit, maxConns int, linger func(*net.UnixConn)) {
	msg := fmt.Sprintf("sockwarden: busy: uid %d already holds its %d connections (of %d); try again later\n", uid, limit, maxConns)
	b := netstring.AppendString(nil, "stderr")
	b = netstring.AppendString(b, msg)
	b = netstring.AppendString(b, "exitcode")
	b = netstring.AppendString(b, "126")
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write(b)
	c.CloseWrite()
	linger(c)
}

// maxBusyLingers bounds the refused connections that linger at once.
const maxBusyLingers = 64

// lingerBusy reads what a refused client still sends, for a second and a
// mebibyte at most, so that it reads the busy reply and a clean end of
// stream instead of a reset caused by unread input; then it closes the
// connection. Past maxBusyLingers at once, it only reads what is queued.
func (s *Server) lingerBusy(c *net.UnixConn) {
	if s.busyLingers.Add(1) > maxBusyLingers {
		s.busyLingers.Add(-1)
		c.SetReadDeadline(time.Now())
		io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		c.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.busyLingers.Add(-1)
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		c.Close()
	}()
}
