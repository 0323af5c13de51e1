package policy

import (
	"context"
	"errors"
	"maps"
	"os"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Format returns the Rego source src (of the file name) formatted as opa
// fmt formats it, in the Rego version it is written in (detected as the
// loader detects it, see Rego versions in regoversion.go) unless forced.
// The result is checked to parse.
func Format(name string, src []byte, forced ast.RegoVersion) ([]byte, error) {
	rv := forced
	if rv == ast.RegoUndefined {
		rv = detectVersion(name, src)
	}
	out, err := format.SourceWithOpts(name, src, format.Opts{RegoVersion: rv, ParserOptions: &ast.ParserOptions{RegoVersion: rv}})
	if err != nil {
		return nil, err
	}
	if _, err := ast.ParseModuleWithOpts(name, string(out), ast.ParserOptions{RegoVersion: rv}); err != nil {
		return nil, errors.New(name + " was formatted, but the result does not parse: " + err.Error())
	}
	return out, nil
}

// Check parses and compiles the policy in paths (files, directories and
// bundles, as [Load] reads them, test files included), as opa check
// does: with strict, in OPA's strict mode (unused variables, imports and
// function arguments, duplicate imports, deprecated built-ins). Errors
// name file:line:column.
func Check(ctx context.Context, paths []string, strict bool) error {
	l, err := readPaths(paths, nil, true, nil)
	if err != nil {
		return err
	}
	all := maps.Clone(l.modules)
	maps.Copy(all, l.tests)
	if len(all) == 0 {
		return errors.New("no .rego modules found")
	}
	store := inmem.NewFromObject(l.data)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithStrict(strict)
	if compiler.Compile(all); compiler.Failed() {
		return loadError(compiler.Errors)
	}
	return nil
}

// detectVersion is the Rego version of the source of the file name.
func detectVersion(name string, src []byte) ast.RegoVersion {
	if _, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1}); err != nil {
		if _, err0 := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV0}); err0 == nil {
			return ast.RegoV0
		}
	}
	return ast.RegoV1
}

// readFileVersion is detectVersion of the file at path.
func readFileVersion(path string) ast.RegoVersion {
	src, err := os.ReadFile(path)
	if err != nil {
		return ast.RegoV1
	}
	return detectVersion(path, src)
}
