package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/sockwarden/sockwarden/policy"
)

// Exit statuses of `check` and `policy test`.
const (
	policyExitOK    = 0 // check: allowed; policy test: every test passed
	policyExitFail  = 1 // check: denied; policy test: a test failed or errored
	policyExitUsage = 2 // bad usage, or the policy/tests could not be loaded
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

const checkUsage = `Usage: sockwarden check [-p PATH]... [--uid N] [--gid N] [--pid N] [--socket PATH] [--query Q] [--timeout D] [--json] -- argv...

Print the decision the policy makes for a request, as indented JSON: allow,
message, reasons, run_as, rlimits, landlock, cgroup, timeout, kill_timeout, env,
cwd, umask, max_output_bytes, max_stdin_bytes, revision, eval_duration, and error
when the deny is due to a policy error.

argv[0] is resolved on this process's PATH the way the server resolves it;
a bare name that is not found leaves input.exe empty.

Exit status: 0 allowed, 1 denied, 2 bad usage or the policy failed to load.

Flags:
`

// runCheck implements `sockwarden check`: it evaluates the policy for one
// synthetic request and prints the decision. See checkUsage.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		paths         policyPathsFlag
		uid, gid, pid policyIDFlag
	)
	fs.Var(&paths, "p", "policy `path`: a .rego, .json or .yaml file, a directory or a bundle .tar.gz;\nrepeatable (default: the embedded default policy, which allows only this process's uid)")
	fs.Var(&uid, "uid", "caller `uid` (default: this process's uid)")
	fs.Var(&gid, "gid", "caller `gid` (default: the primary group of --uid, else this process's gid)")
	fs.Var(&pid, "pid", "caller `pid` (default: this process's pid)")
	socket := fs.String("socket", "/run/sockwarden/exec.sock", "socket `path` the request claims to come in on (input.socket)")
	query := fs.String("query", policy.DefaultQuery, "the decision `query` (only with -p)")
	timeout := fs.Duration("timeout", time.Second, "evaluation `deadline` (the server's default is 100ms; a one-off check in a cold process gets more)")
	asJSON := fs.Bool("json", false, "print {\"input\": ..., \"decision\": ...}: the input document the policy saw, then the decision")
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

	ctx := context.Background()
	var (
		eng *policy.Engine
		err error
	)
	if len(paths) == 0 {
		eng, err = policy.Default()
	} else {
		eng, err = policy.Load(ctx, policy.Options{Paths: paths, Query: *query})
	}
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden check: %v\n", err)
		return policyExitUsage
	}
	eng = eng.WithTimeout(*timeout)

	in := policy.Input{
		Argv:      argv,
		Exe:       policy.ResolveExe(argv[0]),
		Peer:      policy.LookupPeer(int(pid.v), uid.v, gid.v),
		Socket:    *socket,
		RequestID: "check-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		Time:      time.Now(),
	}
	d := eng.Evaluate(ctx, in)

	var out any = d
	if *asJSON {
		out = struct {
			Input    policy.Input    `json:"input"`
			Decision policy.Decision `json:"decision"`
		}{in, d}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "sockwarden check: %v\n", err)
		return policyExitUsage
	}
	fmt.Fprintf(stdout, "%s\n", b)
	if d.Err != nil {
		fmt.Fprintf(stderr, "sockwarden check: denied by a policy error: %v\n", d.Err)
	}
	if !d.Allow {
		return policyExitFail
	}
	return policyExitOK
}

const policyTestUsage = `Usage: sockwarden policy test [-v] PATH...

Run the Rego unit tests (rules named test_*) in PATH (.rego, .json and .yaml
files or directories, read recursively), like opa test, and print a summary
such as "PASS: 12/12". With -v, print every test and the trace of failures.

Exit status: 0 every test passed, 1 a test failed or errored, 2 bad usage
or the tests could not be loaded or compiled, or no test was found.

Flags:
`

// runPolicyTest implements `sockwarden policy test [-v] PATH...`. args are
// the arguments after "policy test"; a leading "test" is skipped too, so
// the caller may pass those after "policy" (write ./test for a directory
// named test).
func runPolicyTest(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "test" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "verbose: print every test (PASS/FAIL/ERROR) and the trace of failures")
	fs.Usage = func() {
		fmt.Fprint(stderr, policyTestUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return policyExitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sockwarden policy test: no PATH given")
		fs.Usage()
		return policyExitUsage
	}
	ok, err := policy.RunTests(context.Background(), stdout, fs.Args(), *verbose)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "sockwarden policy test: %v\n", err)
		return policyExitUsage
	case !ok:
		return policyExitFail
	}
	return 0
}
