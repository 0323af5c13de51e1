package server

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/netstring"
	"github.com/sockwarden/sockwarden/peer"
)

// Quotas per caller.
//
// Each caller uid may hold at most MaxConnsPerUID connections at once
// (by default half of MaxConns, so that one local user cannot hold every
// slot), and, with RatePerUID, open at most that many connections per
// second with bursts of BurstPerUID (a token bucket,
// golang.org/x/time/rate); the global MaxConns stays the last line of
// defence. A connection over its caller's quota gets the reply
// "sockwarden: busy: ..." on stderr and exit code 126, never a bare
// reset, without its request being read. The refusals are recorded once per caller per interval
// (quota.exceeded, with the count), in the audit trail and the operator
// log, not once per connection.

// DefaultQuotaInterval is how often a caller's refusals are recorded.
const DefaultQuotaInterval = 10 * time.Second

// perUID is the quotas of each caller under l.
func (l *Limits) perUID() quotaLimits {
	q := quotaLimits{conns: max(1, l.MaxConns/2), rate: l.RatePerUID, burst: l.BurstPerUID}
	switch {
	case l.MaxConnsPerUID > 0:
		q.conns = l.MaxConnsPerUID
	case l.MaxConnsPerUID < 0:
		q.conns = 0
	}
	if q.burst <= 0 {
		q.burst = max(1, int(q.rate))
	}
	return q
}

// quotas counts each caller's connections and coalesces the records of
// the refused ones.
type quotas struct {
	mu       sync.Mutex
	uids     map[uint32]*uidUse
	keys     map[string]int // requests running per decision quota key
	interval time.Duration
	closed   bool
	// record writes the record of a caller's refusals.
	record func(q audit.Quota)
	// metrics counts the refusals (nil: not counted).
	metrics *Metrics
}

type uidUse struct {
	conns int
	// refused counts the connections turned away since the last
	// record, by kind ("connections", "rate"), with the limit of each.
	refused map[string]int64
	limits  map[string]int
	rates   map[string]float64
	since   time.Time
	last    peer.Peer
	timer   *time.Timer
	bucket  *rate.Limiter // nil without a rate quota
}

// pending counts the refusals not yet recorded.
func (u *uidUse) pending() int64 {
	var n int64
	for _, c := range u.refused {
		n += c
	}
	return n
}

func newQuotas(interval time.Duration, record func(audit.Quota)) *quotas {
	if interval <= 0 {
		interval = DefaultQuotaInterval
	}
	return &quotas{uids: map[uint32]*uidUse{}, keys: map[string]int{}, interval: interval, record: record}
}

// quotaLimits are the quotas of one caller: connections at once (0: no
// limit), and connections per second with a burst (rate 0: no limit).
type quotaLimits struct {
	conns int
	rate  float64
	burst int
}

// admit counts a connection of p when p is within its quotas, and
// returns "" when it did, else the kind of quota it is over
// ("connections" or "rate").
func (q *quotas) admit(p peer.Peer, l quotaLimits) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.use(p.UID)
	if l.conns > 0 && u.conns >= l.conns {
		return "connections"
	}
	if l.rate > 0 {
		if u.bucket == nil || u.bucket.Limit() != rate.Limit(l.rate) || u.bucket.Burst() != l.burst {
			u.bucket = rate.NewLimiter(rate.Limit(l.rate), l.burst)
		}
		if !u.bucket.Allow() {
			return "rate"
		}
	} else {
		u.bucket = nil
	}
	u.conns++
	return ""
}

func (q *quotas) use(uid uint32) *uidUse {
	u := q.uids[uid]
	if u == nil {
		u = &uidUse{refused: map[string]int64{}, limits: map[string]int{}, rates: map[string]float64{}}
		q.uids[uid] = u
	}
	return u
}

// takeKey counts a request under a decision's quota key, if fewer than
// limit run under it, and reports whether it did.
func (q *quotas) takeKey(key string, limit int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.keys[key] >= limit {
		return false
	}
	q.keys[key]++
	return true
}

// leaveKey gives a request under key back.
func (q *quotas) leaveKey(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.keys[key]--; q.keys[key] <= 0 {
		delete(q.keys, key)
	}
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

// forget drops an entry with nothing left to count (and a full bucket:
// dropping a used one would hand a fresh burst to a caller that only
// ever holds one connection at a time).
func (q *quotas) forget(uid uint32, u *uidUse) {
	if u.conns <= 0 && u.pending() == 0 && (u.bucket == nil || u.bucket.Tokens() >= float64(u.bucket.Burst())) {
		delete(q.uids, uid)
	}
}

// refuse counts a refused connection of p over its quota of kind
// ("connections", "rate", or "decision\x00KEY" with l.conns the
// decision's limit); the first of an interval schedules its record.
func (q *quotas) refuse(p peer.Peer, kind string, l quotaLimits) {
	q.metrics.quota(strings.SplitN(kind, "\x00", 2)[0])
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.use(p.UID)
	u.refused[kind]++
	u.limits[kind] = l.conns
	if kind == "rate" {
		u.limits[kind], u.rates[kind] = l.burst, l.rate
	}
	u.last = p
	if u.pending() == 1 {
		u.since = time.Now()
		if !q.closed {
			u.timer = time.AfterFunc(q.interval, func() { q.flush(p.UID) })
		}
	}
}

// flush writes the records of uid's refusals, if any: one per kind.
func (q *quotas) flush(uid uint32) {
	q.mu.Lock()
	u := q.uids[uid]
	if u == nil || u.pending() == 0 {
		q.mu.Unlock()
		return
	}
	var recs []audit.Quota
	kinds := make([]string, 0, len(u.refused))
	for k := range u.refused {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		if n := u.refused[k]; n > 0 {
			kind, key, _ := strings.Cut(k, "\x00") // "decision\x00KEY"
			recs = append(recs, audit.Quota{Peer: u.last, Kind: kind, Key: key, Limit: u.limits[k], Rate: u.rates[k], Refused: n, Since: u.since})
		}
	}
	clear(u.refused)
	u.timer = nil
	q.forget(uid, u)
	q.mu.Unlock()
	for _, r := range recs {
		q.record(r)
	}
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
		if u.pending() > 0 {
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
		out = append(out, Usage{UID: uid, Conns: u.conns, Refused: u.pending()})
	}
	slices.SortFunc(out, func(a, b Usage) int { return int(a.UID) - int(b.UID) })
	return out
}

// replyBusy answers a connection over its caller's quota of kind; linger
// closes it.
func replyBusy(c *net.UnixConn, uid uint32, kind string, l quotaLimits, maxConns int, linger func(*net.UnixConn)) {
	msg := fmt.Sprintf("sockwarden: busy: uid %d already holds its %d connections (of %d); try again later\n", uid, l.conns, maxConns)
	if kind == "rate" {
		msg = fmt.Sprintf("sockwarden: busy: uid %d is over its rate of %g connections a second (bursts of %d); try again later\n", uid, l.rate, l.burst)
	}
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
