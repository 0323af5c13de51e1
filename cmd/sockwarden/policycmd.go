package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/sockwarden/sockwarden/internal/config"
	"github.com/sockwarden/sockwarden/peer"
	"github.com/sockwarden/sockwarden/plan"
	"github.com/sockwarden/sockwarden/policy"
	"github.com/sockwarden/sockwarden/sandbox"
	"github.com/sockwarden/sockwarden/server"
)

// Exit statuses of `check` (`policy test` has opa test's).
const (
	policyExitOK    = 0 // allowed
	policyExitFail  = 1 // denied
	policyExitUsage = 2 // bad usage, or the policy could not be loaded
)

// policyPathsFlag is a repeatable string flag.
type policyPathsFlag []string

func (p *policyPathsFlag) String() string { return strings.Join(*p, ",") }

func (p *policyPathsFlag) Set(s string) error {
	if s == "" {
		return errors.New("empty path")
	}
	*p = append(*p, s)
	return nil
}

// policyIDFlag is an optional uint32 flag that remembers whether it was set.
type policyIDFlag struct {
	v   uint32
	set bool
}

func (f *policyIDFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatUint(uint64(f.v), 10)
}

func (f *policyIDFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want a number from 0 to %d", uint32(1<<32-1))
	}
	f.v, f.set = uint32(n), true
	return nil
}

const checkUsage = `Usage: sockwarden check [-c config.toml] [-p PATH]... [--uid N] [--gid N] [--pid N] [--socket PATH] [--query Q] [--timeout D] [--json] [--explain] [--verification-key FILE] -- argv...

Print what a server with this configuration would do with a request, as
indented JSON: the policy's decision (allow, message, reasons, run_as,
rlimits, landlock, cgroup, timeout, kill_timeout, env, cwd, umask,
max_output_bytes, max_stdin_bytes, revision, eval_duration, and error when
the deny is due to a policy error), with "allow" and "message" as the
server would answer, and under "server": the outcome ("run", "denied" or
"not started"), the reply the client would get when the program does not
run (its stderr line and exit code, 126 or 127), or the plan it would run
(program, identity, limits, Landlock paths with those missing on this host
dropped, cgroup, environment), and the containment this host offers. With
--explain, "explain" lists every rule that held while the policy decided,
in the order it did, with its file:line and the value it produced: the
rule that allowed the request, or the deny rules that explain a deny.

The request is judged and planned by the same code as the server's:
argv[0] is resolved on server.path (not this process's PATH), and the
configuration's sandbox defaults, policy and cgroup settings apply (-c).
The server's identity is taken to be this process's: run check as the
server's user for the server's answer on run_as and root.

Exit status: 0 the program would run, 1 it would not (denied, or cannot
start), 2 bad usage or the configuration or policy failed to load.

Flags:
`

// runCheck implements `sockwarden check`: it judges and plans one
// synthetic request as the server would and prints the outcome. See
// checkUsage.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		paths         policyPathsFlag
		uid, gid, pid policyIDFlag
	)
	configFile := fs.String("c", "", "the server's TOML configuration `file`: server.path, the [sandbox] defaults and the [policy] settings")
	fs.Var(&paths, "p", "policy `path`: a .rego, .json or .yaml file, a directory or a bundle .tar.gz;\nrepeatable (default: the configuration's, else the embedded default policy,\nwhich allows only this process's uid)")
	fs.Var(&uid, "uid", "caller `uid` (default: this process's uid)")
	fs.Var(&gid, "gid", "caller `gid` (default: the primary group of --uid, else this process's gid)")
	fs.Var(&pid, "pid", "caller `pid` (default: this process's pid)")
	socket := fs.String("socket", "", "socket `path` the request claims to come in on (input.socket; default: the configuration's server.socket, else /run/sockwarden/exec.sock)")
	query := fs.String("query", policy.DefaultQuery, "the decision `query` (only with -p)")
	timeout := fs.Duration("timeout", 0, "evaluation `deadline` (default: the configuration's policy.eval_timeout, 1s)")
	asJSON := fs.Bool("json", false, "print {\"input\": ..., \"decision\": ...}: the input document the policy saw, then the decision")
	verifyKey := fs.String("verification-key", "", "`file` of the key the policy bundles must be signed with (as the server's flag)")
	verifyKeyID := fs.String("verification-key-id", "", "`name` of the verification key (default \"default\")")
	signingAlg := fs.String("signing-alg", "", "`algorithm` of the signatures (default RS256)")
	explain := fs.Bool("explain", false, "add \"explain\": every rule that held while the policy decided, in order, with its file:line and value")
	fs.Usage = func() {
		fmt.Fprint(stderr, checkUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return policyExitOK
		}
		return policyExitUsage
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "sockwarden check: no argv given (put it after --)")
		fs.Usage()
		return policyExitUsage
	}
	querySet := false
	fs.Visit(func(f *flag.Flag) { querySet = querySet || f.Name == "query" })
	if querySet && len(paths) == 0 {
		fmt.Fprintln(stderr, "sockwarden check: --query needs a policy (-p)")
		return policyExitUsage
	}
	cfg := config.Default()
	if *configFile != "" {
		var err error
		if cfg, err = config.Load(*configFile); err != nil {
			fmt.Fprintf(stderr, "sockwarden check: %v\n", err)
			return policyExitUsage
		}
	}
	if len(paths) > 0 {
		cfg.Policy.Paths, cfg.Policy.Query = paths, *query
	}
	if *verifyKey != "" {
		cfg.Policy.VerificationKey, cfg.Policy.VerificationKeyID, cfg.Policy.SigningAlg = *verifyKey, *verifyKeyID, *signingAlg
	}
	if *timeout > 0 {
		cfg.Policy.EvalTimeout = config.Duration(*timeout)
	}
	cfg.Policy.CacheSize = -1 // one request: nothing to memoize
	// The policy's own tests are policy test's business (the server runs
	// them at load): 0.3 s for the example policy's, per check.
	cfg.Policy.Tests = policy.TestsOff
	if *socket == "" {
		*socket = cfg.Server.Socket
		if *socket == "" {
			*socket = "/run/sockwarden/exec.sock"
		}
	}

	if !uid.set {
		uid.v = uint32(os.Getuid())
	}
	if !gid.set {
		gid.v = uint32(os.Getgid())
		if uid.set {
			if u, err := user.LookupId(strconv.FormatUint(uint64(uid.v), 10)); err == nil {
				if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
					gid.v = uint32(g)
				}
			}
		}
	}
	if !pid.set {
		pid.v = uint32(os.Getpid())
	}

	eng, err := loadPolicy(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden check: %v\n", err)
		return policyExitUsage
	}

	// The same steps as the server's, in the same order: resolve argv[0]
	// on server.path, judge, plan.
	p := peer.Peer{PID: int(pid.v), UID: uid.v, GID: gid.v}
	peer.NewNames().Describe(&p)
	exe, lookErr := plan.ResolveExe(argv[0], cfg.Server.Path)
	req := &server.Request{
		ID:     "check-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Argv:   argv,
		Exe:    exe,
		Peer:   p,
		Socket: *socket,
		Time:   time.Now(),
	}
	in := server.Input(req)
	var (
		d     policy.Decision
		rules []policy.RuleResult
	)
	if *explain {
		d, rules = eng.Explain(context.Background(), in)
	} else {
		d = eng.Evaluate(context.Background(), in)
	}
	caps := sandbox.Probe(spawnerOptions(cfg))
	host := plan.ThisProcess(caps, nil)
	planner := plan.NewPlanner(host)
	def := sandboxDefaults(cfg)
	pl := planner.Plan(&d, &def, &plan.Request{ID: req.ID, Argv: argv, Exe: exe, ExeErr: lookErr, Peer: p})

	out, err := checkJSON(d, pl, host, req.ID)
	if err == nil && *explain {
		var eb []byte
		if eb, err = json.Marshal(rules); err == nil {
			out = append(append(append(bytes.TrimSuffix(out, []byte("}")), `,"explain":`...), eb...), '}')
		}
	}
	if err == nil && *asJSON {
		var in2 []byte
		if in2, err = json.Marshal(in); err == nil {
			out = []byte(`{"input":` + string(in2) + `,"decision":` + string(out) + `}`)
		}
	}
	var buf bytes.Buffer
	if err == nil {
		err = json.Indent(&buf, out, "", "  ")
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden check: %v\n", err)
		return policyExitUsage
	}
	fmt.Fprintf(stdout, "%s\n", buf.Bytes())
	if d.Err != nil {
		fmt.Fprintf(stderr, "sockwarden check: denied by a policy error: %v\n", d.Err)
	}
	if !pl.Allow || pl.StartErr != nil {
		return policyExitFail
	}
	return policyExitOK
}

// checkServer is the "server" object of check's output.
type checkServer struct {
	Outcome     string           `json:"outcome"`
	Reply       *checkReply      `json:"reply,omitempty"`
	Error       string           `json:"error,omitempty"`
	Plan        *checkPlan       `json:"plan,omitempty"`
	Containment checkContainment `json:"containment"`
}

type checkReply struct {
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitcode"`
}

type checkContainment struct {
	Summary     string `json:"summary"`
	LandlockABI int    `json:"landlock_abi"`
	Cgroups     string `json:"cgroups"`
	SetID       bool   `json:"switch_users"`
}

type checkPlan struct {
	Path           string            `json:"path"`
	Args           []string          `json:"args"`
	RunAs          checkRunAs        `json:"run_as"`
	Rlimits        map[string]uint64 `json:"rlimits,omitempty"`
	Landlock       *checkLandlock    `json:"landlock,omitempty"`
	Seccomp        checkSeccomp      `json:"seccomp"`
	Network        string            `json:"network"`
	IPC            string            `json:"ipc"`
	TmpDir         bool              `json:"tmpdir"`
	Cgroup         *policy.Cgroup    `json:"cgroup,omitempty"`
	Env            []string          `json:"env"`
	Cwd            string            `json:"cwd"`
	Umask          string            `json:"umask,omitempty"`
	Timeout        string            `json:"timeout,omitempty"`
	KillTimeout    string            `json:"kill_timeout"`
	MaxOutputBytes int64             `json:"max_output_bytes,omitempty"`
	MaxStdinBytes  int64             `json:"max_stdin_bytes,omitempty"`
}

// checkRunAs is the identity; a dynamic uid is only known when the
// request starts (UID and GID then 0).
type checkRunAs struct {
	UID     uint32   `json:"uid"`
	GID     uint32   `json:"gid"`
	Groups  []uint32 `json:"groups"`
	Dynamic bool     `json:"dynamic,omitempty"`
}

// checkSeccomp says which system call filters the program gets.
type checkSeccomp struct {
	Profile string   `json:"profile"`
	Allow   []string `json:"allow,omitempty"`
	Deny    []string `json:"deny,omitempty"`
	Network bool     `json:"network_filter"`
	UDP     bool     `json:"udp,omitempty"`
}

type checkLandlock struct {
	RO              []string `json:"ro"`
	RW              []string `json:"rw"`
	Dropped         []string `json:"dropped,omitempty"` // paths missing on this host
	UnrestrictedTCP bool     `json:"unrestricted_tcp"`
	ConnectTCP      []uint16 `json:"connect_tcp"`
	BindTCP         []uint16 `json:"bind_tcp"`
	Scope           bool     `json:"scope"`
	BestEffort      bool     `json:"best_effort"`
}

// checkJSON is the decision d as the server would answer it (allow and
// message as pl says), with the "server" object added.
func checkJSON(d policy.Decision, pl *plan.Plan, host plan.Host, id string) ([]byte, error) {
	caps := host.Caps
	sv := checkServer{Containment: checkContainment{Summary: host.String(), LandlockABI: caps.LandlockABI, Cgroups: caps.Cgroups.String(), SetID: caps.SetID}}
	switch {
	case !pl.Allow:
		sv.Outcome = "denied"
		d.Allow, d.Message, d.Reasons = false, pl.Message, pl.Reasons
		if pl.Err != nil && d.Err == nil {
			sv.Error = pl.Err.Error()
		}
	case pl.StartErr != nil:
		sv.Outcome = "not started"
		sv.Error = pl.StartErr.Error()
	default:
		sv.Outcome = "run"
		sv.Plan = newCheckPlan(pl)
	}
	if line := pl.ClientLine(id); line != "" {
		sv.Reply = &checkReply{Stderr: line, ExitCode: pl.Status}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	sb, err := json.Marshal(sv)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(bytes.TrimSpace(b), []byte("}"))
	return append(append(append(b, `,"server":`...), sb...), '}'), nil
}

func newCheckPlan(pl *plan.Plan) *checkPlan {
	spec := &pl.Spec
	cp := &checkPlan{
		Path: spec.Path, Args: spec.Args, Env: spec.Env, Cwd: spec.Dir, KillTimeout: pl.KillTimeout.String(),
		MaxOutputBytes: pl.MaxOutputBytes, MaxStdinBytes: pl.MaxStdinBytes,
	}
	if l := spec.Landlock; l != nil {
		cp.Landlock = &checkLandlock{RO: l.RO, RW: l.RW, Dropped: pl.DroppedPaths, UnrestrictedTCP: l.UnrestrictedTCP,
			ConnectTCP: l.ConnectTCP, BindTCP: l.BindTCP, Scope: l.Scope, BestEffort: l.BestEffort}
	}
	cp.Seccomp.Profile = sandbox.SeccompNone
	if sc := spec.Seccomp; sc != nil {
		cp.Seccomp = checkSeccomp{Profile: sc.Profile, Allow: sc.Allow, Deny: sc.Deny}
	}
	if l := spec.Landlock; l != nil && !l.UnrestrictedTCP {
		cp.Seccomp.Network, cp.Seccomp.UDP = true, l.UDP
	}
	cp.Network, cp.IPC, cp.TmpDir = "host", "host", spec.TmpDir
	if spec.NoNetwork {
		cp.Network = "none"
	}
	if spec.PrivateIPC {
		cp.IPC = "private"
	}
	if c := spec.Cgroup; c != nil {
		cp.Cgroup = &policy.Cgroup{MemoryMax: c.MemoryMax, MemorySwapMax: c.MemorySwapMax, PidsMax: c.PidsMax, CPUMax: c.CPUMax}
	}
	if cp.Cwd == "" {
		cp.Cwd = "/"
	}
	if c := spec.Credential; c != nil {
		cp.RunAs = checkRunAs{UID: c.UID, GID: c.GID, Groups: c.Groups}
	} else if spec.DynamicUser {
		cp.RunAs = checkRunAs{Dynamic: true}
	} else {
		cp.RunAs = checkRunAs{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	}
	if len(spec.Rlimits) > 0 {
		cp.Rlimits = map[string]uint64{}
		for _, r := range spec.Rlimits {
			cp.Rlimits[sandbox.RlimitName(r.Resource)] = r.Cur
		}
	}
	if spec.Umask != nil {
		cp.Umask = fmt.Sprintf("%04o", *spec.Umask)
	}
	if pl.Timeout > 0 {
		cp.Timeout = pl.Timeout.String()
	}
	return cp
}

const policyTestUsage = `Usage: sockwarden policy test [flags] PATH... (flags before or after the paths)

Run the Rego unit tests (rules named test_*) in PATH (.rego, .json and .yaml
files or directories, read recursively) with OPA's tester, as opa test
does, with its flags, its output and its exit status. Each .rego file is
read as Rego v1 when it parses as v1, else as v0 (--v0-compatible reads all
as v0).

Every decision a test makes the policy produce is also checked against the
decision schema (policy/decision.schema.json): a test whose decision has an
unknown key (a typo such as "timout"), a wrong type or an impossible value
fails, and its output names the key and the rule's file:line.

Exit status (as opa test): 0 every test passed (or none ran, unless
--fail-on-empty); 2 a test failed or errored, or the coverage is under
--threshold; 1 the tests could not be loaded or compiled, bad usage, or
(with --coverage, as opa test) a test failed.

Flags:
`

// runPolicyTest implements `sockwarden policy test [flags] PATH...`. args
// are the arguments after "policy test"; a leading "test" is skipped too,
// so the caller may pass those after "policy" (write ./test for a
// directory named test).
func runPolicyTest(args []string, stdout, stderr io.Writer) int {
	const exitLoad, exitFail = 1, 2 // opa test's
	if len(args) > 0 && args[0] == "test" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o policy.TestOptions
	var v0 bool
	for _, name := range []string{"v", "verbose"} {
		fs.BoolVar(&o.Verbose, name, false, "print every test (PASS/FAIL/ERROR) and the trace of failures")
	}
	for _, name := range []string{"r", "run"} {
		fs.StringVar(&o.Run, name, "", "run only the tests whose names match this `regex`")
	}
	for _, name := range []string{"c", "coverage"} {
		fs.BoolVar(&o.Coverage, name, false, "print a coverage report as JSON instead of the test report")
	}
	for _, name := range []string{"f", "format"} {
		fs.StringVar(&o.Format, name, "pretty", "output `format`: pretty or json")
	}
	for _, name := range []string{"p", "parallel"} {
		fs.IntVar(&o.Parallel, name, runtime.NumCPU(), "how many tests run at once (`n`)")
	}
	fs.Float64Var(&o.Threshold, "threshold", 0, "fail (exit 2) when the coverage is under this `percentage` (implies --coverage)")
	fs.DurationVar(&o.Timeout, "timeout", 0, "deadline of each test (`duration`; default 5s)")
	fs.BoolVar(&v0, "v0-compatible", false, "read every .rego file as Rego v0 (OPA 0.x syntax)")
	fs.BoolVar(&o.FailOnEmpty, "fail-on-empty", false, "exit 1 when no test ran (a mistyped path or --run)")
	paths, code, ok := parsePaths(fs, args, "test", policyTestUsage, stderr)
	if !ok {
		return code
	}
	if v0 {
		o.RegoVersion = ast.RegoV0
	}
	err := policy.RunTests(context.Background(), stdout, paths, o)
	var tf *policy.TestFailure
	switch {
	case errors.As(err, &tf):
		if tf.Coverage != nil {
			fmt.Fprintf(stderr, "sockwarden policy test: %v\n", tf.Coverage)
		}
		return exitFail
	case err != nil:
		fmt.Fprintf(stderr, "sockwarden policy test: %v\n", err)
		return exitLoad
	}
	return 0
}
