// Package ttlcache is a small map whose entries expire: the one cache
// helper of sockwarden for facts about the host that are costly to look
// up and change rarely (user and group names, a path's file identity),
// and for doing something at most once per interval per key (the WARN of
// a policy error).
//
// It is not the policy decision cache (policy/cache.go), which must be
// exact (a decision is valid for one policy revision, never for a time),
// holds deep copies and is sharded for many concurrent readers.
package ttlcache

import (
	"sync"
	"time"
)

// Cache maps keys to values that are looked up again once older than its
// TTL. When it holds Max entries it starts over, so a caller feeding it
// many distinct keys cannot make it grow without bound. The zero value is
// not usable; make one with [New]. A Cache is safe for concurrent use.
type Cache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[K]entry[V]
}

type entry[V any] struct {
	v  V
	at time.Time
}

// New returns a cache whose entries live for ttl, holding at most max.
func New[K comparable, V any](ttl time.Duration, max int) *Cache[K, V] {
	return &Cache[K, V]{ttl: ttl, max: max, m: make(map[K]entry[V])}
}

// Get returns the value of k, calling find for it when k is absent or its
// entry has expired. find runs without the lock held: two callers may
// both look up the same key, and the later answer is kept.
func (c *Cache[K, V]) Get(k K, find func() V) V {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl {
		return e.v
	}
	v := find()
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = entry[V]{v: v, at: now}
	c.mu.Unlock()
	return v
}

// Len returns the number of entries, expired ones included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
