package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sockwarden/sockwarden/audit"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/sandbox"
)

// errUnaudited is what a client is told when its request was refused
// because its audit records could not be written.
const msgUnaudited = "sockwarden: unavailable: the audit log cannot be written; request refused (request %s)\n"

// auditHealthy returns why the audit trail cannot take a new request's
// records, if it cannot and the server must refuse requests because of
// it. A failed trail is probed: when writing works again, service
// resumes by itself; a file with less than its reserve free refuses new
// requests so that the running ones can still record their ends.
func (s *Server) auditHealthy() error {
	a := s.cfg.Audit
	if a == nil || s.cfg.AuditBestEffort {
		return nil
	}
	return a.Admit()
}

// refuseUnaudited answers a request that cannot be recorded.
func (cn *conn) refuseUnaudited(br *bufio.Reader, err error) {
	cn.s.cfg.Metrics.request(OutcomeRefused)
	cn.log.Error("refusing request: audit record cannot be written", "err", err)
	cn.replyNotRun(br, fmt.Sprintf(msgUnaudited, cn.id), StatusDenied)
}

// audited reports the result of writing a record: nil when it was
// written or when a failure is tolerated (best effort).
func (cn *conn) audited(what string, err error) error {
	if err == nil {
		return nil
	}
	cn.log.Error("audit record not written", "record", what, "err", err)
	if cn.s.cfg.AuditBestEffort {
		return nil
	}
	return err
}

func (cn *conn) recordDecision(req *Request, v *plan.Plan, argv, masked []string) error {
	a := cn.s.cfg.Audit
	if a == nil {
		return nil
	}
	d := audit.Decision{
		RequestID:    req.ID,
		Allow:        v.Allow,
		Message:      v.Message,
		Reasons:      v.Reasons,
		Argv:         argv,
		Masked:       masked,
		Exe:          req.Exe,
		Peer:         req.Peer,
		Revision:     v.Revision,
		EvalDuration: v.EvalDuration,
		Cached:       v.Cached,
	}
	if v.Err != nil {
		d.Error = v.Err.Error()
	}
	return cn.audited(audit.ActionDecision, a.Decision(d))
}

func (cn *conn) recordStartError(spec *sandbox.Spec, err error) {
	if a := cn.s.cfg.Audit; a != nil {
		st := audit.Start{RequestID: cn.id, Exe: spec.Path, Dir: spec.Dir, RunAs: cn.runAs(spec), Error: err.Error()}
		st.RunAs.Dynamic = spec.DynamicUser
		cn.audited(audit.ActionStart, a.Start(st))
	}
}

// runAs is the identity spec runs the program as.
func (cn *conn) runAs(spec *sandbox.Spec) audit.RunAs {
	var r audit.RunAs
	if c := spec.Credential; c != nil {
		r = audit.RunAs{UID: c.UID, GID: c.GID}
		for _, g := range c.Groups {
			r.Groups = append(r.Groups, audit.Group{ID: g, Name: cn.s.names.Group(g)})
		}
	} else {
		r = audit.RunAs{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	}
	if spec.DynamicUser {
		// A dynamic uid and gid have no names (the range was checked
		// against /etc/passwd at start-up); looking them up would ask
		// NSS about a different id at almost every request, past the
		// cache, at the cost of some 60 system calls.
		return r
	}
	r.User = cn.s.names.User(r.UID)
	r.Group = cn.s.names.Group(r.GID)
	return r
}

func (cn *conn) recordStart(pl *plan.Plan, proc *sandbox.Process) error {
	spec := &pl.Spec
	a := cn.s.cfg.Audit
	if a == nil {
		return nil
	}
	st := audit.Start{
		RequestID: cn.id,
		PID:       proc.Pid,
		PGID:      proc.Pid,
		Exe:       spec.Path,
		Dir:       spec.Dir,
		Rlimits:   rlimitsByName(spec.Rlimits),
	}
	if st.Dir == "" {
		st.Dir = "/"
	}
	if proc.Credential != nil && spec.DynamicUser {
		dyn := *spec
		dyn.Credential = proc.Credential
		spec = &dyn
	}
	st.RunAs = cn.runAs(spec)
	st.RunAs.Dynamic = spec.DynamicUser
	if l := spec.Landlock; l != nil {
		st.Landlock = &audit.Landlock{
			ABI:           proc.Landlock.ABI,
			RO:            l.RO,
			RW:            l.RW,
			TCPRestricted: !l.UnrestrictedTCP,
			ConnectTCP:    l.ConnectTCP,
			BindTCP:       l.BindTCP,
			Dropped:       pl.DroppedPaths,
			BestEffort:    l.BestEffort,
			Downgraded:    len(proc.Landlock.Downgraded) > 0,
		}
	}
	st.TmpDir = proc.TmpDir
	st.Namespaces = &audit.Namespaces{IPC: "host", Network: "host"}
	if spec.PrivateIPC {
		st.Namespaces.IPC = "private"
	}
	if spec.NoNetwork {
		st.Namespaces.Network = "none"
	}
	if sc := proc.Seccomp; sc.Profile != "" || sc.Network {
		st.Seccomp = &audit.Seccomp{Profile: sc.Profile, Allow: sc.Allow, Deny: sc.Deny, Network: sc.Network, UDP: sc.UDP}
		if st.Seccomp.Profile == "" {
			st.Seccomp.Profile = sandbox.SeccompNone
		}
	}
	return cn.audited(audit.ActionStart, a.Start(st))
}

func rlimitsByName(rl []sandbox.Rlimit) map[string]uint64 {
	if len(rl) == 0 {
		return nil
	}
	m := make(map[string]uint64, len(rl))
	for _, r := range rl {
		m[sandbox.RlimitName(r.Resource)] = r.Cur
	}
	return m
}

func (cn *conn) recordKill(proc *sandbox.Process, reason, signal string, escalated bool, err error) {
	a := cn.s.cfg.Audit
	if a == nil {
		return
	}
	k := audit.Kill{RequestID: cn.id, PID: proc.Pid, PGID: proc.Pid, Reason: reason, Signal: signal, Escalated: escalated}
	if err != nil {
		k.Error = err.Error()
	}
	cn.audited(audit.ActionKill, a.Kill(k))
}

func (cn *conn) recordExit(proc *sandbox.Process, st *sandbox.State, den *sandbox.DenialReport) {
	a := cn.s.cfg.Audit
	if a == nil {
		return
	}
	e := audit.Exit{
		RequestID:       cn.id,
		PID:             proc.Pid,
		ExitCode:        st.ExitCode,
		Signal:          signalName(st.Signal),
		Duration:        st.Wall,
		End:             time.Now(),
		StdinBytes:      cn.stdinBytes.Load(),
		StdoutBytes:     cn.stdout.bytes.Load(),
		StderrBytes:     cn.stderr.bytes.Load(),
		StdinTruncated:  cn.stdinTrunc.Load(),
		StdoutTruncated: cn.stdout.truncated.Load(),
		StderrTruncated: cn.stderr.truncated.Load(),
		UserCPU:         time.Duration(st.Rusage.Utime.Nano()),
		SystemCPU:       time.Duration(st.Rusage.Stime.Nano()),
		MaxRSS:          st.Rusage.Maxrss * 1024,
	}
	if c := st.Cgroup; c.Path != "" {
		e.Cgroup = &audit.ExitCgroup{
			Path:       c.Path,
			Killed:     c.Killed,
			OOMKills:   c.OOMKills,
			MemoryPeak: c.MemoryPeak,
			PidsPeak:   c.PidsPeak,
			CPU:        c.CPU,
			Lingering:  c.Lingering,
		}
	}
	if den != nil {
		e.Denials = auditDenials(den)
		cn.s.cfg.Metrics.sandboxDenials(den)
	}
	cn.audited(audit.ActionExit, a.Exit(e))
}

// auditDenials is a denial report as the audit trail records it.
func auditDenials(r *sandbox.DenialReport) *audit.SandboxDenials {
	d := &audit.SandboxDenials{Received: r.Received, Unlisted: r.Unlisted, Total: r.Total,
		Final: r.Final, Complete: r.Complete, Landlock: make([]audit.Denial, len(r.Denials))}
	for i, x := range r.Denials {
		d.Landlock[i] = audit.Denial{Access: x.Access, Target: x.Target, Count: x.Count}
	}
	return d
}

// followDenials writes a sandbox.denials record for a child whose exit
// record listed the denials seen, not final (seen), once the report is
// final, if the final one adds to it or is incomplete. The wait is
// bounded by sandbox.DenialFinalWait; Shutdown waits for it.
func (cn *conn) followDenials(proc *sandbox.Process, seen *sandbox.DenialReport) {
	s, id, log := cn.s, cn.id, cn.log
	a := s.cfg.Audit
	if a == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		rep, _ := proc.WaitDenials(context.Background())
		if rep.Complete && rep.Received == seen.Received {
			return // the exit record had them all
		}
		s.cfg.Metrics.lateDenials(seen, &rep)
		if !rep.Complete {
			log.Warn("sandbox denials incomplete: the kernel's audit records were lost or the final count never came",
				"received", rep.Received, "total", rep.Total)
		}
		if err := a.Denials(audit.Denials{RequestID: id, PID: proc.Pid, Denials: *auditDenials(&rep)}); err != nil {
			log.Error("audit: sandbox denials", "err", err)
		}
	}()
}

func (cn *conn) recordProtocolError(pe *ProtocolError) {
	a := cn.s.cfg.Audit
	if a == nil {
		return
	}
	cn.mu.Lock()
	peer := cn.peer
	cn.mu.Unlock()
	cn.audited(audit.ActionProtocolError, a.ProtocolError(audit.ProtocolError{
		RequestID: cn.id, Peer: peer, Error: pe.Err.Error(), BytesRead: pe.Offset,
	}))
}

// closeProc closes the server's ends of a child's pipes.
func closeProc(p *sandbox.Process) {
	p.Stdin.Close()
	p.Stdout.Close()
	p.Stderr.Close()
}
