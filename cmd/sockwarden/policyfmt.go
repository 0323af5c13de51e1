package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/sergi/go-diff/diffmatchpatch"

	"github.com/sockwarden/sockwarden/policy"
)

// parseInterleaved parses args with flags, flags before or after the
// operands (as cobra does for opa's commands), and returns the operands.
// "--" ends the flags.
func parseInterleaved(flags *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := flags.Parse(args); err != nil {
			return nil, err
		}
		args = flags.Args()
		if len(args) == 0 {
			return operands, nil
		}
		if args[0] == "--" {
			return append(operands, args[1:]...), nil
		}
		operands, args = append(operands, args[0]), args[1:]
	}
}

// parsePaths parses the arguments of the policy subcommand name, whose
// usage text is usage: flags before or after the paths, at least one
// path. When ok is false, the subcommand exits with code (0 for -h).
func parsePaths(flags *flag.FlagSet, args []string, name, usage string, stderr io.Writer) (paths []string, code int, ok bool) {
	flags.Usage = func() {
		fmt.Fprint(stderr, usage)
		flags.PrintDefaults()
	}
	paths, err := parseInterleaved(flags, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil, 0, false
	case err != nil:
		return nil, 1, false
	case len(paths) == 0:
		fmt.Fprintf(stderr, "sockwarden policy %s: no PATH given\n", name)
		flags.Usage()
		return nil, 1, false
	}
	return paths, 0, true
}

const policyFmtUsage = `Usage: sockwarden policy fmt [-w] [-l] [-d] [--fail] [--v0-compatible] PATH...

Format the .rego files in PATH (files or directories, recursively) as opa fmt
does, with OPA's formatter, each in the Rego version it is written in (v1
when it parses as v1, else v0; --v0-compatible: all v0). Without -w, -l or
-d, print the formatted source.

Exit status (as opa fmt): 0 done; 2 with --fail when a file is not
formatted; 1 a file could not be read or formatted, or bad usage.

Flags:
`

// runPolicyFmt implements `sockwarden policy fmt`.
func runPolicyFmt(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("policy fmt", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var write, list, diff, fail, v0 bool
	for _, n := range []string{"w", "write"} {
		flags.BoolVar(&write, n, false, "write the formatted source back to each file")
	}
	for _, n := range []string{"l", "list"} {
		flags.BoolVar(&list, n, false, "list the files that formatting would change")
	}
	for _, n := range []string{"d", "diff"} {
		flags.BoolVar(&diff, n, false, "print the changes formatting would make")
	}
	flags.BoolVar(&fail, "fail", false, "exit 2 when a file is not formatted (for CI)")
	flags.BoolVar(&v0, "v0-compatible", false, "read every file as Rego v0 (OPA 0.x syntax)")
	paths, code, ok := parsePaths(flags, args, "fmt", policyFmtUsage, stderr)
	if !ok {
		return code
	}
	forced := ast.RegoUndefined
	if v0 {
		forced = ast.RegoV0
	}
	unformatted := false
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || filepath.Ext(path) != ".rego" {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out, err := policy.Format(path, src, forced)
			if err != nil {
				return err
			}
			changed := !bytes.Equal(src, out)
			unformatted = unformatted || changed
			switch {
			case list:
				if changed {
					fmt.Fprintln(stdout, path)
				}
			case diff:
				if changed {
					dmp := diffmatchpatch.New()
					fmt.Fprintln(stdout, dmp.DiffPrettyText(dmp.DiffMain(string(src), string(out), false)))
				}
			case write:
				if changed {
					info, err := d.Info()
					if err != nil {
						return err
					}
					return os.WriteFile(path, out, info.Mode().Perm())
				}
			default:
				stdout.Write(out)
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "sockwarden policy fmt: %v\n", err)
			return 1
		}
	}
	if fail && unformatted {
		if !list && !diff {
			fmt.Fprintln(stderr, "sockwarden policy fmt: unexpected diff (run sockwarden policy fmt -w)")
		}
		return 2
	}
	return 0
}

const policyCheckUsage = `Usage: sockwarden policy check [--strict] PATH...

Parse and compile the policy in PATH (.rego files, directories, bundles;
test files included) as opa check does, with OPA's compiler; --strict adds
OPA's strict mode (unused variables, imports and arguments, duplicate
imports, deprecated built-ins). Errors name file:line:column.

Exit status: 0 the policy compiles; 1 it does not, or bad usage.

Flags:
`

// runPolicyCheck implements `sockwarden policy check`.
func runPolicyCheck(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("policy check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	strict := flags.Bool("strict", false, "OPA's strict mode")
	flags.BoolVar(strict, "S", false, "short for --strict")
	paths, code, ok := parsePaths(flags, args, "check", policyCheckUsage, stderr)
	if !ok {
		return code
	}
	if err := policy.Check(context.Background(), paths, *strict); err != nil {
		fmt.Fprintf(stderr, "sockwarden policy check: %v\n", strings.TrimPrefix(err.Error(), "policy: "))
		return 1
	}
	return 0
}
