// Command sockwarden runs programs for local clients over a UNIX socket,
// speaking the sockexec protocol, and judges every request before it runs.
//
// Usage:
//
//	sockwarden [-v] [-d] [-q backlog] [-M mode] [-m max-conns] [-t secs] [-k secs] /path/to/socket
//	sockwarden run SOCKET -- argv...
//	sockwarden version
//
// Run "sockwarden help" for every subcommand, or "sockwarden -h" for the
// server's flags.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return "sockwarden " + v
}

const mainUsage = `sockwarden runs programs for local clients over a UNIX socket (the sockexec
protocol), judging every request before it runs.

Usage:
  sockwarden [flags] /path/to/socket     serve (sockexec-compatible flags; -h lists them)
  sockwarden config [flags] [socket]     print the effective configuration (defaults,
                                         then -c file, then flags) as TOML
  sockwarden run SOCKET -- argv...       run a program through a server; stdin, stdout,
                                         stderr and the exit status pass through
  sockwarden check [-p policy]... [--uid N --gid N --pid N] [--explain] -- argv...
                                         print the decision the policy would make (JSON),
                                         and with --explain the rules that made it;
                                         exit 0 allow, 1 deny, 2 error
  sockwarden policy test [flags] PATH... run the Rego unit tests (test_ rules) as opa test does
                                         (its flags, output and exit codes), every decision
                                         checked against the decision schema
  sockwarden policy fmt [-w|-l|-d] PATH... format Rego as opa fmt does
  sockwarden policy check [--strict] PATH...
                                         compile the policy as opa check does
  sockwarden audit verify [-syslog] FILE...
                                         check the hash chain of audit logs (rotated files
                                         in order, or a syslog collector's file); reports
                                         the first deleted, altered or reordered record
  sockwarden status ENDPOINT             a running server's figures (its [metrics] listen:
                                         health, requests, latency, kills, audit, policy)
  sockwarden bench WORKLOAD [flags]      load generator for any sockexec-protocol socket:
                                         spawn, echo, flood, idle, baseline (-h for flags)
  sockwarden version                     print the version
  sockwarden help                        print this help
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// dispatch runs the subcommand named by args[0], or the server.
func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "run":
			return runClient(args[1:], stdin, stdout, stderr)
		case "audit":
			if len(args) > 1 && args[1] == "verify" {
				return runAuditVerify(args[2:], stdout, stderr)
			}
			fmt.Fprintln(stderr, "usage: sockwarden audit verify [-json] FILE...")
			return 2
		case "check":
			return runCheck(args[1:], stdout, stderr)
		case "policy":
			if len(args) > 1 {
				switch args[1] {
				case "fmt":
					return runPolicyFmt(args[2:], stdout, stderr)
				case "check":
					return runPolicyCheck(args[2:], stdout, stderr)
				}
			}
			return runPolicyTest(args[1:], stdout, stderr)
		case "bench":
			return runBench(args[1:], stdout, stderr)
		case "status":
			return runStatus(args[1:], stdout, stderr)
		case "config":
			return printConfig(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, versionString())
			return 0
		case "help", "--help":
			fmt.Fprint(stdout, mainUsage)
			return 0
		}
	}
	return serve(args, stdout, stderr)
}
