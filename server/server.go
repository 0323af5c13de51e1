// Package server implements the sockexec protocol on a UNIX socket: it
// accepts connections, reads a request (argc, argv, then streamed stdin),
// has an [Authorizer] judge it, starts the child in its sandbox and sends
// the child's output back as typed netstrings, ending with exactly one
// "exitcode" or "termsig" pair.
//
// Each connection is bounded in memory and in time: argv is limited in
// count and size, output is forwarded with backpressure instead of being
// buffered, and at the connection deadline, on disconnect or at shutdown
// the child's whole process group gets SIGTERM, then SIGKILL after the kill
// timeout.
package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/internal/ttlcache"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/sandbox"
)

// Defaults of [Config], those of sockexec where it has one.
const (
	DefaultMaxConns     = 100
	DefaultDeadline     = 60 * time.Second
	DefaultKillTimeout  = 10 * time.Second
	DefaultMaxArgs      = 4096
	DefaultMaxArgBytes  = 128 << 10 // Linux's MAX_ARG_STRLEN
	DefaultMaxArgvBytes = 1 << 20
	DefaultPath         = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	DefaultLinger       = time.Second
	DefaultOutputBuffer = 64 << 20
)

// Config configures a [Server]. The zero value of a field means its
// default, except Deadline, where a negative value means none.
type Config struct {
	// Socket is the listening socket's path, reported to the authorizer.
	Socket string
	// MaxConns is the number of connections served at once; extra
	// connections are closed at once (sockexec's -m).
	MaxConns int
	// MaxConnsPerUID is the number of connections one caller uid may
	// hold at once (see Quotas per caller in quota.go); 0 means half of
	// MaxConns, negative means no per-caller limit.
	MaxConnsPerUID int
	// RatePerUID is the number of connections a second one caller uid
	// may open, with bursts of BurstPerUID (0: the rate, rounded up to
	// at least 1); 0 means no rate quota.
	RatePerUID  float64
	BurstPerUID int
	// MaskPatterns are the patterns of argument keys whose values the
	// audit record and the operator log never show, whatever the policy
	// says (see audit.Mask); nil means audit.DefaultMaskPatterns, empty
	// means none.
	MaskPatterns []string
	// QuotaInterval is how often a caller's refused connections are
	// recorded (one record with the count); 0 means
	// DefaultQuotaInterval.
	QuotaInterval time.Duration
	// Deadline bounds each connection's life; at the deadline the child
	// is killed (sockexec's -t). Negative means no deadline.
	Deadline time.Duration
	// KillTimeout is the time between SIGTERM and SIGKILL (sockexec's -k).
	KillTimeout time.Duration
	// Authorizer judges every request. Nil means [SameUID] with the
	// server's uid.
	Authorizer Authorizer
	// Defaults fill what a decision leaves out (see plan.Planner); a
	// zero Defaults.KillTimeout is KillTimeout.
	Defaults plan.Defaults
	// Spawner starts the programs. Nil means one made by New with
	// sandbox.New's defaults (a cgroup per request under
	// <own cgroup>/sockwarden where the host allows), closed by Shutdown;
	// a Spawner given here is the caller's to close.
	Spawner *sandbox.Spawner
	// ConnState, if not nil, is called each time a connection changes
	// state (see [ConnState]), on the goroutine that changes it, as
	// net/http's Server.ConnState is.
	ConnState func(requestID string, state ConnState)
	// Path is the PATH used to resolve a bare argv[0]; the client's
	// environment is never consulted.
	Path string
	// MaxArgs, MaxArgBytes and MaxArgvBytes bound argc, the size of one
	// argument and the size of the whole argv.
	MaxArgs      int
	MaxArgBytes  int64
	MaxArgvBytes int64
	// OutputBuffer bounds the output of one request that waits for a
	// client still sending its stdin (see spool.go): memory up to 256 KiB,
	// then an unlinked temporary file. Past it the program is stopped.
	OutputBuffer int64
	// Linger is how long, after the final reply, the server keeps
	// reading (and discarding) late input before it closes, so that the
	// client sees a clean end of stream rather than a reset.
	Linger time.Duration
	// Logger receives operator logs. Nil means slog.Default().
	Logger *slog.Logger
	// Audit receives the audit trail: every decision, start, kill and
	// exit, and every malformed request. Nil means no audit trail.
	Audit *audit.Logger
	// AuditBestEffort runs requests even while their audit records cannot
	// be written (on_failure = "continue"). By default such requests are
	// refused, so that nothing runs unrecorded.
	AuditBestEffort bool
	// Metrics, when set, are the Prometheus series the server updates
	// ([NewMetrics]); MetricsRegisterer, when set too, gets the series
	// computed at scrape time (connections, the audit trail's counters).
	Metrics           *Metrics
	MetricsRegisterer prometheus.Registerer
	// DecisionLog, when set, receives each judged request's decision
	// after its audit record is written, for a decision log kept apart
	// from the audit trail (OPA's decision logs).
	DecisionLog DecisionLogger
	// ExplainDenials sends every client a stderr line per sandbox
	// denial of its program, before the exit status, as a decision's
	// explain does for its requests (sockwarden -d). It needs a Spawner
	// that reports denials.
	ExplainDenials bool
}

func (c *Config) setDefaults() {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Deadline == 0 {
		c.Deadline = DefaultDeadline
	}
	if c.KillTimeout <= 0 {
		c.KillTimeout = DefaultKillTimeout
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Authorizer == nil {
		c.Authorizer = SameUID{UID: uint32(os.Getuid())}
		if c.Defaults.Env == nil {
			c.Defaults.Env = map[string]string{"PATH": c.Path}
		}
	}
	if c.MaxArgs <= 0 {
		c.MaxArgs = DefaultMaxArgs
	}
	if c.MaxArgBytes <= 0 {
		c.MaxArgBytes = DefaultMaxArgBytes
	}
	if c.MaxArgvBytes <= 0 {
		c.MaxArgvBytes = DefaultMaxArgvBytes
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.OutputBuffer <= 0 {
		c.OutputBuffer = DefaultOutputBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server serves the sockexec protocol. Create it with [New].
type Server struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // canceled at shutdown
	cancel context.CancelFunc

	limits   atomic.Pointer[Limits]
	realtime atomic.Bool                          // writeFinal may raise its thread's priority (until refused)
	names    *peer.Names                          // peer name cache
	exes     *ttlcache.Cache[string, resolvedExe] // PATH lookups (judge.go)
	// decisionErrs rate-limits the WARN of policy errors (judge.go).
	decisionErrs *ttlcache.Cache[string, struct{}]
	spawner      *sandbox.Spawner
	ownSpawn     bool // spawner made by New, closed by Shutdown
	planner      *plan.Planner
	defaults     atomic.Pointer[plan.Defaults]
	judges       *judgePool
	poller       *poller
	quotas       *quotas

	mu       sync.Mutex
	listener *net.UnixListener
	conns    map[*conn]struct{}
	wg       sync.WaitGroup // one per connection handler

	active      atomic.Int64 // connections being served
	lingering   atomic.Int64 // connections past their reply, draining late input
	busyLingers atomic.Int64 // refused connections draining late input
	rejected    atomic.Int64 // connections closed over the limit
	served      atomic.Int64 // requests completed
	spliced     atomic.Int64 // output frames sent with splice (splice.go)
	splicedIn   atomic.Int64 // stdin bytes spliced to children (splice.go)
}

// New returns a server with the given configuration. It fails when the
// server's event poller (epoll) or, without Config.Spawner, the spawner
// cannot be set up.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.MaskPatterns == nil {
		cfg.MaskPatterns = audit.DefaultMaskPatterns()
	}
	p, err := newPoller()
	if err != nil {
		return nil, fmt.Errorf("server: event poller: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger,
		conns:        make(map[*conn]struct{}),
		names:        peer.NewNames(),
		exes:         ttlcache.New[string, resolvedExe](exeTTL, 1024),
		decisionErrs: ttlcache.New[string, struct{}](decisionErrorEvery, 1024),
		spawner:      cfg.Spawner,
		judges:       newJudgePool(),
		poller:       p,
	}
	if s.spawner == nil {
		if s.spawner, err = sandbox.New(sandbox.Options{}); err != nil {
			p.close()
			return nil, fmt.Errorf("server: %w", err)
		}
		s.ownSpawn = true
	}
	sp := s.spawner
	s.planner = plan.NewPlanner(plan.ThisProcess(sp.Capabilities(), sp.Existing))
	s.limits.Store(&Limits{
		MaxConns: cfg.MaxConns, MaxConnsPerUID: cfg.MaxConnsPerUID,
		RatePerUID: cfg.RatePerUID, BurstPerUID: cfg.BurstPerUID, Deadline: cfg.Deadline, KillTimeout: cfg.KillTimeout, Path: cfg.Path,
		MaxArgs: cfg.MaxArgs, MaxArgBytes: cfg.MaxArgBytes, MaxArgvBytes: cfg.MaxArgvBytes,
	})
	s.SetDefaults(cfg.Defaults)
	s.quotas = newQuotas(cfg.QuotaInterval, s.recordQuota)
	s.quotas.metrics = cfg.Metrics
	if cfg.Metrics != nil && cfg.MetricsRegisterer != nil {
		s.registerGauges(cfg.MetricsRegisterer)
	}
	s.realtime.Store(true)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Limits are the settings of a [Server] that may change while it serves
// ([Server.SetLimits], on SIGHUP). A connection takes the limits in force
// when it is accepted and keeps them to its end. They mean what the
// fields of the same names in [Config] mean, and a zero field keeps the
// value in force.
type Limits struct {
	MaxConns                  int
	MaxConnsPerUID            int
	RatePerUID                float64
	BurstPerUID               int
	Deadline                  time.Duration
	KillTimeout               time.Duration
	Path                      string
	MaxArgs                   int
	MaxArgBytes, MaxArgvBytes int64
}

// Limits returns the limits in force.
func (s *Server) Limits() Limits { return *s.limits.Load() }

// SetLimits puts l in force for the connections accepted from now on.
func (s *Server) SetLimits(l Limits) {
	cur := *s.limits.Load()
	set := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	set(&cur.MaxConns, l.MaxConns)
	set(&cur.MaxConnsPerUID, l.MaxConnsPerUID)
	set(&cur.BurstPerUID, l.BurstPerUID)
	if l.RatePerUID != 0 {
		cur.RatePerUID = max(0, l.RatePerUID) // negative turns it off
	}
	set(&cur.MaxArgs, l.MaxArgs)
	if l.Deadline != 0 {
		cur.Deadline = l.Deadline
	}
	if l.KillTimeout > 0 {
		cur.KillTimeout = l.KillTimeout
	}
	if l.Path != "" {
		cur.Path = l.Path
	}
	if l.MaxArgBytes > 0 {
		cur.MaxArgBytes = l.MaxArgBytes
	}
	if l.MaxArgvBytes > 0 {
		cur.MaxArgvBytes = l.MaxArgvBytes
	}
	s.limits.Store(&cur)
}

// SetDefaults puts new sandbox defaults in force for the requests judged
// from now on (SIGHUP). d.KillTimeout 0 keeps the server's.
func (s *Server) SetDefaults(d plan.Defaults) {
	if d.KillTimeout <= 0 {
		d.KillTimeout = s.limits.Load().KillTimeout
	}
	s.defaults.Store(&d)
}

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown].
var ErrServerClosed = errors.New("server closed")

// Serve accepts connections on l until [Server.Shutdown] is called, then
// returns ErrServerClosed. Each connection is served on its own goroutine.
func (s *Server) Serve(l *net.UnixListener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listener = l
	s.mu.Unlock()

	var backoff time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			// Out of fds or another transient failure: back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		lim := s.limits.Load()
		// The caller's quota first, the global limit last.
		p, perr := peer.FromConn(c)
		if perr == nil {
			q := lim.perUID()
			if kind := s.quotas.admit(p, q); kind != "" {
				s.rejected.Add(1)
				s.cfg.Metrics.request(OutcomeRefused)
				s.quotas.refuse(p, kind, q)
				replyBusy(c, p.UID, kind, q, lim.MaxConns, s.lingerBusy)
				continue
			}
		}
		if s.active.Load() >= int64(lim.MaxConns) {
			if perr == nil {
				s.quotas.leave(p.UID)
			}
			s.rejected.Add(1)
			s.cfg.Metrics.request(OutcomeRefused)
			s.log.Warn("connection limit reached; closing new connection", "max_conns", lim.MaxConns)
			c.Close()
			continue
		}
		s.active.Add(1)
		cn := newConn(s, c)
		cn.peer = p // not yet seen by any other goroutine
		cn.quotaUID, cn.inQuota = p.UID, perr == nil
		s.mu.Lock()
		s.conns[cn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		// Its end (cn.end) gives the slot back and calls s.wg.Done.
		go cn.serve(s.ctx)
	}
}

// Shutdown stops accepting, kills every running child (SIGTERM, then
// SIGKILL after the kill timeout), and waits until every connection has
// ended or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.cancel()
	if s.listener != nil {
		s.listener.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.quotas.close()
		s.poller.close()
		if s.ownSpawn {
			s.spawner.Close()
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown: %w", ctx.Err())
	}
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	Active   int64 // connections being served
	Rejected int64 // connections closed because of the limit
	Served   int64 // requests that reached a final reply or were closed
}

// Usage returns each caller's connections and the refusals not yet
// recorded, by uid.
func (s *Server) Usage() []Usage { return s.quotas.usage() }

// recordQuota records a caller's refused connections: one audit record
// and one WARN per caller per QuotaInterval.
func (s *Server) recordQuota(q audit.Quota) {
	s.log.Warn("connections over a caller's quota turned away", "peer_uid", q.Peer.UID, "limit", q.Limit,
		"refused", q.Refused, "since", q.Since.Format(time.RFC3339))
	if a := s.cfg.Audit; a != nil {
		if err := a.Quota(q); err != nil {
			s.log.Error("audit", "err", err)
		}
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Active: s.active.Load(), Rejected: s.rejected.Load(), Served: s.served.Load()}
}

// ConnInfo describes one live connection, for operator dumps.
type ConnInfo struct {
	RequestID string
	State     ConnState
	Peer      peer.Peer
	Argv      []string
	ChildPid  int
	Since     time.Time
}

// Conns returns a snapshot of the live connections.
func (s *Server) Conns() []ConnInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ConnInfo, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c.info())
	}
	return out
}
