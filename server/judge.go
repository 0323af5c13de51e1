package server

import (
	"bufio"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/policy"
)

// judge asks the Authorizer about argv from p, plans what its decision
// means on this host (plan.Planner, the same translation `sockwarden
// check` uses) and records the decision. It answers a request that is
// not to run (denied, unrecordable, or not startable) and reports false;
// otherwise it returns the Plan to run.
func (cn *conn) judge(ctx context.Context, br *bufio.Reader, argv []string, p peer.Peer) (*plan.Plan, bool) {
	cn.setState(StateJudging)
	s := cn.s
	cfg := &s.cfg
	// No request is judged, let alone run, while its records cannot be
	// written (unless the operator chose best effort).
	if err := s.auditHealthy(); err != nil {
		cn.refuseUnaudited(br, err)
		return nil, false
	}
	exe, lookErr := s.resolveExe(argv[0], cn.lim.Path)
	req := &Request{ID: cn.id, Argv: argv, Exe: exe, Peer: p, Socket: cfg.Socket, Time: time.Now()}
	var t0 time.Time
	if cfg.Metrics != nil {
		t0 = time.Now()
	}
	d, err := s.judges.authorize(ctx, cfg.Authorizer, req)
	if cfg.Metrics != nil {
		cfg.Metrics.decided(time.Since(t0), err == nil && d.Cached)
	}
	if err != nil {
		cn.log.Error("authorizer failed; denying", "err", err)
		d = &policy.Decision{Message: "policy error", Err: err}
	}
	pl := s.planner.Plan(d, s.defaults.Load(), &plan.Request{ID: cn.id, Argv: argv, Exe: exe, ExeErr: lookErr, Peer: p})
	// From here on, records and logs show the masked argv only.
	shown, masked := cn.mask(argv, pl.Mask)
	if err := cn.recordDecision(req, pl, shown, masked); err != nil && pl.Allow {
		cn.refuseUnaudited(br, err)
		return nil, false
	}
	if d.Err != nil {
		s.warnDecisionError(d.Err)
	}
	if dl := cfg.DecisionLog; dl != nil {
		in := Input(req)
		in.Argv = shown
		dl.LogDecision(ctx, &in, DecisionResult{Allow: pl.Allow, Message: pl.Message, Reasons: pl.Reasons, Cached: pl.Cached}, pl.Revision, pl.Err)
	}
	switch {
	case !pl.Allow:
		cn.s.cfg.Metrics.request(OutcomeDenied)
		// Never the whole argv, nor words of the policy that may quote
		// it: the audit record has them, bounded.
		var reason string
		if len(pl.Reasons) > 0 {
			reason = logPrefix(pl.Reasons[0])
		}
		cn.log.Info("request denied", "argv", audit.ArgvPreview(shown), "argv_sha256", audit.ArgvSHA256(shown), "exe", logPrefix(exe),
			"message", logPrefix(pl.Message), "reason", reason, "reasons", len(pl.Reasons))
	case pl.Quota != nil && pl.StartErr == nil && !s.quotas.takeKey(pl.Quota.Key, pl.Quota.Concurrent):
		// The policy's own limit of requests at once for this rule.
		cn.s.cfg.Metrics.request(OutcomeRefused)
		s.quotas.refuse(p, "decision\x00"+pl.Quota.Key, quotaLimits{conns: pl.Quota.Concurrent})
		cn.replyNotRun(br, fmt.Sprintf("sockwarden: busy: the policy runs at most %d requests of %q at once; try again later (request %s)\n",
			pl.Quota.Concurrent, pl.Quota.Key, cn.id), plan.StatusDenied)
		return nil, false
	case pl.StartErr != nil:
		// An allowed request that does not run says so in the trail, as
		// a spawn failure does.
		cn.s.cfg.Metrics.request(OutcomeError)
		cn.log.Info("cannot start program", "argv0", argv[0], "exe", exe, "err", pl.StartErr)
		cn.recordStartError(&pl.Spec, pl.StartErr)
	default:
		if pl.Quota != nil {
			cn.mu.Lock()
			cn.quotaKey = pl.Quota.Key // given back when the connection ends
			cn.mu.Unlock()
		}
		return pl, true
	}
	cn.replyNotRun(br, pl.ClientLine(cn.id), pl.Status)
	return nil, false
}

// decisionErrorEvery is how often one distinct policy error is logged at
// WARN.
const decisionErrorEvery = time.Minute

// warnDecisionError logs a policy error on a real request (an undefined
// decision, a typo'd key, a wrong type, a timeout) at WARN, once per
// distinct error per minute: a policy that loaded can still be broken for
// requests its load check did not try, and an INFO "request denied" is
// easy to miss. Every such request is still denied and audited.
func (s *Server) warnDecisionError(err error) {
	s.decisionErrs.Get(err.Error(), func() struct{} {
		s.log.Warn("the policy failed on a real request; denied (logged once a minute per distinct error)", "err", err)
		return struct{}{}
	})
}

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
	d    *policy.Decision
	err  error
	done chan struct{}
}

// newJudgePool returns a pool of at most max(4, 2*GOMAXPROCS) judges.
func newJudgePool() *judgePool {
	return &judgePool{jobs: make(chan *judgeJob), max: int32(max(4, 2*runtime.GOMAXPROCS(0)))}
}

// cachedAuthorizer is an Authorizer that may have a decision at hand
// without evaluating anything (PolicyGate with a memoized decision).
type cachedAuthorizer interface {
	AuthorizeCached(ctx context.Context, req *Request) (*policy.Decision, bool)
}

// authorize returns a's decision on req: at once when a has it cached,
// else computed on a judge goroutine.
func (p *judgePool) authorize(ctx context.Context, a Authorizer, req *Request) (*policy.Decision, error) {
	if ca, ok := a.(cachedAuthorizer); ok {
		if d, ok := ca.AuthorizeCached(ctx, req); ok {
			return d, nil
		}
	}
	j := &judgeJob{ctx: ctx, a: a, req: req, done: make(chan struct{})}
	select {
	case p.jobs <- j: // an idle judge took it
	default:
		if p.n.Add(1) > p.max {
			p.n.Add(-1)
			j.run()
			return j.d, j.err
		}
		go p.judge(j)
	}
	<-j.done
	return j.d, j.err
}

func (j *judgeJob) run() {
	j.d, j.err = j.a.Authorize(j.ctx, j.req)
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

// logPrefix is s on one line, cut to 200 bytes, for the operator log.
func logPrefix(s string) string {
	s = plan.OneLine(s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// mask returns argv as records and logs may show it (the configured
// patterns and the decision's mask applied), and the JSON pointers of what
// was masked; the connection keeps the shown argv for its later logs.
func (cn *conn) mask(argv []string, m *policy.Mask) ([]string, []string) {
	patterns := cn.s.cfg.MaskPatterns
	var positions []int
	if m != nil {
		positions = m.Args
		patterns = append(patterns[:len(patterns):len(patterns)], m.Patterns...)
	}
	shown, masked := audit.Mask(argv, positions, patterns)
	cn.mu.Lock()
	cn.argvShown = shown
	cn.mu.Unlock()
	return shown, masked
}

// exeTTL is how long a bare argv[0]'s resolution with the server's PATH
// is reused: a program installed, removed or moved between PATH's
// directories is seen at most a second later (an exec of a path that has
// gone meanwhile fails as a missing program would).
const exeTTL = time.Second

// resolvedExe is what plan.ResolveExe returned.
type resolvedExe struct {
	exe string
	err error
}

// resolveExe is plan.ResolveExe with the answers for bare names cached
// for exeTTL (a lookup is a stat(2) per PATH directory until found; a
// name with a slash needs none).
func (s *Server) resolveExe(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return plan.ResolveExe(name, path)
	}
	r := s.exes.Get(path+"\x00"+name, func() resolvedExe {
		exe, err := plan.ResolveExe(name, path)
		return resolvedExe{exe, err}
	})
	return r.exe, r.err
}
