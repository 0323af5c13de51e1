package policy

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Rego versions.
//
// OPA 1.0 reads Rego v1 by default, and a policy written for OPA 0.x
// (`p { ... }`, `p[x] { ... }` without `if` and `contains`) fails to
// parse. Many policies are still v0. So each .rego file of a plain path
// (a file or a directory) is read as Rego v1 when it parses as v1, and
// else as v0 when it parses as v0 (as OPA's --v0-compatible reads it): a
// directory may mix the two, and a file that parses as neither reports
// v1's errors. Bundles say their version themselves (rego_version in the
// .manifest, as OPA reads them). A forced version (policy test
// --v0-compatible) reads every file as that version.

// regoVersions detects and remembers the Rego version of each file.
type regoVersions struct {
	forced ast.RegoVersion // RegoUndefined: detect
	mu     sync.Mutex
	byPath map[string]ast.RegoVersion
}

// of returns the version of the .rego file at path.
func (v *regoVersions) of(path string) ast.RegoVersion {
	if v.forced != ast.RegoUndefined {
		return v.forced
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rv, ok := v.byPath[path]; ok {
		return rv
	}
	rv := readFileVersion(path)
	v.byPath[path] = rv
	return rv
}

// loadFiles loads the plain paths (files and directories, not bundles)
// with OPA's file loader, each .rego file as its Rego version (see
// above), the files filter leaves out excepted. fsys, when set, is read
// instead of the file system (its files are read as v1, or forced).
func loadFiles(paths []string, forced ast.RegoVersion, filter loader.Filter, fsys fs.FS) (*loader.Result, error) {
	v := &regoVersions{forced: forced, byPath: map[string]ast.RegoVersion{}}
	if fsys != nil && forced == ast.RegoUndefined {
		v.forced = ast.RegoV1
	}
	newLoader := func(rv ast.RegoVersion) loader.FileLoader {
		fl := loader.NewFileLoader().WithProcessAnnotation(true).WithRegoVersion(rv)
		if fsys != nil {
			fl = fl.WithFS(fsys)
		}
		return fl
	}
	isRego := func(info fs.FileInfo) bool { return !info.IsDir() && strings.HasSuffix(info.Name(), ".rego") }
	if v.forced != ast.RegoUndefined {
		return newLoader(v.forced).Filtered(paths, filter)
	}
	// Everything but the v0 files, then the v0 files alone.
	res, err := newLoader(ast.RegoV1).Filtered(paths, func(abs string, info fs.FileInfo, depth int) bool {
		return filter(abs, info, depth) || isRego(info) && v.of(abs) == ast.RegoV0
	})
	if err != nil {
		return nil, err
	}
	v0, err := newLoader(ast.RegoV0).Filtered(paths, func(abs string, info fs.FileInfo, depth int) bool {
		if filter(abs, info, depth) {
			return true
		}
		return !info.IsDir() && !(isRego(info) && v.of(abs) == ast.RegoV0)
	})
	if err != nil {
		return nil, err
	}
	maps.Copy(res.Modules, v0.Modules)
	return res, nil
}

// testLoad is what RunTests reads: the modules, tests included, and the
// data.
type testLoad struct {
	modules map[string]*ast.Module
	data    map[string]any
}

// readTestPaths loads paths for RunTests: plain paths with their test
// files, bundles as OPA's tester reads them.
func readTestPaths(paths []string, forced ast.RegoVersion) (*testLoad, error) {
	for _, p := range paths {
		if ok, _ := isBundlePath(p); ok && strings.HasSuffix(p, ".tar.gz") {
			return nil, fmt.Errorf("%s: policy test reads directories and files; unpack the bundle to test it", p)
		}
	}
	res, err := loadFiles(paths, forced, func(string, fs.FileInfo, int) bool { return false }, nil)
	if err != nil {
		return nil, loadError(err)
	}
	l := &testLoad{modules: map[string]*ast.Module{}, data: res.Documents}
	for name, m := range res.Modules {
		l.modules[name] = m.Parsed
	}
	return l, nil
}

// store returns a fresh store of l's data, and a write transaction on it
// (the tester compiles into it; abort it when done).
func (l *testLoad) store(ctx context.Context) (storage.Store, storage.Transaction, error) {
	store := inmem.NewFromObjectWithOpts(deepCopy(l.data).(map[string]any), inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, nil, err
	}
	return store, txn, nil
}

// deepCopy copies JSON-like data.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}
