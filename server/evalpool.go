package server

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
)

// Judging a request runs the policy engine, whose evaluation recurses
// deeply. On the connection's goroutine it would grow that goroutine's
// stack to tens of KiB, copying it at each doubling, and a burst of new
// connections would leave the process with that many grown stacks' worth
// of memory. So requests are judged on a few long-lived goroutines whose
// stacks grow once (measured with the default policy: about 2 KiB less
// RSS per held connection, `sockwarden bench idle -k 2000`).
//
// When every judge is busy and their number is at its cap, the request
// is judged on its own goroutine rather than queued: a slow judgement
// never holds up others.

// judgeIdle is how long an idle judge waits for work before it exits.
const judgeIdle = 30 * time.Second

type judgePool struct {
	jobs chan *judgeJob
	n    atomic.Int32 // judges alive
	max  int32
}

type judgeJob struct {
	ctx  context.Context
	a    Authorizer
	req  *Request
	v    *Verdict
	err  error
	done chan struct{}
}

var judges = &judgePool{
	jobs: make(chan *judgeJob),
	max:  int32(max(4, 2*runtime.GOMAXPROCS(0))),
}

// cachedAuthorizer is an Authorizer that may have a verdict at hand
// without evaluating anything (PolicyGate with a memoized decision).
type cachedAuthorizer interface {
	AuthorizeCached(ctx context.Context, req *Request) (*Verdict, bool)
}

// authorize returns a's verdict on req: at once when a has it cached,
// else computed on a judge goroutine.
func (p *judgePool) authorize(ctx context.Context, a Authorizer, req *Request) (*Verdict, error) {
	if ca, ok := a.(cachedAuthorizer); ok {
		if v, ok := ca.AuthorizeCached(ctx, req); ok {
			return v, nil
		}
	}
	j := &judgeJob{ctx: ctx, a: a, req: req, done: make(chan struct{})}
	select {
	case p.jobs <- j: // an idle judge took it
	default:
		if p.n.Add(1) > p.max {
			p.n.Add(-1)
			j.run()
			return j.v, j.err
		}
		go p.judge(j)
	}
	<-j.done
	return j.v, j.err
}

func (j *judgeJob) run() {
	j.v, j.err = j.a.Authorize(j.ctx, j.req)
}

// judge runs j, then the jobs that come, until it has been idle for
// judgeIdle.
func (p *judgePool) judge(j *judgeJob) {
	idle := time.NewTimer(judgeIdle)
	defer idle.Stop()
	for {
		j.run()
		close(j.done)
		j = nil // not kept alive while idle
		idle.Reset(judgeIdle)
		select {
		case j = <-p.jobs:
		case <-idle.C:
			p.n.Add(-1)
			return
		}
	}
}
