package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
)

// SandboxDefaults fill what a policy decision leaves out.
type SandboxDefaults struct {
	// User and Group run the program when the decision has no run_as:
	// names or numeric ids; empty means the server's own identity.
	User, Group string
	// AllowRoot permits running programs as uid 0. Without it a decision
	// that would run one as root (explicitly, or by inheriting the
	// identity of a server running as root) is a deny.
	AllowRoot bool
	// Env, Cwd and Umask are the program's environment, working
	// directory and umask when the decision does not set them.
	Env   map[string]string
	Cwd   string
	Umask *uint32
	// Rlimits are resource limits by name; the decision's override them
	// one by one.
	Rlimits map[string]uint64
	// LandlockBestEffort runs a request whose Landlock rules the kernel
	// cannot fully enforce with what it can (the exec.start record says
	// so) instead of denying it.
	LandlockBestEffort bool
	// CgroupBestEffort runs a request whose cgroup limits the host cannot
	// enforce without them instead of denying it.
	CgroupBestEffort bool
	// Timeout, KillTimeout and the caps apply when the decision has none.
	Timeout, KillTimeout          time.Duration
	MaxOutputBytes, MaxStdinBytes int64
}

// PolicyGate is the [Authorizer] that asks an OPA/Rego policy and turns
// its decision into the sandbox the program runs in. The policy can be
// replaced at any time ([PolicyGate.Swap]); a request is judged and run
// under the policy that was current when it was judged.
type PolicyGate struct {
	engine   atomic.Pointer[policy.Engine]
	defaults atomic.Pointer[SandboxDefaults]
	ids      idCache
	paths    pathCache
	scope    bool // Landlock scoping available (ABI >= 6)
}

// NewPolicyGate returns a gate judging with e.
func NewPolicyGate(e *policy.Engine, d SandboxDefaults) *PolicyGate {
	g := &PolicyGate{scope: sandbox.LandlockABI() >= 6}
	g.engine.Store(e)
	g.defaults.Store(&d)
	return g
}

// SetDefaults puts new sandbox defaults in force for the requests judged
// from now on.
func (g *PolicyGate) SetDefaults(d SandboxDefaults) { g.defaults.Store(&d) }

// Engine returns the policy in force.
func (g *PolicyGate) Engine() *policy.Engine { return g.engine.Load() }

// Swap puts e in force for the requests judged from now on.
func (g *PolicyGate) Swap(e *policy.Engine) { g.engine.Store(e) }

// Authorize implements [Authorizer].
func (g *PolicyGate) Authorize(ctx context.Context, req *Request) (*Verdict, error) {
	e := g.engine.Load()
	return g.verdict(e.Evaluate(ctx, g.input(req))), nil
}

// AuthorizeCached is Authorize for a request whose decision the policy
// engine has memoized (see policy.Engine.Lookup); ok is false otherwise.
// It needs no evaluation, so the server calls it on the connection's
// goroutine and hands only the rest to its judges.
func (g *PolicyGate) AuthorizeCached(ctx context.Context, req *Request) (v *Verdict, ok bool) {
	d, ok := g.engine.Load().Lookup(ctx, g.input(req))
	if !ok {
		return nil, false
	}
	return g.verdict(d), true
}

// input is the policy's view of req.
func (g *PolicyGate) input(req *Request) policy.Input {
	return policy.Input{
		Argv: req.Argv,
		Exe:  req.Exe,
		Peer: policy.Peer{
			Pid: int(req.Peer.Pid), UID: req.Peer.UID, GID: req.Peer.GID,
			User: req.Peer.User, Group: req.Peer.Group, Exe: req.Peer.Exe,
		},
		Socket:    req.Socket,
		RequestID: req.ID,
		Time:      req.Time,
	}
}

// verdict turns the decision d into a verdict with its sandbox.
func (g *PolicyGate) verdict(d policy.Decision) *Verdict {
	v := &Verdict{
		Allow:        d.Allow,
		Message:      d.Message,
		Reasons:      d.Reasons,
		Revision:     d.Revision,
		EvalDuration: d.EvalDuration,
		Cached:       d.Cached,
		Err:          d.Err,
	}
	if !d.Allow {
		return v
	}
	if err := g.sandbox(&d, v); err != nil {
		// The policy allowed a sandbox this server cannot set up: deny.
		v.Allow = false
		v.Message = err.Error()
		v.Err = err
		v.Reasons = append(v.Reasons, "sandbox: "+err.Error())
	}
	return v
}

// sandbox fills v's Spec and limits from the decision and the defaults.
func (g *PolicyGate) sandbox(d *policy.Decision, v *Verdict) error {
	def := g.defaults.Load()
	spec := &v.Spec

	// Identity.
	user, group := def.User, def.Group
	var groups []string
	if d.RunAs != nil {
		user, group, groups = d.RunAs.User, d.RunAs.Group, d.RunAs.Groups
	}
	if user != "" || group != "" {
		cred, err := g.credential(user, group, groups)
		if err != nil {
			return err
		}
		spec.Credential = cred
	}
	runsAsRoot := (spec.Credential == nil && os.Getuid() == 0) || (spec.Credential != nil && spec.Credential.UID == 0)
	if runsAsRoot && !def.AllowRoot {
		return errors.New("the policy would run the program as root, which this server does not allow")
	}
	spec.AllowRoot = def.AllowRoot

	// Limits.
	limits := make(map[string]uint64, len(def.Rlimits)+len(d.Rlimits))
	for k, x := range def.Rlimits {
		limits[k] = x
	}
	for k, x := range d.Rlimits {
		limits[k] = x
	}
	names := make([]string, 0, len(limits))
	for k := range limits {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		res, err := sandbox.ParseRlimitName(name)
		if err != nil {
			return fmt.Errorf("rlimit %q: %w", name, err)
		}
		cur := limits[name]
		max := cur
		if name == "cpu" && cur != policy.RlimitInfinity {
			// A soft limit below the hard one ends a busy program with
			// SIGXCPU (which it may catch) a second before SIGKILL.
			max = cur + 1
		}
		spec.Rlimits = append(spec.Rlimits, sandbox.Rlimit{Resource: res, Cur: cur, Max: max})
	}

	// Landlock.
	if l := d.Landlock; l != nil {
		ll := &sandbox.Landlock{
			RO:         g.paths.existing(l.RO),
			RW:         g.paths.existing(l.RW),
			Scope:      g.scope,
			BestEffort: def.LandlockBestEffort,
		}
		if l.ConnectTCP == nil && l.BindTCP == nil {
			ll.UnrestrictedTCP = true
		} else {
			ll.ConnectTCP = ports(l.ConnectTCP)
			ll.BindTCP = ports(l.BindTCP)
		}
		spec.Landlock = ll
		spec.NoNewPrivs = true
	}

	// Cgroup limits. Without them the request still gets its own cgroup
	// where the host has cgroup v2.
	if c := d.Cgroup; c != nil {
		spec.Cgroup = &sandbox.CgroupSpec{
			MemoryMax:     c.MemoryMax,
			MemorySwapMax: c.MemorySwapMax,
			PidsMax:       c.PidsMax,
			CPUMax:        c.CPUMax,
			BestEffort:    def.CgroupBestEffort,
		}
	}

	// Environment, directory, umask.
	env := d.Env
	if env == nil {
		env = def.Env
	}
	spec.Env = make([]string, 0, len(env))
	for k, x := range env {
		spec.Env = append(spec.Env, k+"="+x)
	}
	sort.Strings(spec.Env)
	spec.Dir = d.Cwd
	if spec.Dir == "" {
		spec.Dir = def.Cwd
	}
	spec.Umask = d.Umask
	if spec.Umask == nil {
		spec.Umask = def.Umask
	}

	v.Timeout = pick(d.Timeout, def.Timeout)
	v.KillTimeout = pick(d.KillTimeout, def.KillTimeout)
	v.MaxOutputBytes = pick(d.MaxOutputBytes, def.MaxOutputBytes)
	v.MaxStdinBytes = pick(d.MaxStdinBytes, def.MaxStdinBytes)
	return nil
}

func pick[T comparable](v, def T) T {
	var zero T
	if v != zero {
		return v
	}
	return def
}

func ports(p []int) []uint16 {
	out := make([]uint16, len(p))
	for i, x := range p {
		out[i] = uint16(x) // the policy package checked 1..65535
	}
	return out
}

// pathCache remembers for a second whether a path exists: a policy's
// Landlock paths are the same few for every request, and a stat of each
// costs more than the rest of building the sandbox.
type pathCache struct {
	mu sync.Mutex
	m  map[string]pathEntry
}

type pathEntry struct {
	exists bool
	at     time.Time
}

// pathTTL bounds how stale an answer of pathCache may be. A path removed
// meanwhile makes the spawn fail with a clear error; one created meanwhile
// is granted a second later.
const pathTTL = time.Second

// existing drops the paths that do not exist here: a policy written for
// many hosts lists some that a given host lacks (/lib64 on arm64), and
// Landlock can only grant access to what exists. Dropping a path only
// ever takes access away.
func (c *pathCache) existing(paths []string) []string {
	out := make([]string, 0, len(paths))
	now := time.Now()
	for _, p := range paths {
		c.mu.Lock()
		e, ok := c.m[p]
		c.mu.Unlock()
		if !ok || now.Sub(e.at) > pathTTL {
			_, err := os.Stat(p)
			e = pathEntry{exists: err == nil, at: now}
			c.mu.Lock()
			if c.m == nil || len(c.m) > 4096 {
				c.m = make(map[string]pathEntry)
			}
			c.m[p] = e
			c.mu.Unlock()
		}
		if e.exists {
			out = append(out, p)
		}
	}
	return out
}

// credential resolves names or numeric ids.
func (g *PolicyGate) credential(userName, groupName string, groups []string) (*sandbox.Credential, error) {
	c := &sandbox.Credential{}
	if userName != "" {
		uid, gid, err := g.ids.user(userName)
		if err != nil {
			return nil, err
		}
		c.UID, c.GID = uid, gid
	} else {
		c.UID = uint32(os.Getuid())
		c.GID = uint32(os.Getgid())
	}
	if groupName != "" {
		gid, err := g.ids.group(groupName)
		if err != nil {
			return nil, err
		}
		c.GID = gid
	}
	c.Groups = []uint32{}
	for _, name := range groups {
		gid, err := g.ids.group(name)
		if err != nil {
			return nil, err
		}
		c.Groups = append(c.Groups, gid)
	}
	return c, nil
}

// idCache resolves user and group names to ids, caching for nameTTL.
type idCache struct {
	mu sync.Mutex
	m  map[string]idEntry
}

type idEntry struct {
	uid, gid uint32
	err      error
	at       time.Time
}

func (c *idCache) get(key string, find func() idEntry) idEntry {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && time.Since(e.at) < nameTTL {
		return e
	}
	e = find()
	e.at = time.Now()
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = make(map[string]idEntry)
	}
	c.m[key] = e
	c.mu.Unlock()
	return e
}

func (c *idCache) user(name string) (uid, gid uint32, err error) {
	e := c.get("u:"+name, func() idEntry {
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			// A numeric uid need not exist in /etc/passwd; its primary
			// group is then the same number.
			if u, err := user.LookupId(name); err == nil {
				gid, _ := strconv.ParseUint(u.Gid, 10, 32)
				return idEntry{uid: uint32(n), gid: uint32(gid)}
			}
			return idEntry{uid: uint32(n), gid: uint32(n)}
		}
		u, err := user.Lookup(name)
		if err != nil {
			return idEntry{err: fmt.Errorf("run_as user %q: %w", name, err)}
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return idEntry{uid: uint32(uid), gid: uint32(gid)}
	})
	return e.uid, e.gid, e.err
}

func (c *idCache) group(name string) (uint32, error) {
	e := c.get("g:"+name, func() idEntry {
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			return idEntry{gid: uint32(n)}
		}
		g, err := user.LookupGroup(name)
		if err != nil {
			return idEntry{err: fmt.Errorf("run_as group %q: %w", name, err)}
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		return idEntry{gid: uint32(gid)}
	})
	return e.gid, e.err
}
