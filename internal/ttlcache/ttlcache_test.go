package ttlcache

import (
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		max       int
		keys      []string
		wantCalls int
	}{
		{"hit within the TTL", time.Hour, 10, []string{"a", "a", "a"}, 1},
		{"distinct keys", time.Hour, 10, []string{"a", "b", "a", "b"}, 2},
		{"expired entries are looked up again", 0, 10, []string{"a", "a", "a"}, 3},
		{"bounded: starts over when full", time.Hour, 2, []string{"a", "b", "c", "a"}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New[string, int](tt.ttl, tt.max)
			calls := 0
			for _, k := range tt.keys {
				got := c.Get(k, func() int { calls++; return len(k) })
				if got != len(k) {
					t.Fatalf("Get(%q) = %d, want %d", k, got, len(k))
				}
				if c.Len() > tt.max {
					t.Fatalf("cache holds %d entries, more than its bound %d", c.Len(), tt.max)
				}
			}
			if calls != tt.wantCalls {
				t.Errorf("find called %d times, want %d", calls, tt.wantCalls)
			}
		})
	}
}
