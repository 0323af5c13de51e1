package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// loaded is everything read from the policy paths, not yet compiled.
type loaded struct {
	modules map[string]*ast.Module // by file name
	tests   map[string]*ast.Module // the *_test.rego files, by file name
	raw     map[string][]byte      // by file name, for the revision
	data    map[string]any
	// bundleRevs are the manifest revisions of the bundles read; bundleOnly
	// is true when every path was a bundle with a non-empty revision.
	bundleRevs []string
	bundleOnly bool
}

// skipFile is the loader filter: in plain directories it leaves out
// hidden files and directories (.git, editor files), and everywhere the
// Rego test files unless tests (then they are read, and kept apart from
// the policy: see loaded.tests).
func skipFile(hidden, tests bool) loader.Filter {
	return func(_ string, info fs.FileInfo, depth int) bool {
		if !tests && !info.IsDir() && isTestFile(info.Name()) {
			return true
		}
		return hidden && depth > 0 && strings.HasPrefix(info.Name(), ".")
	}
}

// isTestFile tells a Rego test file by its name.
func isTestFile(name string) bool { return strings.HasSuffix(name, "_test.rego") }

func isBundlePath(path string) (bool, error) {
	if strings.HasSuffix(path, ".tar.gz") {
		return true, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, nil
	}
	_, err = os.Stat(filepath.Join(path, ".manifest"))
	return err == nil, nil
}

// readPaths loads .rego, JSON and YAML files, directories (recursively) and
// bundles (.tar.gz files, or directories holding a .manifest) from paths.
// With fsys set, paths are read from it and bundles are not recognised.
//
// With vc set, every path must be a bundle, and every bundle must carry
// signatures that vc verifies.
func readPaths(paths []string, fsys fs.FS, tests bool, vc *bundle.VerificationConfig) (*loaded, error) {
	if len(paths) == 0 {
		return nil, errors.New("no policy paths given")
	}
	l := newLoaded()
	var plain []string
	for _, p := range paths {
		if prefix, _ := loader.SplitPrefix(p); fsys != nil || len(prefix) > 0 {
			if vc != nil && fsys == nil {
				return nil, fmt.Errorf("%s: with a verification key, every policy path must be a signed bundle", p)
			}
			plain = append(plain, p)
			continue
		}
		isBundle, err := isBundlePath(p)
		if err != nil {
			return nil, err
		}
		if !isBundle {
			if vc != nil {
				return nil, fmt.Errorf("%s: not a bundle; with a verification key, every policy path must be a signed bundle (.tar.gz, or a directory with a .manifest)", p)
			}
			plain = append(plain, p)
			continue
		}
		b, err := readBundle(p, tests, vc)
		if err != nil {
			return nil, err
		}
		if err := l.addBundle(p, b, tests); err != nil {
			return nil, err
		}
	}
	if len(plain) > 0 {
		l.bundleOnly = false
		res, err := loadFiles(plain, ast.RegoUndefined, skipFile(true, tests), fsys)
		if err != nil {
			return nil, loadError(err)
		}
		for _, name := range slices.Sorted(maps.Keys(res.Modules)) {
			m := res.Modules[name]
			if err := l.addModule(name, m.Parsed, m.Raw); err != nil {
				return nil, err
			}
		}
		if err := mergeData(l.data, res.Documents, "data"); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func readBundle(path string, tests bool, vc *bundle.VerificationConfig) (*bundle.Bundle, error) {
	fl := loader.NewFileLoader().
		WithProcessAnnotation(true).
		WithFilter(skipFile(false, tests))
	if vc != nil {
		fl = fl.WithBundleVerificationConfig(vc)
	} else {
		// Without a key nothing can be verified: say so in the docs, not
		// by failing bundles that carry signatures.
		fl = fl.WithSkipBundleVerification(true)
	}
	if strings.HasSuffix(path, ".tar.gz") {
		// Hand the loader an open file we close ourselves: AsBundle on a
		// path leaks the descriptor, and reloads would pile them up.
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fl = fl.WithReader(f)
	}
	b, err := fl.AsBundle(path)
	if err != nil {
		return nil, loadError(err)
	}
	return b, nil
}

func newLoaded() *loaded {
	return &loaded{
		modules:    map[string]*ast.Module{},
		tests:      map[string]*ast.Module{},
		raw:        map[string][]byte{},
		data:       map[string]any{},
		bundleOnly: true,
	}
}

// addBundle adds the modules (and, with tests, the test modules) and the
// data of b, read from where.
func (l *loaded) addBundle(where string, b *bundle.Bundle, tests bool) error {
	for _, m := range b.Modules {
		name := m.URL
		if name == "" {
			name = m.Path
		}
		if !tests && isTestFile(name) {
			continue
		}
		if err := l.addModule(name, m.Parsed, m.Raw); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if err := mergeData(l.data, b.Data, "data"); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if b.Manifest.Revision == "" {
		l.bundleOnly = false
	} else {
		l.bundleRevs = append(l.bundleRevs, b.Manifest.Revision)
	}
	return nil
}

func (l *loaded) addModule(name string, m *ast.Module, raw []byte) error {
	if isTestFile(name) {
		// Tests are not part of the policy, nor of its revision.
		l.tests[name] = m
		return nil
	}
	if prev, ok := l.raw[name]; ok {
		if string(prev) == string(raw) {
			return nil
		}
		return fmt.Errorf("%s: loaded twice with different contents", name)
	}
	l.modules[name] = m
	l.raw[name] = raw
	return nil
}

// mergeData merges src into dst; two values at the same path are a conflict
// unless both are objects.
func mergeData(dst, src map[string]any, path string) error {
	for k, sv := range src {
		p := path + "." + k
		dv, ok := dst[k]
		if !ok {
			dst[k] = sv
			continue
		}
		dm, dok := dv.(map[string]any)
		sm, sok := sv.(map[string]any)
		if !dok || !sok {
			return fmt.Errorf("data conflict: %s is defined more than once", p)
		}
		if err := mergeData(dm, sm, p); err != nil {
			return err
		}
	}
	return nil
}

// revision returns the bundle revision(s) when every source is a bundle
// with a revision, else a content hash: the first 12 hex digits of the
// SHA-256 of the sorted module hashes and the canonical JSON of data.
// The hash does not depend on where the files live.
func (l *loaded) revision() (string, error) {
	if l.bundleOnly && len(l.bundleRevs) > 0 {
		return strings.Join(l.bundleRevs, "+"), nil
	}
	sums := make([]string, 0, len(l.raw))
	for _, raw := range l.raw {
		s := sha256.Sum256(raw)
		sums = append(sums, hex.EncodeToString(s[:]))
	}
	slices.Sort(sums)
	h := sha256.New()
	for _, s := range sums {
		h.Write([]byte("module " + s + "\n"))
	}
	data, err := json.Marshal(l.data) // map keys are sorted
	if err != nil {
		return "", fmt.Errorf("data is not JSON: %w", err)
	}
	h.Write([]byte("data "))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// loadError flattens loader and compiler errors into one error whose lines
// each name file:line:column.
func loadError(err error) error {
	var lines []string
	var walk func(error)
	walk = func(err error) {
		var astErrs ast.Errors
		var astErr *ast.Error
		var loadErrs loader.Errors
		switch {
		case errors.As(err, &loadErrs):
			for _, e := range loadErrs {
				walk(e)
			}
		case errors.As(err, &astErrs):
			for _, e := range astErrs {
				lines = append(lines, formatASTError(e))
			}
		case errors.As(err, &astErr):
			lines = append(lines, formatASTError(astErr))
		default:
			lines = append(lines, err.Error())
		}
	}
	walk(err)
	if len(lines) == 1 {
		return errors.New(lines[0])
	}
	return fmt.Errorf("%d errors:\n  %s", len(lines), strings.Join(lines, "\n  "))
}

func formatLocation(loc *ast.Location) string {
	if loc == nil {
		return ""
	}
	file := loc.File
	if file == "" {
		file = "<input>"
	}
	return fmt.Sprintf("%s:%d:%d: ", file, loc.Row, loc.Col)
}

func formatASTError(e *ast.Error) string {
	var sb strings.Builder
	sb.WriteString(formatLocation(e.Location))
	sb.WriteString(e.Code + ": " + e.Message)
	if e.Details != nil {
		for _, line := range e.Details.Lines() {
			sb.WriteString("\n\t" + line)
		}
	}
	return sb.String()
}

// evalErrorString formats an evaluation error with file:line:column.
func evalErrorString(err error) string {
	var te *topdown.Error
	if errors.As(err, &te) {
		return formatLocation(te.Location) + te.Code + ": " + te.Message
	}
	var ae *ast.Error
	if errors.As(err, &ae) {
		return formatASTError(ae)
	}
	return err.Error()
}
