// Package plan turns a policy decision into what the server will do: the
// one translation from "allowed, with these settings" to a [sandbox.Spec]
// with its program, timeouts and caps, shared by the server and by
// `sockwarden check`.
//
// [Planner.Plan] takes the decision, the server's configured [Defaults]
// (which fill what the decision leaves out) and the request, and returns
// a [Plan]. Every check that can refuse a request after the policy
// allowed it happens here, so that check shows the same answer the
// server gives:
//
//   - running as uid 0 without AllowRoot (explicitly, or by inheriting
//     the identity of a server that runs as root);
//   - a run_as user or group that does not exist;
//   - an rlimit name the kernel does not know;
//   - a relative argv[0], or one not found on the server's PATH;
//   - a Landlock rule set or a cgroup limit this host cannot enforce
//     (unless best effort is configured).
//
// The first three are denials of the decision (exec.decision says
// allow false, the client gets "sockwarden: denied: ..." and 126); the
// others are allowed requests that cannot start (exec.start records the
// error, the client gets the reason and 127 or 126), as a spawn failure
// is.
package plan

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sockwarden/sockwarden/internal/ttlcache"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
)

// Exit statuses of a request whose program never ran, as a shell gives
// them.
const (
	StatusDenied   = 126 // denied, or cannot be executed
	StatusNotFound = 127 // no such program
)

// Defaults fill what a policy decision leaves out. They come from the
// server's configuration ([sandbox] and [server] sections).
type Defaults struct {
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
	// cannot fully enforce with what it can (exec.start says so) instead
	// of refusing it.
	LandlockBestEffort bool
	// CgroupBestEffort runs a request whose cgroup limits the host cannot
	// enforce without them instead of refusing it.
	CgroupBestEffort bool
	// KillTimeout is the time between SIGTERM and SIGKILL when the
	// decision sets none (sockexec's -k).
	KillTimeout time.Duration
	// MaxOutputBytes and MaxStdinBytes cap a request's output and stdin
	// when the decision sets no cap; 0 is no cap.
	MaxOutputBytes, MaxStdinBytes int64
}

// Host is what the server can give a request on this host.
type Host struct {
	// UID and GID are the server's own identity, which a program runs as
	// when neither the decision nor the defaults name one; Groups its
	// supplementary groups.
	UID, GID uint32
	Groups   []uint32
	// Caps is the containment the spawner offers.
	Caps sandbox.Capabilities
	// Existing returns the paths that exist (sandbox.Spawner.Existing,
	// which shares its cache with the Landlock rulesets); nil stats
	// each path.
	Existing func(paths []string) []string
}

// ThisProcess is the Host of a server that is the calling process, with
// the containment caps and the path check existing (nil: stat each path).
func ThisProcess(caps sandbox.Capabilities, existing func([]string) []string) Host {
	h := Host{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Caps: caps, Existing: existing}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			h.Groups = append(h.Groups, uint32(g))
		}
	}
	return h
}

// isSelf reports whether c is the server's own identity: its uid and gid,
// and (when supplementary groups were asked for) exactly its groups.
func (h *Host) isSelf(c *sandbox.Credential, groupsAsked bool) bool {
	if c.UID != h.UID || c.GID != h.GID {
		return false
	}
	if !groupsAsked {
		return true
	}
	want := slices.Clone(c.Groups)
	have := slices.Clone(h.Groups)
	slices.Sort(want)
	slices.Sort(have)
	return slices.Equal(slices.Compact(want), slices.Compact(have))
}

// String describes the containment h gives, in one line: what the
// server says at start-up and `sockwarden check` prints.
func (h Host) String() string {
	var b strings.Builder
	cg := h.Caps.Cgroups
	if cg.Available {
		fmt.Fprintf(&b, "a cgroup v2 per request under %s", cg.Parent)
	} else {
		fmt.Fprintf(&b, "process groups only, no cgroups (%s)", cg.Reason)
	}
	if h.Caps.SetID {
		b.WriteString("; programs run as the users the policy names")
	} else {
		fmt.Fprintf(&b, "; programs run as the server's own uid %d only (no privilege to switch users)", h.UID)
	}
	if h.Caps.LandlockABI > 0 {
		fmt.Fprintf(&b, "; Landlock ABI %d", h.Caps.LandlockABI)
	} else {
		b.WriteString("; no Landlock")
	}
	if h.Caps.Namespaces {
		b.WriteString("; an IPC namespace per request (and network \"none\" on request)")
	} else {
		b.WriteString("; no namespaces (no CAP_SYS_ADMIN: the host's IPC, and network \"none\" is refused)")
	}
	if r := h.Caps.DynamicUIDs; r.First != 0 {
		fmt.Fprintf(&b, "; dynamic uids %v", r)
		if n := h.Caps.DynamicUIDsHeld; n > 0 {
			fmt.Fprintf(&b, " (%d held by processes running at start-up, kept out until they end)", n)
		}
	}
	if h.Caps.TmpDir != "" {
		fmt.Fprintf(&b, "; private tmpdirs under %s", h.Caps.TmpDir)
	} else {
		fmt.Fprintf(&b, "; no private tmpdirs (%s)", h.Caps.TmpDirReason)
	}
	b.WriteString("; seccomp: Docker's default profile unless the decision says otherwise")
	return b.String()
}

// Degraded reports whether h lacks a layer a root server on a current
// kernel has: cgroups, switching users or Landlock.
func (h Host) Degraded() bool {
	return !h.Caps.Cgroups.Available || !h.Caps.SetID || h.Caps.LandlockABI == 0
}

// Request is what the policy judged.
type Request struct {
	// ID identifies the request in logs and audit records.
	ID string
	// Argv is the argv exactly as the client sent it.
	Argv []string
	// Exe is Argv[0] resolved by [ResolveExe]; "" when it could not be.
	Exe string
	// ExeErr says why Argv[0] could not be resolved.
	ExeErr error
	// Peer is the client.
	Peer peer.Peer
}

// A Plan is everything the server does with one judged request: deny it,
// refuse to start it, or run it in Spec.
type Plan struct {
	// Allow is true when the policy allowed the request and its sandbox
	// could be planned. A request that is allowed may still not start
	// (StartErr).
	Allow bool
	// Message is shown to the client on deny.
	Message string
	// Reasons explain the outcome to the operator, never to the client.
	Reasons []string
	// Err is the error that made the plan a deny: the policy's, or why
	// the decision cannot be carried out. Audit only.
	Err error
	// StartErr, for an allowed request, says why its program cannot be
	// started (no such program, a relative argv[0], a sandbox layer the
	// host lacks): the server records it in exec.start and answers with
	// Status. It is nil when the program starts.
	StartErr error
	// Status is the exit status the client gets when the program does not
	// run: 126 on a deny, 126 or 127 with StartErr; 0 otherwise.
	Status int

	// Spec is the program and its sandbox, Path and Args included.
	Spec sandbox.Spec
	// DroppedPaths are the Landlock paths of the decision that do not
	// exist on this host and were left out: dropping a path only ever
	// takes access away.
	DroppedPaths []string
	// Timeout is the decision's run-time deadline; 0 leaves only the
	// server's connection deadline.
	Timeout time.Duration
	// KillTimeout is the TERM-to-KILL grace period.
	KillTimeout time.Duration
	// MaxOutputBytes caps stdout plus stderr (0: no cap); past it the
	// program is killed. MaxStdinBytes caps the stdin forwarded to the
	// program (0: no cap).
	MaxOutputBytes, MaxStdinBytes int64

	// Revision, EvalDuration and Cached are the decision's (see
	// policy.Decision), for the audit trail.
	Revision     string
	EvalDuration time.Duration
	Cached       bool
	// Quota is the decision's own limit of requests at once (nil: none).
	Quota *policy.Quota
	// Mask is the decision's (denied or not): what of the argv the audit
	// record and the operator log must not show.
	Mask *policy.Mask
	// Explain sends the client a stderr line per sandbox denial of the
	// program (the decision's explain).
	Explain bool
}

// ClientLine is the one stderr line the client gets when the program does
// not run ("" when it runs), as the server sends it.
func (p *Plan) ClientLine(requestID string) string {
	switch {
	case !p.Allow:
		msg := p.Message
		if msg == "" {
			msg = "not allowed by policy"
		}
		return fmt.Sprintf("sockwarden: denied: %s (request %s)\n", OneLine(msg), requestID)
	case p.StartErr != nil:
		return StartErrLine(p.Spec.Args[0], p.StartErr)
	}
	return ""
}

// StartErrLine is the stderr line of a program that cannot be started.
func StartErrLine(argv0 string, err error) string {
	return fmt.Sprintf("sockwarden: %q: %v\n", argv0, err)
}

// OneLine keeps a client-facing message on one line.
func OneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// A Planner makes Plans for one host. It caches user and group lookups
// for a minute (peer.NameTTL). It is safe for concurrent use.
type Planner struct {
	host Host
	ids  *ttlcache.Cache[string, idEntry]
}

type idEntry struct {
	uid, gid uint32
	err      error
}

// NewPlanner returns a Planner for host h.
func NewPlanner(h Host) *Planner {
	if h.Existing == nil {
		h.Existing = statExisting
	}
	return &Planner{host: h, ids: ttlcache.New[string, idEntry](peer.NameTTL, 4096)}
}

// Host returns what the Planner plans for.
func (pl *Planner) Host() Host { return pl.host }

func statExisting(paths []string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Plan turns the decision d on req into a Plan, with def filling what d
// leaves out.
func (pl *Planner) Plan(d *policy.Decision, def *Defaults, req *Request) *Plan {
	p := &Plan{
		Allow:        d.Allow,
		Message:      d.Message,
		Reasons:      d.Reasons,
		Err:          d.Err,
		Revision:     d.Revision,
		EvalDuration: d.EvalDuration,
		Cached:       d.Cached,
		Mask:         d.Mask,
		Quota:        d.Quota,
		Explain:      d.Explain,
	}
	if !d.Allow {
		p.Status = StatusDenied
		return p
	}
	if err := pl.sandbox(d, def, p); err != nil {
		// The policy allowed what this server cannot carry out: deny.
		p.Allow = false
		p.Status = StatusDenied
		p.Message = err.Error()
		p.Err = err
		p.Reasons = append(p.Reasons[:len(p.Reasons):len(p.Reasons)], "sandbox: "+err.Error())
		return p
	}
	p.Spec.Path = req.Exe
	p.Spec.Args = req.Argv
	switch {
	case req.ExeErr != nil || req.Exe == "":
		p.StartErr = req.ExeErr
		if p.StartErr == nil {
			p.StartErr = errCommandNotFound
		}
		p.Status = StatusNotFound
	default:
		if err := pl.host.Caps.Check(&p.Spec); err != nil {
			p.StartErr = err
			p.Status = StatusDenied
		}
	}
	return p
}

var (
	errCommandNotFound = errors.New("command not found")
	errRelativePath    = errors.New("relative program paths are not allowed")
)

// ResolveExe resolves argv[0] with the server's PATH (path), never the
// client's. A name with a slash must be absolute (the server's working
// directory means nothing to a client) and is kept as it is, not cleaned:
// "/usr/bin/../bin/sh" is not the "/usr/bin/sh" of a policy's
// allow-list, and lexical cleaning can name another file than the kernel
// would when a component is a symlink. The server executes exactly the
// path the policy judged. A bare name is looked up in the absolute
// directories of path, and must name an executable regular file.
func ResolveExe(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return "", errRelativePath
		}
		return name, nil
	}
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return "", errCommandNotFound
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errCommandNotFound
}

// sandbox fills p's Spec and limits from the decision and the defaults.
func (pl *Planner) sandbox(d *policy.Decision, def *Defaults, p *Plan) error {
	spec := &p.Spec

	// Identity.
	userName, groupName := def.User, def.Group
	var groups []string
	if d.RunAs != nil && d.RunAs.Dynamic {
		if pl.host.Caps.DynamicUIDs.First == 0 {
			return errors.New("run_as dynamic: this server has no dynamic uids (sandbox.dynamic_uids is empty, or it cannot switch users)")
		}
		spec.DynamicUser = true
		userName, groupName = "", ""
	} else if d.RunAs != nil {
		userName, groupName, groups = d.RunAs.User, d.RunAs.Group, d.RunAs.Groups
	}
	if userName != "" || groupName != "" {
		cred, err := pl.credential(userName, groupName, groups)
		if err != nil {
			return err
		}
		spec.Credential = cred
		if !pl.host.Caps.SetID {
			// A server that cannot switch users runs programs as
			// itself, which is all it can do: a decision that names
			// another identity cannot be carried out.
			if !pl.host.isSelf(cred, groups != nil) {
				return fmt.Errorf("this server runs as uid %d without the privilege to switch users (CAP_SETUID, CAP_SETGID), so it cannot run the program as uid %d gid %d",
					pl.host.UID, cred.UID, cred.GID)
			}
			spec.Credential = nil
		}
	}
	runsAsRoot := (spec.Credential == nil && !spec.DynamicUser && pl.host.UID == 0) || (spec.Credential != nil && spec.Credential.UID == 0)
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
		if name == "cpu" && cur != sandbox.RlimitInfinity {
			// A soft limit below the hard one ends a busy program with
			// SIGXCPU (which it may catch) a second before SIGKILL.
			max = cur + 1
		}
		spec.Rlimits = append(spec.Rlimits, sandbox.Rlimit{Resource: res, Cur: cur, Max: max})
	}

	// Landlock.
	if l := d.Landlock; l != nil {
		ll := &sandbox.Landlock{
			RO:         pl.existing(l.RO, p),
			RW:         pl.existing(l.RW, p),
			Scope:      pl.host.Caps.LandlockABI >= 6,
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

	// Namespaces: the empty network namespace when asked; an IPC
	// namespace of the request's own unless the decision says "host"
	// (or, by default, where the server cannot make one).
	switch {
	case d.Network == "none" && !pl.host.Caps.Namespaces:
		return errors.New(`network "none" needs CAP_SYS_ADMIN, which this server lacks`)
	case d.IPC == "private" && !pl.host.Caps.Namespaces:
		return errors.New(`ipc "private" needs CAP_SYS_ADMIN, which this server lacks`)
	}
	spec.NoNetwork = d.Network == "none"
	if d.TmpDir {
		if pl.host.Caps.TmpDir == "" {
			return fmt.Errorf("tmpdir: this server has no private temporary directories (%s)", pl.host.Caps.TmpDirReason)
		}
		spec.TmpDir = true
	}
	spec.PrivateIPC = d.IPC == "private" || (d.IPC == "" && pl.host.Caps.Namespaces)

	// System call filter: Docker's default profile unless the decision
	// says otherwise.
	sc := &sandbox.Seccomp{Profile: sandbox.SeccompDefault}
	if s := d.Seccomp; s != nil {
		sc.Allow, sc.Deny = s.Allow, s.Deny
		if s.Profile != "" {
			sc.Profile = s.Profile
		}
	}
	if l := d.Landlock; l != nil && l.UDP {
		if l.ConnectTCP == nil && l.BindTCP == nil {
			return errors.New("landlock.udp without connect_tcp or bind_tcp: UDP is only refused when TCP is restricted")
		}
		spec.Landlock.UDP = true
	}
	if err := sandbox.CheckSeccomp(sc, spec.Landlock != nil && !spec.Landlock.UnrestrictedTCP); err != nil {
		return err
	}
	if sc.Profile != sandbox.SeccompNone || len(sc.Deny) > 0 {
		spec.Seccomp = sc
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

	p.Timeout = d.Timeout
	p.KillTimeout = pick(d.KillTimeout, def.KillTimeout)
	p.MaxOutputBytes = pick(d.MaxOutputBytes, def.MaxOutputBytes)
	p.MaxStdinBytes = pick(d.MaxStdinBytes, def.MaxStdinBytes)
	return nil
}

// existing returns the paths that exist, noting the others in p.
func (pl *Planner) existing(paths []string, p *Plan) []string {
	out := pl.host.Existing(paths)
	if len(out) < len(paths) {
		for _, x := range paths {
			if !slices.Contains(out, x) {
				p.DroppedPaths = append(p.DroppedPaths, x)
			}
		}
	}
	return out
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

// credential resolves names or numeric ids.
func (pl *Planner) credential(userName, groupName string, groups []string) (*sandbox.Credential, error) {
	c := &sandbox.Credential{}
	if userName != "" {
		uid, gid, err := pl.user(userName)
		if err != nil {
			return nil, err
		}
		c.UID, c.GID = uid, gid
	} else {
		c.UID, c.GID = pl.host.UID, pl.host.GID
	}
	if groupName != "" {
		gid, err := pl.group(groupName)
		if err != nil {
			return nil, err
		}
		c.GID = gid
	}
	c.Groups = []uint32{}
	for _, name := range groups {
		gid, err := pl.group(name)
		if err != nil {
			return nil, err
		}
		c.Groups = append(c.Groups, gid)
	}
	return c, nil
}

func (pl *Planner) user(name string) (uid, gid uint32, err error) {
	e := pl.ids.Get("u:"+name, func() idEntry {
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

func (pl *Planner) group(name string) (uint32, error) {
	e := pl.ids.Get("g:"+name, func() idEntry {
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
