package policy

import (
	"encoding/binary"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultCacheSize is the number of decisions an [Engine] memoizes when
// Options.CacheSize is 0.
const DefaultCacheSize = 4096

// maxCacheKeyBytes bounds the cache key (about the total size of argv, exe,
// the peer's names and the socket path): a request with a longer key is
// evaluated every time, so that the cache's memory stays bounded by about
// size × (maxCacheKeyBytes + a decision).
const maxCacheKeyBytes = 4096

// Cache shards: at most maxCacheShards, each holding at least
// minShardEntries (a small cache is one shard with an exact bound).
const (
	maxCacheShards  = 16
	minShardEntries = 64
)

// appendCacheKey appends to b the part of in that the policy may see when
// it is cacheable (see impurity): argv, exe, the peer's pid, uid, gid,
// user, group and exe, and the socket; not RequestID or Time. Each string
// is preceded by its length and argv by its count, so distinct inputs never
// give equal keys (["ab", "c"] and ["a", "bc"] differ). Two inputs with
// equal keys have equal input documents but for request_id and time.
func appendCacheKey(b []byte, in *Input) []byte {
	b = binary.AppendUvarint(b, uint64(len(in.Argv)))
	for _, a := range in.Argv {
		b = appendKeyString(b, a)
	}
	b = appendKeyString(b, in.Exe)
	b = binary.AppendVarint(b, int64(in.Peer.PID))
	b = binary.AppendUvarint(b, uint64(in.Peer.UID))
	b = binary.AppendUvarint(b, uint64(in.Peer.GID))
	b = appendKeyString(b, in.Peer.User)
	b = appendKeyString(b, in.Peer.Group)
	b = appendKeyString(b, in.Peer.Exe)
	return appendKeyString(b, in.Socket)
}

func appendKeyString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decisionCache memoizes decisions by cache key. It is split into shards,
// each a map guarded by a read-write mutex, with CLOCK (second chance)
// eviction: a hit takes only the read lock and sets the entry's used bit
// (an atomic store, skipped when the bit is set already, so the hot
// entries of many goroutines stay in shared cache lines); an insertion into
// a full shard takes the write lock and evicts the first entry, from the
// clock hand on, not used since the hand last passed it.
type decisionCache struct {
	seed   maphash.Seed
	mask   uint64
	shards []cacheShard
}

type cacheShard struct {
	mu   sync.RWMutex
	m    map[string]*cacheEntry
	ring []*cacheEntry // the clock; len(ring) == len(m) <= max
	max  int
	hand int
	_    [64]byte // keep shards on separate cache lines
}

// cacheEntry is immutable once in the cache, except for used.
type cacheEntry struct {
	key  string
	d    Decision
	used atomic.Bool
}

// newDecisionCache returns a cache of at most size entries (size > 0).
func newDecisionCache(size int) *decisionCache {
	n := 1
	for n < maxCacheShards && size/(2*n) >= minShardEntries {
		n *= 2
	}
	c := &decisionCache{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]cacheShard, n)}
	for i := range c.shards {
		s := &c.shards[i]
		s.max = size / n
		if i < size%n {
			s.max++
		}
		s.m = make(map[string]*cacheEntry)
	}
	return c
}

func (c *decisionCache) shard(key []byte) *cacheShard {
	if c.mask == 0 {
		return &c.shards[0]
	}
	return &c.shards[maphash.Bytes(c.seed, key)&c.mask]
}

// get returns a copy of the decision cached under key, which the caller
// owns.
func (c *decisionCache) get(key []byte) (Decision, bool) {
	s := c.shard(key)
	s.mu.RLock()
	e := s.m[string(key)]
	s.mu.RUnlock()
	if e == nil {
		return Decision{}, false
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	return e.d.Clone(), true
}

// put caches a copy of d under key, evicting an entry if the shard is
// full. An entry already cached under key (put by a concurrent miss) is
// kept.
func (c *decisionCache) put(key []byte, d Decision) {
	s := c.shard(key)
	s.mu.RLock()
	_, ok := s.m[string(key)]
	s.mu.RUnlock()
	if ok || s.max <= 0 {
		return
	}
	e := &cacheEntry{key: string(key), d: d.Clone()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[e.key]; ok {
		return
	}
	if len(s.ring) < s.max {
		s.ring = append(s.ring, e)
		s.m[e.key] = e
		return
	}
	// CLOCK: give every used entry a second chance. Hits may set used
	// bits again while the hand moves (they do not take the write lock),
	// so the sweep is bounded: after two turns the entry under the hand
	// goes regardless.
	for range 2 * len(s.ring) {
		old := s.ring[s.hand]
		if !old.used.Load() {
			break
		}
		old.used.Store(false)
		s.hand = (s.hand + 1) % len(s.ring)
	}
	delete(s.m, s.ring[s.hand].key)
	s.ring[s.hand] = e
	s.m[e.key] = e
	s.hand = (s.hand + 1) % len(s.ring)
}

// len returns the number of cached decisions.
func (c *decisionCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Clone returns a deep copy of d: its slices, maps and pointed-to values
// are copied, so that changing the copy (appending to Reasons, setting an
// Rlimits key, changing *Umask) never changes d. Err, an immutable error
// value, is shared. Nil slices and maps stay nil and empty ones stay empty
// (the difference is meaningful, see Env and Landlock).
func (d Decision) Clone() Decision {
	c := d
	c.Reasons = slices.Clone(d.Reasons)
	if d.RunAs != nil {
		r := *d.RunAs
		r.Groups = slices.Clone(r.Groups)
		c.RunAs = &r
	}
	c.Rlimits = maps.Clone(d.Rlimits)
	if d.Landlock != nil {
		l := *d.Landlock
		l.RO = slices.Clone(l.RO)
		l.RW = slices.Clone(l.RW)
		l.ConnectTCP = slices.Clone(l.ConnectTCP)
		l.BindTCP = slices.Clone(l.BindTCP)
		c.Landlock = &l
	}
	if d.Quota != nil {
		q := *d.Quota
		c.Quota = &q
	}
	if d.Mask != nil {
		m := *d.Mask
		m.Args = slices.Clone(m.Args)
		m.Patterns = slices.Clone(m.Patterns)
		c.Mask = &m
	}
	if d.Seccomp != nil {
		sc := *d.Seccomp
		sc.Allow = slices.Clone(sc.Allow)
		sc.Deny = slices.Clone(sc.Deny)
		c.Seccomp = &sc
	}
	if d.Cgroup != nil {
		g := *d.Cgroup
		if g.MemorySwapMax != nil {
			v := *g.MemorySwapMax
			g.MemorySwapMax = &v
		}
		c.Cgroup = &g
	}
	c.Env = maps.Clone(d.Env)
	if d.Umask != nil {
		u := *d.Umask
		c.Umask = &u
	}
	return c
}
