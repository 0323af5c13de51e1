package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/sockwarden/sockwarden/sandbox"
)

// Decision is the policy's answer for one request. Everything but Allow is
// optional: a zero value (nil, "", 0) means "unset", and the server's
// configured defaults fill the gap.
//
// It is decoded strictly from the policy's decision document: an unknown
// key, a wrong type or an out-of-range value is an error, and an error is a
// deny (Allow false, Err set, every other policy field zero).
type Decision struct {
	// Allow is true when the request may run. Required in the document.
	Allow bool
	// Message is shown to the client on deny.
	Message string
	// Reasons are audit-only explanations. A Rego set or array of strings.
	Reasons []string
	// RunAs is the identity the child runs as; nil = server default.
	RunAs *RunAs
	// Rlimits maps a resource name (see [sandbox.RlimitNames]) to the
	// value for both the soft and the hard limit. [sandbox.RlimitInfinity]
	// is "unlimited".
	Rlimits map[string]uint64
	// Landlock is the Landlock ruleset; nil = no Landlock rules asked for.
	Landlock *Landlock
	// Seccomp is the system call filter; nil = the default profile.
	Seccomp *Seccomp
	// Network is "none" (an empty network namespace) or "host"; "" =
	// "host".
	Network string
	// IPC is "private" (an IPC namespace of the request's own) or
	// "host"; "" = private where the server can make one.
	IPC string
	// TmpDir gives the program a private temporary directory, exported
	// as TMPDIR and removed with the request.
	TmpDir bool
	// Quota bounds how many requests this decision's rule may run at
	// once, across callers; nil = none.
	Quota *Quota
	// Explain sends the client one stderr line per distinct sandbox
	// denial of the program, before the exit status (where the server
	// reports denials; see [sandbox.DenialWatcher]).
	Explain bool
	// Mask names what of the argv the audit record and the operator log
	// must not show; nil = only the configured patterns. It applies to
	// denied requests too.
	Mask *Mask
	// Cgroup are the limits of the child's cgroup; nil = none asked for.
	Cgroup *Cgroup
	// Timeout is the run-time deadline of the child; 0 = unset.
	Timeout time.Duration
	// KillTimeout is the TERM-to-KILL grace period; 0 = unset.
	KillTimeout time.Duration
	// Env is the complete environment of the child; nil = server default,
	// non-nil and empty = an empty environment.
	Env map[string]string
	// Cwd is the absolute working directory of the child; "" = unset.
	Cwd string
	// Umask of the child; nil = unset. Written as an octal string ("0077").
	Umask *uint32
	// MaxOutputBytes caps stdout+stderr; 0 = unset.
	MaxOutputBytes int64
	// MaxStdinBytes caps the data read from the client; 0 = unset.
	MaxStdinBytes int64

	// Revision is the revision of the policy that decided (set by the engine).
	Revision string
	// EvalDuration is the time the evaluation took (set by the engine); for
	// a Cached decision, the time the cache lookup took.
	EvalDuration time.Duration
	// Cached is true when the engine returned a memoized decision instead of
	// evaluating the policy (see [Engine.Cacheable]). It is never true with
	// Err set: only successful decisions are cached.
	Cached bool
	// Err is non-nil when the deny is due to an error: no policy, compile,
	// evaluation, undefined decision, timeout or decode error. It wraps one of
	// [ErrNoPolicy], [ErrEvaluation], [ErrUndefined], [ErrTimeout],
	// [ErrCanceled] or [ErrDecode]. Message is then generic; the detail
	// belongs in the audit log only.
	Err error
}

// RunAs is the identity the child runs as. Each field is a name or a
// decimal id; the policy may also give ids as JSON numbers.
type RunAs struct {
	// User is a user name or uid; "" = unset.
	User string `json:"user,omitempty"`
	// Group is a group name or gid; "" = unset (the user's primary group).
	Group string `json:"group,omitempty"`
	// Groups are the supplementary groups. nil = unset (server default);
	// non-nil and empty = no supplementary groups.
	Groups []string `json:"groups,omitempty"`
	// Dynamic runs the program as a uid (and gid) of its own for the
	// request's lifetime, from [sandbox] dynamic_uids; it excludes User,
	// Group and Groups.
	Dynamic bool `json:"dynamic,omitempty"`
}

// Landlock is the Landlock ruleset the policy asks for. Paths are absolute
// and cleaned; a path with a ".." element is rejected at decode time.
type Landlock struct {
	// RO are the paths (files or directory trees) readable and executable.
	RO []string `json:"ro,omitempty"`
	// RW are the paths readable, writable and executable.
	RW []string `json:"rw,omitempty"`
	// ConnectTCP are the TCP ports the child may connect to. nil = the key
	// was absent (network not restricted by the policy); non-nil and empty
	// = no TCP connect allowed.
	ConnectTCP []int `json:"connect_tcp,omitempty"`
	// BindTCP are the TCP ports the child may bind. nil = absent (not
	// restricted); non-nil and empty = no TCP bind allowed.
	BindTCP []int `json:"bind_tcp,omitempty"`
	// UDP lets plain UDP sockets through when TCP is restricted (which
	// otherwise refuses every IP socket but plain TCP).
	UDP bool `json:"udp,omitempty"`
}

// Quota is a policy rule's own limit: at most Concurrent requests whose
// decisions name the same Key run at once.
type Quota struct {
	// Key names the counter, shared by every decision that names it.
	Key string `json:"key"`
	// Concurrent is the most requests of Key running at once (>= 1).
	Concurrent int `json:"concurrent"`
}

// Mask is what of a request's argv is masked in the audit record and the
// operator log (see audit.Mask).
type Mask struct {
	// Args are argument positions (argv[0] is 0) masked whole.
	Args []int `json:"args,omitempty"`
	// Patterns are patterns of argument keys ("--api-key=") whose values
	// are masked, on top of the configured ones.
	Patterns []string `json:"patterns,omitempty"`
}

// Seccomp is the system call filter the policy asks for.
type Seccomp struct {
	// Profile is "default" (Docker's default profile) or "none"; "" =
	// "default".
	Profile string `json:"profile,omitempty"`
	// Allow are system calls allowed whatever the profile says.
	Allow []string `json:"allow,omitempty"`
	// Deny are system calls refused (EPERM) whatever the profile says.
	Deny []string `json:"deny,omitempty"`
}

// Cgroup are the cgroup v2 limits the policy asks for the child's own
// cgroup (the whole request: every process it starts). A zero field is
// unset (no limit), except MemorySwapMax, where nil is unset.
type Cgroup struct {
	// MemoryMax is memory.max in bytes; 0 = unset.
	MemoryMax int64 `json:"memory_max,omitempty"`
	// MemorySwapMax is memory.swap.max in bytes; nil = unset, 0 = no swap.
	MemorySwapMax *int64 `json:"memory_swap_max,omitempty"`
	// PidsMax is pids.max, the most processes and threads at once; 0 =
	// unset.
	PidsMax int64 `json:"pids_max,omitempty"`
	// CPUMax is cpu.max, "QUOTA PERIOD" in microseconds ("50000 100000" =
	// half a CPU), "max PERIOD", "QUOTA" or "max"; "" = unset.
	CPUMax string `json:"cpu_max,omitempty"`
}

// Errors wrapped by Decision.Err; test with errors.Is.
var (
	// ErrNoPolicy: the engine is nil or was not loaded.
	ErrNoPolicy = errors.New("no policy loaded")
	// ErrEvaluation: the policy raised an error while evaluating.
	ErrEvaluation = errors.New("policy evaluation error")
	// ErrUndefined: the query (the decision) is undefined for this input.
	ErrUndefined = errors.New("policy decision is undefined")
	// ErrTimeout: the evaluation exceeded Options.Timeout.
	ErrTimeout = errors.New("policy evaluation timed out")
	// ErrCanceled: the caller's context ended during the evaluation.
	ErrCanceled = errors.New("policy evaluation canceled")
	// ErrDecode: the decision document is malformed ([*DecodeError]).
	ErrDecode = errors.New("malformed policy decision")
)

// DecodeError reports a malformed decision document. Path names the
// offending key, e.g. "decision.rlimits.cpu".
type DecodeError struct {
	// Path is the offending key in the decision document.
	Path string
	// Problem says what is wrong with it.
	Problem string
}

// Error returns "path: problem".
func (e *DecodeError) Error() string { return e.Path + ": " + e.Problem }

// Is makes errors.Is(err, ErrDecode) true.
func (e *DecodeError) Is(target error) bool { return target == ErrDecode }

// at is the location of a value in the decision document, turned into a
// string ("decision.rlimits.cpu", "decision.reasons[2]") only for errors.
type at struct {
	parent string
	key    string
	idx    int // array index when key == ""
}

func (a at) String() string {
	if a.key == "" {
		return a.parent + "[" + strconv.Itoa(a.idx) + "]"
	}
	return a.parent + "." + a.key
}

func (a at) index(i int) at { return at{parent: a.String(), idx: i} }

func (a at) child(key string) at { return at{parent: a.String(), key: key} }

func decodeErr(where fmt.Stringer, format string, args ...any) *DecodeError {
	return &DecodeError{Path: where.String(), Problem: fmt.Sprintf(format, args...)}
}

func wantGot(where fmt.Stringer, want string, v ast.Value) *DecodeError {
	return decodeErr(where, "want %s, got %s", want, ast.TypeName(v))
}

type rootPath struct{}

func (rootPath) String() string { return "decision" }

// decisionKeys lists the keys of a decision document, for error messages.
const decisionKeys = "allow, message, reasons, run_as, rlimits, landlock, seccomp, network, ipc, tmpdir, mask, quota, explain, cgroup, timeout, kill_timeout, env, cwd, umask, max_output_bytes, max_stdin_bytes"

// CheckDecision reports what of a decoded decision no server runs as
// asked although its shape is right: an allowed run_as of uid 0 ("root"
// or "0"), which a server refuses unless sandbox.allow_root is set. It
// is what `policy test` checks beyond [DecodeDecision].
func CheckDecision(d *Decision) error {
	if d.Allow && d.RunAs != nil && (d.RunAs.User == "0" || d.RunAs.User == "root") {
		return fmt.Errorf("decision.run_as.user: %q is uid 0, which a server refuses unless sandbox.allow_root is set", d.RunAs.User)
	}
	return nil
}

// DecodeDecision decodes a decision document strictly. It is what the
// engine applies to the policy's answer; exported for tools and tests.
// The returned Decision has Revision, EvalDuration and Err unset.
func DecodeDecision(v ast.Value) (Decision, error) {
	var d Decision
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, wantGot(rootPath{}, "an object", v)
	}
	haveAllow := false
	err := eachKey(rootPath{}, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "allow":
			b, ok := val.(ast.Boolean)
			if !ok {
				return wantGot(w, "a boolean", val)
			}
			d.Allow, haveAllow = bool(b), true
		case "message":
			d.Message, err = decodeString(w, val)
		case "reasons":
			d.Reasons, err = decodeStrings(w, val, nil)
		case "run_as":
			d.RunAs, err = decodeRunAs(w, val)
		case "rlimits":
			d.Rlimits, err = decodeRlimits(w, val)
		case "landlock":
			d.Landlock, err = decodeLandlock(w, val)
		case "seccomp":
			d.Seccomp, err = decodeSeccomp(w, val)
		case "network":
			d.Network, err = decodeEnum(w, val, "host", "none")
		case "ipc":
			d.IPC, err = decodeEnum(w, val, "private", "host")
		case "mask":
			d.Mask, err = decodeMask(w, val)
		case "quota":
			d.Quota, err = decodeQuota(w, val)
		case "tmpdir":
			b, ok := val.(ast.Boolean)
			if !ok {
				return wantGot(w, "a boolean", val)
			}
			d.TmpDir = bool(b)
		case "explain":
			b, ok := val.(ast.Boolean)
			if !ok {
				return wantGot(w, "a boolean", val)
			}
			d.Explain = bool(b)
		case "cgroup":
			d.Cgroup, err = decodeCgroup(w, val)
		case "timeout":
			d.Timeout, err = decodeDuration(w, val)
		case "kill_timeout":
			d.KillTimeout, err = decodeDuration(w, val)
		case "env":
			d.Env, err = decodeEnv(w, val)
		case "cwd":
			d.Cwd, err = decodePath(w, val)
		case "umask":
			d.Umask, err = decodeUmask(w, val)
		case "max_output_bytes":
			d.MaxOutputBytes, err = decodeInt64(w, val)
		case "max_stdin_bytes":
			d.MaxStdinBytes, err = decodeInt64(w, val)
		default:
			return decodeErr(w, "unknown key (known: %s)", decisionKeys)
		}
		return err
	})
	if err != nil {
		return Decision{}, err
	}
	if !haveAllow {
		return Decision{}, decodeErr(at{parent: "decision", key: "allow"}, "missing (the only required key)")
	}
	return d, nil
}

// eachKey calls f for every member of obj; keys must be strings.
func eachKey(where fmt.Stringer, obj ast.Object, f func(key string, w at, v ast.Value) error) error {
	parent := where.String()
	return obj.Iter(func(k, v *ast.Term) error {
		key, ok := k.Value.(ast.String)
		if !ok {
			return decodeErr(where, "key %v is not a string", k)
		}
		return f(string(key), at{parent: parent, key: string(key)}, v.Value)
	})
}

func decodeString(w at, v ast.Value) (string, error) {
	s, ok := v.(ast.String)
	if !ok {
		return "", wantGot(w, "a string", v)
	}
	return string(s), nil
}

// list returns an array, or the members of a set in sorted order.
func list(w at, v ast.Value) (*ast.Array, error) {
	switch x := v.(type) {
	case ast.Set:
		return x.Sorted(), nil
	case *ast.Array:
		return x, nil
	}
	return nil, wantGot(w, "an array or a set", v)
}

// decodeStrings decodes an array or set of strings; each is passed through
// check when it is not nil. The result is non-nil even when empty.
func decodeStrings(w at, v ast.Value, check func(w at, s string) (string, error)) ([]string, error) {
	arr, err := list(w, v)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, arr.Len())
	for i := range arr.Len() {
		t := arr.Elem(i)
		s, ok := t.Value.(ast.String)
		if !ok {
			return nil, wantGot(w.index(i), "a string", t.Value)
		}
		str := string(s)
		if check != nil {
			if str, err = check(w.index(i), str); err != nil {
				return nil, err
			}
		}
		out = append(out, str)
	}
	return out, nil
}

// decodeUint decodes a whole number in [lo, hi]. "1e3" and "10.0" count
// as whole numbers (Rego arithmetic may produce them).
func decodeUint(w at, v ast.Value, lo, hi uint64) (uint64, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, wantGot(w, "a number", v)
	}
	u, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		// Slow path: exponent or fraction notation, negative, or too big.
		r, ok := new(big.Rat).SetString(string(n))
		switch {
		case !ok || !r.IsInt():
			return 0, decodeErr(w, "want a whole number, got %s", n)
		case r.Sign() < 0 || !r.Num().IsUint64():
			return 0, decodeErr(w, "%s is out of range [%d, %d]", n, lo, hi)
		}
		u = r.Num().Uint64()
	}
	if u < lo || u > hi {
		return 0, decodeErr(w, "%s is out of range [%d, %d]", n, lo, hi)
	}
	return u, nil
}

func decodeInt64(w at, v ast.Value) (int64, error) {
	u, err := decodeUint(w, v, 0, math.MaxInt64)
	return int64(u), err
}

func decodeDuration(w at, v ast.Value) (time.Duration, error) {
	s, ok := v.(ast.String)
	if !ok {
		return 0, wantGot(w, `a duration string like "30s"`, v)
	}
	d, err := time.ParseDuration(string(s))
	if err != nil {
		return 0, decodeErr(w, `want a duration like "30s" or "1m30s", got %q`, string(s))
	}
	if d < 0 {
		return 0, decodeErr(w, "negative duration %q", string(s))
	}
	return d, nil
}

func decodeUmask(w at, v ast.Value) (*uint32, error) {
	s, ok := v.(ast.String)
	if !ok {
		return nil, wantGot(w, `an octal string like "0077"`, v)
	}
	u, err := strconv.ParseUint(string(s), 8, 32)
	if err != nil || u > 0o777 {
		return nil, decodeErr(w, `want an octal string from "0000" to "0777", got %q`, string(s))
	}
	m := uint32(u)
	return &m, nil
}

// checkAbsPath accepts an absolute path without NUL bytes and without ".."
// elements, and returns it cleaned.
func checkAbsPath(w at, s string) (string, error) {
	switch {
	case s == "" || !filepath.IsAbs(s):
		return "", decodeErr(w, "want an absolute path, got %q", s)
	case strings.IndexByte(s, 0) >= 0:
		return "", decodeErr(w, "path contains a NUL byte")
	case hasDotDot(s):
		return "", decodeErr(w, "path %q contains a \"..\" element", s)
	}
	return filepath.Clean(s), nil
}

func hasDotDot(s string) bool {
	for elem := range strings.SplitSeq(s, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

func decodePath(w at, v ast.Value) (string, error) {
	s, err := decodeString(w, v)
	if err != nil {
		return "", err
	}
	return checkAbsPath(w, s)
}

// decodeID decodes a user or group: a non-empty name or decimal id, or a
// number in [0, 2^32-1] (returned as its decimal string).
func decodeID(w at, v ast.Value) (string, error) {
	switch x := v.(type) {
	case ast.String:
		s := string(x)
		if s == "" || strings.ContainsAny(s, "\x00:\n/") {
			return "", decodeErr(w, "want a user/group name or numeric id, got %q", s)
		}
		return s, nil
	case ast.Number:
		u, err := decodeUint(w, x, 0, math.MaxUint32)
		if err != nil {
			return "", err
		}
		return strconv.FormatUint(u, 10), nil
	}
	return "", wantGot(w, "a name (string) or an id (number)", v)
}

func decodeRunAs(w at, v ast.Value) (*RunAs, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var r RunAs
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "user":
			r.User, err = decodeID(w, val)
		case "group":
			r.Group, err = decodeID(w, val)
		case "groups":
			var arr *ast.Array
			if arr, err = list(w, val); err != nil {
				return err
			}
			r.Groups = make([]string, 0, arr.Len())
			for i := range arr.Len() {
				g, err := decodeID(w.index(i), arr.Elem(i).Value)
				if err != nil {
					return err
				}
				r.Groups = append(r.Groups, g)
			}
		case "dynamic":
			b, ok := val.(ast.Boolean)
			if !ok {
				return wantGot(w, "a boolean", val)
			}
			r.Dynamic = bool(b)
		default:
			return decodeErr(w, "unknown key (known: user, group, groups, dynamic)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.Dynamic && (r.User != "" || r.Group != "" || r.Groups != nil) {
		return nil, decodeErr(w.child("dynamic"), "excludes user, group and groups (the uid and gid are the request's own)")
	}
	return &r, nil
}

func decodeRlimits(w at, v ast.Value) (map[string]uint64, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	out := make(map[string]uint64, obj.Len())
	err := eachKey(w, obj, func(key string, w at, val ast.Value) error {
		if _, err := sandbox.ParseRlimitName(key); err != nil || key != strings.ToLower(key) || strings.HasPrefix(key, "rlimit_") {
			return decodeErr(w, "unknown resource (known: %s)", strings.Join(sandbox.RlimitNames(), ", "))
		}
		switch x := val.(type) {
		case ast.String:
			if x != "unlimited" {
				return decodeErr(w, `want a number or "unlimited", got string %q`, string(x))
			}
			out[key] = sandbox.RlimitInfinity
			return nil
		case ast.Number:
			u, err := decodeUint(w, x, 0, math.MaxUint64)
			out[key] = u
			return err
		}
		return wantGot(w, `a number or "unlimited"`, val)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func decodePorts(w at, v ast.Value) ([]int, error) {
	arr, err := list(w, v)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, arr.Len())
	for i := range arr.Len() {
		n, err := decodeUint(w.index(i), arr.Elem(i).Value, 1, 65535)
		if err != nil {
			return nil, err
		}
		out = append(out, int(n))
	}
	return out, nil
}

func decodeLandlock(w at, v ast.Value) (*Landlock, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var l Landlock
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "ro":
			l.RO, err = decodeStrings(w, val, checkAbsPath)
		case "rw":
			l.RW, err = decodeStrings(w, val, checkAbsPath)
		case "connect_tcp":
			l.ConnectTCP, err = decodePorts(w, val)
		case "bind_tcp":
			l.BindTCP, err = decodePorts(w, val)
		case "udp":
			b, ok := val.(ast.Boolean)
			if !ok {
				return wantGot(w, "a boolean", val)
			}
			l.UDP = bool(b)
		default:
			return decodeErr(w, "unknown key (known: ro, rw, connect_tcp, bind_tcp, udp)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &l, nil
}

func decodeQuota(w at, v ast.Value) (*Quota, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var q Quota
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "key":
			if q.Key, err = decodeString(w, val); err == nil && q.Key == "" {
				err = decodeErr(w, "must not be empty")
			}
		case "concurrent":
			var n uint64
			n, err = decodeUint(w, val, 1, 1<<20)
			q.Concurrent = int(n)
		default:
			return decodeErr(w, "unknown key (known: key, concurrent)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if q.Key == "" || q.Concurrent == 0 {
		return nil, decodeErr(w, "needs key and concurrent")
	}
	return &q, nil
}

func decodeMask(w at, v ast.Value) (*Mask, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var m Mask
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "args":
			arr, err := list(w, val)
			if err != nil {
				return err
			}
			for i := range arr.Len() {
				n, err := decodeUint(w.index(i), arr.Elem(i).Value, 0, 1<<20)
				if err != nil {
					return err
				}
				m.Args = append(m.Args, int(n))
			}
		case "patterns":
			m.Patterns, err = decodeStrings(w, val, func(w at, s string) (string, error) {
				if _, err := path.Match(s, ""); err != nil {
					return "", decodeErr(w, "malformed pattern %q", s)
				}
				return s, nil
			})
		default:
			return decodeErr(w, "unknown key (known: args, patterns)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeEnum decodes a string that must be one of values.
func decodeEnum(w at, v ast.Value, values ...string) (string, error) {
	s, err := decodeString(w, v)
	if err != nil {
		return "", err
	}
	if !slices.Contains(values, s) {
		return "", decodeErr(w, "%q is not one of %s", s, strings.Join(values, ", "))
	}
	return s, nil
}

func decodeSeccomp(w at, v ast.Value) (*Seccomp, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var s Seccomp
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		switch key {
		case "profile":
			if s.Profile, err = decodeString(w, val); err == nil && s.Profile != "default" && s.Profile != "none" {
				err = decodeErr(w, "%q is not a profile (known: default, none)", s.Profile)
			}
		case "allow":
			s.Allow, err = decodeStrings(w, val, nil)
		case "deny":
			s.Deny, err = decodeStrings(w, val, nil)
		default:
			return decodeErr(w, "unknown key (known: profile, allow, deny)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func decodeCgroup(w at, v ast.Value) (*Cgroup, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object", v)
	}
	var c Cgroup
	err := eachKey(w, obj, func(key string, w at, val ast.Value) (err error) {
		var u uint64
		switch key {
		case "memory_max":
			u, err = decodeUint(w, val, 1, math.MaxInt64)
			c.MemoryMax = int64(u)
		case "memory_swap_max":
			u, err = decodeUint(w, val, 0, math.MaxInt64)
			n := int64(u)
			c.MemorySwapMax = &n
		case "pids_max":
			u, err = decodeUint(w, val, 1, math.MaxInt64)
			c.PidsMax = int64(u)
		case "cpu_max":
			c.CPUMax, err = decodeCPUMax(w, val)
		default:
			return decodeErr(w, "unknown key (known: memory_max, memory_swap_max, pids_max, cpu_max)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeCPUMax checks a cpu.max value the way the kernel takes it: a
// quota of "max" or at least 1000 µs, and a period from 1000 to 1000000
// µs. It is returned with single spaces.
func decodeCPUMax(w at, v ast.Value) (string, error) {
	s, ok := v.(ast.String)
	if !ok {
		return "", wantGot(w, `a string like "50000 100000"`, v)
	}
	f := strings.Fields(string(s))
	bad := len(f) < 1 || len(f) > 2
	if !bad && f[0] != "max" {
		q, err := strconv.ParseInt(f[0], 10, 64)
		bad = err != nil || q < 1000
	}
	if !bad && len(f) == 2 {
		p, err := strconv.ParseInt(f[1], 10, 64)
		bad = err != nil || p < 1000 || p > 1000000
	}
	if bad {
		return "", decodeErr(w, `want "QUOTA PERIOD" in microseconds (quota "max" or >= 1000, period 1000 to 1000000), e.g. "50000 100000", got %q`, string(s))
	}
	return strings.Join(f, " "), nil
}

func decodeEnv(w at, v ast.Value) (map[string]string, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, wantGot(w, "an object of strings", v)
	}
	out := make(map[string]string, obj.Len())
	err := eachKey(w, obj, func(key string, w at, val ast.Value) error {
		if key == "" || strings.ContainsAny(key, "=\x00") {
			return decodeErr(w, "invalid environment variable name %q", key)
		}
		s, ok := val.(ast.String)
		if !ok {
			return wantGot(w, "a string", val)
		}
		if strings.IndexByte(string(s), 0) >= 0 {
			return decodeErr(w, "value contains a NUL byte")
		}
		out[key] = string(s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decisionJSON is the JSON shape of a Decision: the decision document plus
// the engine's fields.
type decisionJSON struct {
	Allow          bool               `json:"allow"`
	Message        string             `json:"message,omitempty"`
	Reasons        []string           `json:"reasons,omitempty"`
	RunAs          *runAsJSON         `json:"run_as,omitempty"`
	Rlimits        map[string]any     `json:"rlimits,omitempty"`
	Landlock       *landlockJSON      `json:"landlock,omitempty"`
	Seccomp        *Seccomp           `json:"seccomp,omitempty"`
	Network        string             `json:"network,omitempty"`
	IPC            string             `json:"ipc,omitempty"`
	TmpDir         bool               `json:"tmpdir,omitempty"`
	Mask           *Mask              `json:"mask,omitempty"`
	Quota          *Quota             `json:"quota,omitempty"`
	Explain        bool               `json:"explain,omitempty"`
	Cgroup         *Cgroup            `json:"cgroup,omitempty"`
	Timeout        string             `json:"timeout,omitempty"`
	KillTimeout    string             `json:"kill_timeout,omitempty"`
	Env            *map[string]string `json:"env,omitempty"`
	Cwd            string             `json:"cwd,omitempty"`
	Umask          string             `json:"umask,omitempty"`
	MaxOutputBytes int64              `json:"max_output_bytes,omitempty"`
	MaxStdinBytes  int64              `json:"max_stdin_bytes,omitempty"`
	Revision       string             `json:"revision,omitempty"`
	EvalDuration   string             `json:"eval_duration,omitempty"`
	Cached         bool               `json:"cached,omitempty"`
	Error          string             `json:"error,omitempty"`
}

// runAsJSON and landlockJSON keep "absent" (nil) apart from "empty" ([]).
type runAsJSON struct {
	User    string    `json:"user,omitempty"`
	Group   string    `json:"group,omitempty"`
	Groups  *[]string `json:"groups,omitempty"`
	Dynamic bool      `json:"dynamic,omitempty"`
}

type landlockJSON struct {
	RO         []string `json:"ro"`
	RW         []string `json:"rw"`
	ConnectTCP *[]int   `json:"connect_tcp,omitempty"`
	BindTCP    *[]int   `json:"bind_tcp,omitempty"`
	UDP        bool     `json:"udp,omitempty"`
}

func nilOrPtr[T any](s []T) *[]T {
	if s == nil {
		return nil
	}
	return &s
}

func emptyIfNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// MarshalJSON encodes d in the shape of the policy's decision document
// (durations as "30s", umask as "0077", unlimited rlimits as "unlimited"),
// plus "revision", "eval_duration", "cached" and "error". Unset fields are
// omitted.
func (d Decision) MarshalJSON() ([]byte, error) {
	j := decisionJSON{
		Allow: d.Allow, Message: d.Message, Reasons: d.Reasons, Cwd: d.Cwd, Cgroup: d.Cgroup, Seccomp: d.Seccomp,
		Network: d.Network, IPC: d.IPC, TmpDir: d.TmpDir, Mask: d.Mask, Quota: d.Quota, Explain: d.Explain,
		MaxOutputBytes: d.MaxOutputBytes, MaxStdinBytes: d.MaxStdinBytes,
		Revision: d.Revision, Cached: d.Cached,
	}
	if d.RunAs != nil {
		j.RunAs = &runAsJSON{User: d.RunAs.User, Group: d.RunAs.Group, Groups: nilOrPtr(d.RunAs.Groups), Dynamic: d.RunAs.Dynamic}
	}
	if l := d.Landlock; l != nil {
		j.Landlock = &landlockJSON{RO: emptyIfNil(l.RO), RW: emptyIfNil(l.RW),
			ConnectTCP: nilOrPtr(l.ConnectTCP), BindTCP: nilOrPtr(l.BindTCP), UDP: l.UDP}
	}
	if d.Env != nil {
		j.Env = &d.Env
	}
	if d.Rlimits != nil {
		j.Rlimits = make(map[string]any, len(d.Rlimits))
		for k, v := range d.Rlimits {
			if v == sandbox.RlimitInfinity {
				j.Rlimits[k] = "unlimited"
			} else {
				j.Rlimits[k] = v
			}
		}
	}
	if d.Timeout != 0 {
		j.Timeout = d.Timeout.String()
	}
	if d.KillTimeout != 0 {
		j.KillTimeout = d.KillTimeout.String()
	}
	if d.Umask != nil {
		j.Umask = fmt.Sprintf("%04o", *d.Umask)
	}
	if d.EvalDuration != 0 {
		j.EvalDuration = d.EvalDuration.String()
	}
	if d.Err != nil {
		j.Error = d.Err.Error()
	}
	return json.Marshal(j)
}
