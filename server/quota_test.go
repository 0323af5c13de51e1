package server

import (
	"testing"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/peer"
)

func TestPerUIDLimits(t *testing.T) {
	for _, tt := range []struct {
		l    Limits
		want quotaLimits
	}{
		{Limits{MaxConns: 10}, quotaLimits{conns: 5, burst: 1}},
		{Limits{MaxConns: 1}, quotaLimits{conns: 1, burst: 1}},
		{Limits{MaxConns: 10, MaxConnsPerUID: 8}, quotaLimits{conns: 8, burst: 1}},
		{Limits{MaxConns: 10, MaxConnsPerUID: -1}, quotaLimits{conns: 0, burst: 1}},
		{Limits{MaxConns: 10, RatePerUID: 2.5}, quotaLimits{conns: 5, rate: 2.5, burst: 2}},
		{Limits{MaxConns: 10, RatePerUID: 2.5, BurstPerUID: 7}, quotaLimits{conns: 5, rate: 2.5, burst: 7}},
	} {
		if got := tt.l.perUID(); got != tt.want {
			t.Errorf("%+v: %+v, want %+v", tt.l, got, tt.want)
		}
	}
}

// The counts of one caller: connections up to the quota, refusals
// coalesced into one record per kind, entries dropped when nothing is left
// to count (but not while the caller's bucket is still being refilled).
func TestQuotaCounts(t *testing.T) {
	var recs []audit.Quota
	q := newQuotas(time.Hour, func(r audit.Quota) { recs = append(recs, r) })
	p := peer.Peer{UID: 33}
	l := quotaLimits{conns: 2}
	for i, want := range []string{"", "", "connections"} {
		if got := q.admit(p, l); got != want {
			t.Fatalf("admit %d: %q, want %q", i, got, want)
		}
	}
	q.refuse(p, "connections", l)
	q.refuse(p, "connections", l)
	if u := q.usage(); len(u) != 1 || u[0].Conns != 2 || u[0].Refused != 2 {
		t.Errorf("usage %+v", u)
	}
	q.leave(33)
	q.leave(33)
	q.close() // writes what is pending
	if len(recs) != 1 || recs[0].Refused != 2 || recs[0].Kind != "connections" || recs[0].Limit != 2 {
		t.Errorf("records %+v", recs)
	}
	if u := q.usage(); len(u) != 0 {
		t.Errorf("usage after everything left: %+v", u)
	}
	// A rate quota: the bucket outlives the caller's connections.
	r := quotaLimits{rate: 1, burst: 1}
	if q.admit(p, r) != "" {
		t.Fatal("first connection refused")
	}
	q.leave(33)
	if got := q.admit(p, r); got != "rate" {
		t.Errorf("second connection at once: %q, want rate", got)
	}
}
