package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/sockwarden/sockwarden/sandbox"
)

const examplePolicy = "../examples/policy"

// writeFiles writes name -> content into a new temporary directory.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeBundle builds a bundle .tar.gz with OPA's bundle writer.
func writeBundle(t testing.TB, revision string, modules map[string]string, data map[string]any) string {
	t.Helper()
	return writeBundleFile(t, newBundle(revision, modules, data))
}

// newBundle is a bundle of modules and data with root sockwarden.
func newBundle(revision string, modules map[string]string, data map[string]any) bundle.Bundle {
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision, Roots: &[]string{"sockwarden"}},
		Data:     data,
	}
	for name, src := range modules {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: name, Path: name, Raw: []byte(src)})
	}
	return b
}

// writeBundleFile writes b as a .tar.gz and returns its path.
func writeBundleFile(t testing.TB, b bundle.Bundle) string {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// mustLoad loads a policy. Unless a test sets one, the evaluation deadline
// is generous: the race detector and a busy CI machine can stretch a
// 50-microsecond evaluation past the 100 ms default.
func mustLoad(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	e, err := Load(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func peerInput(uid uint32, argv ...string) Input {
	return Input{
		Argv:      argv,
		Exe:       "/usr/bin/" + argv[0],
		Peer:      Peer{PID: 4242, UID: uid, GID: uid},
		Socket:    "/run/sockwarden/exec.sock",
		RequestID: "test",
		Time:      time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
	}
}

const uidsPolicy = `package sockwarden

default decision := {"allow": false, "message": "uid not allowed"}

decision := {"allow": true, "reasons": [data.sockwarden.config.source]} if {
	input.peer.uid in data.sockwarden.config.uids
}
`

func TestLoadSources(t *testing.T) {
	bundlePath := writeBundle(t, "rev-42",
		map[string]string{"sockwarden/policy.rego": uidsPolicy},
		map[string]any{"sockwarden": map[string]any{"config": map[string]any{"uids": []any{7}, "source": "bundle"}}})
	bundleDir := writeFiles(t, map[string]string{
		".manifest":              `{"revision": "dir-rev-1", "roots": ["sockwarden"]}`,
		"sockwarden/policy.rego": uidsPolicy,
		"sockwarden/data.json":   `{"config": {"uids": [8], "source": "bundle dir"}}`,
		"sockwarden/x_test.rego": "package sockwarden\n\ntest_x if { decision.allow with input as {\"peer\": {\"uid\": 8}} }",
	})
	nested := writeFiles(t, map[string]string{
		"policy.rego":              uidsPolicy,
		"sockwarden/config/c.json": `{"uids": [9], "source": "nested json"}`, // lands at data.sockwarden.config
		"README.md":                "not loaded",
		"policy_test.rego":         "package sockwarden_test\n\ntest_nine if { data.sockwarden.decision.allow with input as {\"peer\": {\"uid\": 9}} }",
		".git/HEAD":                "ref: refs/heads/main",
		".hidden/evil.rego":        "package sockwarden\n\nbroken syntax",
	})
	tests := []struct {
		name     string
		paths    []string
		uid      uint32
		source   string
		revision string // "" = any 12-hex content hash
	}{
		{"directory", []string{"testdata/uids"}, 33, "data.json", ""},
		{"rego and json files", []string{"testdata/uids/policy.rego", "testdata/uids/data.json"}, 33, "data.json", ""},
		{"rego and yaml files", []string{"testdata/uids/policy.rego", "testdata/yamldata/data.yaml"}, 1001, "data.yaml", ""},
		{"nested directory data, hidden files skipped", []string{nested}, 9, "nested json", ""},
		{"data prefix", []string{"testdata/uids/policy.rego", "sockwarden.config:" + filepath.Join(writeFiles(t, map[string]string{"c.json": `{"uids": [5], "source": "prefixed"}`}), "c.json")}, 5, "prefixed", ""},
		{"bundle tar.gz", []string{bundlePath}, 7, "bundle", "rev-42"},
		{"bundle directory", []string{bundleDir}, 8, "bundle dir", "dir-rev-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustLoad(t, Options{Paths: tt.paths})
			d := e.Evaluate(context.Background(), peerInput(tt.uid, "true"))
			if d.Err != nil || !d.Allow {
				t.Fatalf("decision = %+v", d)
			}
			if d.Reasons[0] != tt.source {
				t.Errorf("reasons = %q, want data from %q", d.Reasons, tt.source)
			}
			if tt.revision != "" && e.Revision() != tt.revision {
				t.Errorf("revision = %q, want %q", e.Revision(), tt.revision)
			}
			if tt.revision == "" && len(e.Revision()) != 12 {
				t.Errorf("revision = %q, want 12 hex digits", e.Revision())
			}
			if d.Revision != e.Revision() {
				t.Errorf("decision revision %q != engine revision %q", d.Revision, e.Revision())
			}
			if e.Source() != strings.Join(tt.paths, ", ") {
				t.Errorf("source = %q", e.Source())
			}
			if got := e.Evaluate(context.Background(), peerInput(12345, "true")); got.Allow || got.Err != nil || got.Message != "uid not allowed" {
				t.Errorf("other uid: %+v", got)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	conflict := writeFiles(t, map[string]string{
		"policy.rego": uidsPolicy,
		"a.json":      `{"sockwarden": {"config": {"uids": [1], "source": "a"}}}`,
	})
	rootConflict := writeFiles(t, map[string]string{
		"policy.rego": uidsPolicy + "\nconfig := 1\n",
		"data.json":   `{"sockwarden": {"config": {"uids": [1], "source": "a"}}}`,
	})
	badData := writeFiles(t, map[string]string{"policy.rego": uidsPolicy, "data.json": `{"sockwarden": `})
	badDecision := writeFiles(t, map[string]string{"policy.rego": "package sockwarden\n\ndecision := {\"allow\": true, \"timeout\": 30}\n"})
	onlyData := writeFiles(t, map[string]string{"data.json": `{}`})
	tests := []struct {
		name  string
		opts  Options
		wants []string // substrings of the error
	}{
		{"compile error names file:line:column", Options{Paths: []string{"testdata/broken"}}, []string{"testdata/broken/policy.rego:7:2: rego_type_error: undefined function no_such_function"}},
		{"parse error names file:line:column", Options{Paths: []string{writeFiles(t, map[string]string{"bad.rego": "package sockwarden\n\ndecision := {\"allow\": true} if {\n\tinput.x ==\n}\n"})}}, []string{"bad.rego:5:1: rego_parse_error"}},
		{"missing path", Options{Paths: []string{"testdata/nope"}}, []string{"testdata/nope"}},
		{"no paths", Options{}, []string{"no policy paths"}},
		{"no modules", Options{Paths: []string{onlyData}}, []string{"no .rego modules"}},
		{"bad JSON", Options{Paths: []string{badData}}, []string{"data.json"}},
		{"data conflict with Options.Data", Options{Paths: []string{conflict}, Data: map[string]any{"sockwarden": map[string]any{"config": 1}}}, []string{"data.sockwarden.config is defined more than once"}},
		{"rule conflicts with data", Options{Paths: []string{rootConflict}}, []string{"conflicting rule for data path sockwarden/config"}},
		{"undefined on the smoke request", Options{Paths: []string{"testdata/nodefault"}}, []string{"smoke evaluation", "is undefined", "default decision"}},
		{"wrong package", Options{Paths: []string{"testdata/uids"}, Query: "data.sockwarden.verdict"}, []string{"data.sockwarden.verdict is undefined"}},
		{"malformed decision on the smoke request", Options{Paths: []string{badDecision}}, []string{"smoke evaluation", "decision.timeout: want a duration string"}},
		{"query not a reference", Options{Paths: []string{"testdata/uids"}, Query: "x := 1"}, []string{"want a reference into data"}},
		{"query does not parse", Options{Paths: []string{"testdata/uids"}, Query: "data.["}, []string{"query"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Load(context.Background(), tt.opts)
			if err == nil {
				t.Fatalf("Load succeeded: %v", e.Source())
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadDoesNotLeakFiles(t *testing.T) {
	p := writeBundle(t, "r", map[string]string{"sockwarden/policy.rego": uidsPolicy},
		map[string]any{"sockwarden": map[string]any{"config": map[string]any{"uids": []any{7}, "source": "b"}}})
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	before := count()
	for range 20 {
		mustLoad(t, Options{Paths: []string{p}})
	}
	if after := count(); after > before+5 {
		t.Errorf("open files grew from %d to %d over 20 loads", before, after)
	}
}

// badDecisions are decision documents (Rego terms) that must be refused,
// with the path the error must name.
var badDecisions = []struct {
	name, doc, path string
}{
	{"not an object", `[true]`, "decision"},
	{"allow missing", `{"message": "x"}`, "decision.allow"},
	{"allow not boolean", `{"allow": "yes"}`, "decision.allow"},
	{"unknown key", `{"allow": true, "alow": true}`, "decision.alow"},
	{"message not string", `{"allow": true, "message": 1}`, "decision.message"},
	{"reasons not list", `{"allow": true, "reasons": "x"}`, "decision.reasons"},
	{"reason not string", `{"allow": true, "reasons": ["a", 2]}`, "decision.reasons[1]"},
	{"run_as unknown key", `{"allow": true, "run_as": {"uid": 1}}`, "decision.run_as.uid"},
	{"run_as user empty", `{"allow": true, "run_as": {"user": ""}}`, "decision.run_as.user"},
	{"run_as user negative", `{"allow": true, "run_as": {"user": -1}}`, "decision.run_as.user"},
	{"run_as gid too big", `{"allow": true, "run_as": {"group": 4294967296}}`, "decision.run_as.group"},
	{"run_as groups bad member", `{"allow": true, "run_as": {"groups": ["a", true]}}`, "decision.run_as.groups[1]"},
	{"rlimits not object", `{"allow": true, "rlimits": [1]}`, "decision.rlimits"},
	{"rlimit unknown", `{"allow": true, "rlimits": {"cpus": 1}}`, "decision.rlimits.cpus"},
	{"rlimit string", `{"allow": true, "rlimits": {"cpu": "10"}}`, "decision.rlimits.cpu"},
	{"rlimit negative", `{"allow": true, "rlimits": {"nofile": -1}}`, "decision.rlimits.nofile"},
	{"rlimit fraction", `{"allow": true, "rlimits": {"cpu": 1.5}}`, "decision.rlimits.cpu"},
	{"rlimit too big", `{"allow": true, "rlimits": {"as": 18446744073709551616}}`, "decision.rlimits.as"},
	{"landlock unknown key", `{"allow": true, "landlock": {"rx": []}}`, "decision.landlock.rx"},
	{"landlock relative path", `{"allow": true, "landlock": {"ro": ["usr"]}}`, "decision.landlock.ro[0]"},
	{"landlock dotdot", `{"allow": true, "landlock": {"rw": ["/tmp/../etc"]}}`, "decision.landlock.rw[0]"},
	{"port zero", `{"allow": true, "landlock": {"connect_tcp": [0]}}`, "decision.landlock.connect_tcp[0]"},
	{"port too big", `{"allow": true, "landlock": {"bind_tcp": [443, 65536]}}`, "decision.landlock.bind_tcp[1]"},
	{"port string", `{"allow": true, "landlock": {"connect_tcp": ["443"]}}`, "decision.landlock.connect_tcp[0]"},
	{"landlock udp string", `{"allow": true, "landlock": {"udp": "yes"}}`, "decision.landlock.udp"},
	{"seccomp not object", `{"allow": true, "seccomp": "default"}`, "decision.seccomp"},
	{"seccomp unknown profile", `{"allow": true, "seccomp": {"profile": "strict"}}`, "decision.seccomp.profile"},
	{"seccomp unknown key", `{"allow": true, "seccomp": {"kill": ["ptrace"]}}`, "decision.seccomp.kill"},
	{"seccomp deny not list", `{"allow": true, "seccomp": {"deny": "ptrace"}}`, "decision.seccomp.deny"},
	{"run_as dynamic string", `{"allow": true, "run_as": {"dynamic": "yes"}}`, "decision.run_as.dynamic"},
	{"run_as dynamic with a user", `{"allow": true, "run_as": {"dynamic": true, "user": "nobody"}}`, "decision.run_as.dynamic"},
	{"network unknown", `{"allow": true, "network": "loopback"}`, "decision.network"},
	{"network bool", `{"allow": true, "network": false}`, "decision.network"},
	{"quota without key", `{"allow": true, "quota": {"concurrent": 2}}`, "decision.quota"},
	{"quota zero", `{"allow": true, "quota": {"key": "k", "concurrent": 0}}`, "decision.quota.concurrent"},
	{"mask not object", `{"allow": true, "mask": [2]}`, "decision.mask"},
	{"mask negative position", `{"allow": true, "mask": {"args": [-1]}}`, "decision.mask.args[0]"},
	{"mask malformed pattern", `{"allow": true, "mask": {"patterns": ["[x"]}}`, "decision.mask.patterns[0]"},
	{"tmpdir string", `{"allow": true, "tmpdir": "yes"}`, "decision.tmpdir"},
	{"ipc unknown", `{"allow": true, "ipc": "shared"}`, "decision.ipc"},
	{"cgroup not object", `{"allow": true, "cgroup": 64}`, "decision.cgroup"},
	{"cgroup unknown key", `{"allow": true, "cgroup": {"memory_high": 1}}`, "decision.cgroup.memory_high"},
	{"cgroup memory_max zero", `{"allow": true, "cgroup": {"memory_max": 0}}`, "decision.cgroup.memory_max"},
	{"cgroup memory_max string", `{"allow": true, "cgroup": {"memory_max": "256M"}}`, "decision.cgroup.memory_max"},
	{"cgroup memory_swap_max negative", `{"allow": true, "cgroup": {"memory_swap_max": -1}}`, "decision.cgroup.memory_swap_max"},
	{"cgroup pids_max zero", `{"allow": true, "cgroup": {"pids_max": 0}}`, "decision.cgroup.pids_max"},
	{"cgroup pids_max fraction", `{"allow": true, "cgroup": {"pids_max": 1.5}}`, "decision.cgroup.pids_max"},
	{"cgroup cpu_max number", `{"allow": true, "cgroup": {"cpu_max": 50000}}`, "decision.cgroup.cpu_max"},
	{"cgroup cpu_max bad", `{"allow": true, "cgroup": {"cpu_max": "half"}}`, "decision.cgroup.cpu_max"},
	{"cgroup cpu_max small quota", `{"allow": true, "cgroup": {"cpu_max": "999 100000"}}`, "decision.cgroup.cpu_max"},
	{"cgroup cpu_max long period", `{"allow": true, "cgroup": {"cpu_max": "max 1000001"}}`, "decision.cgroup.cpu_max"},
	{"cgroup cpu_max three fields", `{"allow": true, "cgroup": {"cpu_max": "1000 1000 1"}}`, "decision.cgroup.cpu_max"},
	{"timeout number", `{"allow": true, "timeout": 30}`, "decision.timeout"},
	{"timeout bad", `{"allow": true, "timeout": "30 seconds"}`, "decision.timeout"},
	{"kill_timeout negative", `{"allow": true, "kill_timeout": "-1s"}`, "decision.kill_timeout"},
	{"env not object", `{"allow": true, "env": ["PATH=/bin"]}`, "decision.env"},
	{"env value not string", `{"allow": true, "env": {"N": 1}}`, "decision.env.N"},
	{"env name with =", `{"allow": true, "env": {"A=B": "c"}}`, "decision.env.A=B"},
	{"cwd relative", `{"allow": true, "cwd": "tmp"}`, "decision.cwd"},
	{"umask number", `{"allow": true, "umask": 63}`, "decision.umask"},
	{"umask not octal", `{"allow": true, "umask": "0089"}`, "decision.umask"},
	{"umask too big", `{"allow": true, "umask": "01777"}`, "decision.umask"},
	{"max_output_bytes negative", `{"allow": true, "max_output_bytes": -5}`, "decision.max_output_bytes"},
	{"max_stdin_bytes string", `{"allow": true, "max_stdin_bytes": "1M"}`, "decision.max_stdin_bytes"},
}

func TestDecodeDecisionRejects(t *testing.T) {
	for _, tt := range badDecisions {
		t.Run(tt.name, func(t *testing.T) {
			term, err := ast.ParseTerm(tt.doc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeDecision(term.Value)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrDecode) {
				t.Fatalf("err = %v, want a *DecodeError", err)
			}
			if de.Path != tt.path {
				t.Errorf("path = %q, want %q (%v)", de.Path, tt.path, err)
			}
		})
	}
}

// TestEvaluateBadDecisionDenies runs every bad decision through a policy:
// the engine must deny with Err set and nothing else of the document.
func TestEvaluateBadDecisionDenies(t *testing.T) {
	var rules strings.Builder
	rules.WriteString("package sockwarden\n\ndefault decision := {\"allow\": false}\n")
	for i, tt := range badDecisions {
		rules.WriteString("\ndecision := " + tt.doc + " if input.request_id == \"r" + strconv.Itoa(i) + "\"\n")
	}
	e := mustLoad(t, Options{Paths: []string{writeFiles(t, map[string]string{"p.rego": rules.String()})}})
	for i, tt := range badDecisions {
		t.Run(tt.name, func(t *testing.T) {
			in := peerInput(33, "true")
			in.RequestID = "r" + strconv.Itoa(i)
			d := e.Evaluate(context.Background(), in)
			if d.Allow || d.Err == nil || !errors.Is(d.Err, ErrDecode) {
				t.Fatalf("decision = %+v, want a deny with a decode error", d)
			}
			if !strings.Contains(d.Err.Error(), tt.path+":") {
				t.Errorf("error %q does not name %q", d.Err, tt.path)
			}
			if d.Message != "policy error" || d.RunAs != nil || d.Rlimits != nil || d.Landlock != nil || d.Cgroup != nil || d.Env != nil {
				t.Errorf("deny carries policy fields: %+v", d)
			}
			if d.Revision != e.Revision() || d.EvalDuration <= 0 {
				t.Errorf("revision %q, duration %v", d.Revision, d.EvalDuration)
			}
		})
	}
}

func TestDecodeDecisionFull(t *testing.T) {
	term := ast.MustParseTerm(`{
		"allow": true, "message": "m", "reasons": {"b", "a"},
		"run_as": {"user": "nobody", "group": 65534, "groups": [4, "adm"]},
		"rlimits": {"cpu": 10, "as": 5e2, "nofile": 64.0, "core": "unlimited"},
		"landlock": {"ro": ["/usr/", "//lib"], "rw": [], "connect_tcp": [443], "udp": true},
		"seccomp": {"profile": "default", "allow": ["io_uring_setup"], "deny": {"ptrace"}},
		"network": "none", "ipc": "private", "tmpdir": true,
		"cgroup": {"memory_max": 268435456, "memory_swap_max": 0, "pids_max": 64, "cpu_max": " 50000  100000"},
		"timeout": "1m30s", "kill_timeout": "500ms",
		"env": {"PATH": "/bin", "EMPTY": ""}, "cwd": "/srv/www/", "umask": "027",
		"max_output_bytes": 1048576, "max_stdin_bytes": 0
	}`)
	d, err := DecodeDecision(term.Value)
	if err != nil {
		t.Fatal(err)
	}
	umask := uint32(0o27)
	swap := int64(0)
	want := Decision{
		Allow: true, Message: "m", Reasons: []string{"a", "b"},
		RunAs:    &RunAs{User: "nobody", Group: "65534", Groups: []string{"4", "adm"}},
		Rlimits:  map[string]uint64{"cpu": 10, "as": 500, "nofile": 64, "core": sandbox.RlimitInfinity},
		Landlock: &Landlock{RO: []string{"/usr", "/lib"}, RW: []string{}, ConnectTCP: []int{443}, UDP: true},
		Seccomp:  &Seccomp{Profile: "default", Allow: []string{"io_uring_setup"}, Deny: []string{"ptrace"}},
		Network:  "none", IPC: "private", TmpDir: true,
		Cgroup:  &Cgroup{MemoryMax: 256 << 20, MemorySwapMax: &swap, PidsMax: 64, CPUMax: "50000 100000"},
		Timeout: 90 * time.Second, KillTimeout: 500 * time.Millisecond,
		Env: map[string]string{"PATH": "/bin", "EMPTY": ""}, Cwd: "/srv/www", Umask: &umask,
		MaxOutputBytes: 1 << 20,
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("got  %+v\nwant %+v", d, want)
	}
	if d.Landlock.BindTCP != nil {
		t.Error("absent bind_tcp must stay nil")
	}

	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"allow":true,"message":"m","reasons":["a","b"],"run_as":{"user":"nobody","group":"65534","groups":["4","adm"]},` +
		`"rlimits":{"as":500,"core":"unlimited","cpu":10,"nofile":64},"landlock":{"ro":["/usr","/lib"],"rw":[],"connect_tcp":[443],"udp":true},` +
		`"seccomp":{"profile":"default","allow":["io_uring_setup"],"deny":["ptrace"]},"network":"none","ipc":"private","tmpdir":true,"cgroup":{"memory_max":268435456,"memory_swap_max":0,"pids_max":64,"cpu_max":"50000 100000"},` +
		`"timeout":"1m30s","kill_timeout":"500ms","env":{"EMPTY":"","PATH":"/bin"},"cwd":"/srv/www","umask":"0027","max_output_bytes":1048576}`
	if string(b) != wantJSON {
		t.Errorf("JSON:\n got %s\nwant %s", b, wantJSON)
	}
}

const failurePolicy = `package sockwarden

default decision := {"allow": false}

decision := {"allow": true} if input.argv[0] == "true"

# A runtime conflict: two values for one complete rule.
decision := {"allow": true} if input.argv[0] == "conflict"

decision := {"allow": false} if input.argv[0] == "conflict"

# A long computation (9 million iterations) for the timeout test.
decision := {"allow": count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]) > 0} if input.argv[0] == "loop"

# No default: undefined unless argv[0] is "true".
maybe := {"allow": true} if input.argv[0] == "true"
`

func TestEvaluateFailsClosed(t *testing.T) {
	dir := writeFiles(t, map[string]string{"p.rego": failurePolicy})
	e := mustLoad(t, Options{Paths: []string{dir}, Timeout: 20 * time.Millisecond})
	maybe := mustLoad(t, Options{Paths: []string{dir}, Query: "data.sockwarden.maybe"})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	var nilEngine *Engine

	tests := []struct {
		name    string
		e       *Engine
		ctx     context.Context
		argv0   string
		want    error
		message string
	}{
		{"conflict error", e, context.Background(), "conflict", ErrEvaluation, "policy error"},
		{"timeout", e, context.Background(), "loop", ErrTimeout, "policy evaluation timed out"},
		{"caller canceled", e, canceled, "loop", ErrCanceled, "policy error"},
		{"undefined", maybe, context.Background(), "false", ErrUndefined, "policy error"},
		{"nil engine", nilEngine, context.Background(), "true", ErrNoPolicy, "policy error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			d := tt.e.Evaluate(tt.ctx, peerInput(33, tt.argv0))
			if d.Allow || !errors.Is(d.Err, tt.want) {
				t.Fatalf("decision = %+v, want a deny with %v", d, tt.want)
			}
			if d.Message != tt.message || len(d.Reasons) != 1 || d.Reasons[0] != d.Err.Error() {
				t.Errorf("message %q reasons %q", d.Message, d.Reasons)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
	// The conflict error names the place.
	d := e.Evaluate(context.Background(), peerInput(33, "conflict"))
	if !strings.Contains(d.Err.Error(), "p.rego:") || !strings.Contains(d.Err.Error(), "eval_conflict_error") {
		t.Errorf("conflict error %q lacks file and code", d.Err)
	}
	// And the engine still works afterwards.
	if d := e.Evaluate(context.Background(), peerInput(33, "true")); !d.Allow || d.Err != nil {
		t.Errorf("after errors: %+v", d)
	}
}

func TestRevision(t *testing.T) {
	files := map[string]string{
		"policy.rego": uidsPolicy,
		"data.json":   `{"sockwarden": {"config": {"uids": [33], "source": "one"}}}`,
	}
	rev := func(files map[string]string) string {
		return mustLoad(t, Options{Paths: []string{writeFiles(t, files)}}).Revision()
	}
	base := rev(files)
	if base != rev(files) {
		t.Error("same content in another directory gave another revision")
	}
	changedModule := map[string]string{"policy.rego": uidsPolicy + "\n# a comment\n", "data.json": files["data.json"]}
	if rev(changedModule) == base {
		t.Error("changing a module did not change the revision")
	}
	changedData := map[string]string{"policy.rego": uidsPolicy, "data.json": `{"sockwarden": {"config": {"uids": [33, 34], "source": "one"}}}`}
	if rev(changedData) == base {
		t.Error("changing data did not change the revision")
	}
	withTest := map[string]string{"policy.rego": uidsPolicy, "data.json": files["data.json"], "policy_test.rego": "package x\n\ntest_a if true\n"}
	if rev(withTest) != base {
		t.Error("a _test.rego file changed the served revision")
	}
	// Bundle revisions are used as they are; a bundle without one is hashed.
	data := map[string]any{"sockwarden": map[string]any{"config": map[string]any{"uids": []any{7}, "source": "b"}}}
	if r := mustLoad(t, Options{Paths: []string{writeBundle(t, "v1.2.3", map[string]string{"sockwarden/p.rego": uidsPolicy}, data)}}).Revision(); r != "v1.2.3" {
		t.Errorf("bundle revision = %q", r)
	}
	if r := mustLoad(t, Options{Paths: []string{writeBundle(t, "", map[string]string{"sockwarden/p.rego": uidsPolicy}, data)}}).Revision(); len(r) != 12 {
		t.Errorf("revision of a bundle without one = %q, want a hash", r)
	}
}

func TestDefault(t *testing.T) {
	e, err := Default(false)
	if err != nil {
		t.Fatal(err)
	}
	if e.Source() != DefaultSource || e.Revision() == "" || e.Query() != DefaultQuery || e.Timeout() != DefaultTimeout {
		t.Errorf("source %q revision %q query %q timeout %v", e.Source(), e.Revision(), e.Query(), e.Timeout())
	}
	if m := e.Modules(); !reflect.DeepEqual(m, []string{"default/default.rego"}) {
		t.Errorf("modules = %q (tests must not be loaded)", m)
	}
	me := uint32(os.Getuid())
	d := e.Evaluate(context.Background(), peerInput(me, "uname"))
	if !d.Allow || d.Err != nil {
		t.Fatalf("own uid denied: %+v", d)
	}
	if d.Landlock == nil || !reflect.DeepEqual(d.Landlock.RO, []string{"/"}) || !reflect.DeepEqual(d.Landlock.RW, []string{"/dev/null"}) {
		t.Errorf("landlock = %+v", d.Landlock)
	}
	if d.Rlimits["core"] != 0 || d.Rlimits["cpu"] == 0 {
		t.Errorf("rlimits = %v", d.Rlimits)
	}
	if _, ok := d.Rlimits["as"]; ok {
		t.Error("default policy sets an address-space limit")
	}
	if me == 0 && (d.RunAs == nil || d.RunAs.User != "65534") {
		t.Errorf("server runs as root, children must not: run_as = %+v", d.RunAs)
	}
	other := me + 1000
	d = e.Evaluate(context.Background(), peerInput(other, "uname"))
	if d.Allow || d.Err != nil || !strings.Contains(d.Message, "default policy") {
		t.Errorf("other uid: %+v", d)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRunTests(t *testing.T) {
	example, err := os.ReadFile(filepath.Join(examplePolicy, "policy.rego"))
	if err != nil {
		t.Fatal(err)
	}
	exampleData, err := os.ReadFile(filepath.Join(examplePolicy, "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	brokenTest := writeFiles(t, map[string]string{
		"policy.rego": string(example),
		"data.json":   string(exampleData),
		"policy_test.rego": `package sockwarden_test

import data.sockwarden

test_uname_allowed if {
	sockwarden.decision.allow with input as {"argv": ["uname"], "exe": "/usr/bin/uname", "peer": {"uid": 33}}
}

# Deliberately wrong: www-data may not run rm.
test_rm_allowed if {
	sockwarden.decision.allow with input as {"argv": ["rm"], "exe": "/usr/bin/rm", "peer": {"uid": 33}}
}
`,
	})
	tests := []struct {
		name    string
		paths   []string
		verbose bool
		ok      bool
		err     error  // errors.Is, or nil
		errText string // substring of a non-nil error
		out     []string
	}{
		{"example policy passes", []string{examplePolicy}, false, true, nil, "", []string{"PASS: "}},
		{"example policy verbose", []string{examplePolicy}, true, true, nil, "", []string{"data.sockwarden_test.test_allow_uname: PASS", "PASS: "}},
		{"default policy passes", []string{"default"}, false, true, nil, "", []string{"PASS: 6/6"}},
		{"broken test fails", []string{brokenTest}, true, false, nil, "", []string{"test_uname_allowed: PASS", "test_rm_allowed: FAIL", "PASS: 1/2", "FAIL: 1/2"}},
		{"compile error", []string{"testdata/broken"}, false, false, nil, "policy.rego:7:2", nil},
		{"no tests", []string{"testdata/uids"}, false, true, nil, "", nil},
		{"missing path", []string{"testdata/none"}, false, false, nil, "testdata/none", nil},
		{"no paths", nil, false, false, nil, "no paths", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := RunTests(context.Background(), &out, tt.paths, TestOptions{Verbose: tt.verbose})
			ok := err == nil
			var tf *TestFailure
			if errors.As(err, &tf) {
				err = nil // the tests ran, and failed
			}
			if ok != tt.ok {
				t.Errorf("ok = %v, want %v\n%s", ok, tt.ok, out.String())
			}
			switch {
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("err = %v, want %v", err, tt.err)
			case tt.errText != "" && (err == nil || !strings.Contains(err.Error(), tt.errText)):
				t.Errorf("err = %v, want one containing %q", err, tt.errText)
			case tt.err == nil && tt.errText == "" && err != nil:
				t.Errorf("err = %v", err)
			}
			for _, w := range tt.out {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestConcurrentEvaluate(t *testing.T) {
	e := mustLoad(t, Options{Paths: []string{examplePolicy}})
	cases := []struct {
		in    Input
		allow bool
	}{
		{Input{Argv: []string{"uname", "-a"}, Exe: "/usr/bin/uname", Peer: Peer{UID: 33}}, true},
		{Input{Argv: []string{"cat", "/etc/shadow"}, Exe: "/usr/bin/cat", Peer: Peer{UID: 33}}, false},
		{Input{Argv: []string{"sh", "-c", "id"}, Exe: "/usr/bin/sh", Peer: Peer{UID: 33}}, false},
		{Input{Argv: []string{"id"}, Exe: "/usr/bin/id", Peer: Peer{UID: 0}}, true},
		{Input{Argv: []string{"id"}, Exe: "/usr/bin/id", Peer: Peer{UID: 1000}}, false},
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				c := cases[(g+i)%len(cases)]
				d := e.Evaluate(context.Background(), c.in)
				if d.Err != nil || d.Allow != c.allow {
					t.Errorf("%v: %+v", c.in.Argv, d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestInputValueMatchesJSON(t *testing.T) {
	in := Input{
		Argv:   []string{"uname", "-a", "ünïcode", ""},
		Exe:    "/usr/bin/uname",
		Peer:   Peer{PID: 4242, UID: 4294967295, GID: 33, User: "www-data", Exe: "/usr/sbin/nginx"},
		Socket: "/run/s.sock", RequestID: "01J",
		Time: time.Date(2026, 11, 21, 10, 0, 0, 123, time.UTC),
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	viaJSON, err := ast.ParseTerm(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := in.Value(); got.Compare(viaJSON.Value) != 0 {
		t.Errorf("by hand: %v\nJSON:    %v", got, viaJSON.Value)
	}
}

// An empty cgroup object is kept (a cgroup is asked for, without limits);
// an absent one stays nil.
func TestDecodeDecisionCgroup(t *testing.T) {
	for doc, want := range map[string]*Cgroup{
		`{"allow": true}`:                                               nil,
		`{"allow": true, "cgroup": {}}`:                                 {},
		`{"allow": true, "cgroup": {"cpu_max": "max"}}`:                 {CPUMax: "max"},
		`{"allow": true, "cgroup": {"cpu_max": "max 100000"}}`:          {CPUMax: "max 100000"},
		`{"allow": true, "cgroup": {"pids_max": 1, "memory_max": 1e9}}`: {PidsMax: 1, MemoryMax: 1e9},
	} {
		d, err := DecodeDecision(ast.MustParseTerm(doc).Value)
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(d.Cgroup, want) {
			t.Errorf("%s: cgroup %+v, want %+v", doc, d.Cgroup, want)
		}
	}
}

// TestRegoVersions: the same policy written in Rego v0 and in Rego v1
// loads from a directory and passes its tests, each file read as the
// version it parses as; forcing v0 on the v1 files fails, naming them.
func TestRegoVersions(t *testing.T) {
	for _, dir := range []string{"testdata/v0", "testdata/v1"} {
		t.Run(dir, func(t *testing.T) {
			e := mustLoad(t, Options{Paths: []string{dir}})
			d := e.Evaluate(context.Background(), Input{Argv: []string{"uname"}, Exe: "/usr/bin/uname"})
			if !d.Allow || len(d.Reasons) != 1 || d.Reasons[0] != "uname is a tool" {
				t.Errorf("uname: %+v", d)
			}
			if d := e.Evaluate(context.Background(), Input{Argv: []string{"rm"}, Exe: "/usr/bin/rm"}); d.Allow {
				t.Errorf("rm allowed: %+v", d)
			}
			var out bytes.Buffer
			if err := RunTests(context.Background(), &out, []string{dir}, TestOptions{}); err != nil || !strings.Contains(out.String(), "PASS: 2/2") {
				t.Errorf("RunTests: %v\n%s", err, out.String())
			}
		})
	}
	var out bytes.Buffer
	err := RunTests(context.Background(), &out, []string{"testdata/v1"}, TestOptions{RegoVersion: ast.RegoV0})
	if err == nil || !strings.Contains(err.Error(), "testdata/v1/policy.rego") {
		t.Errorf("v1 files read as v0: %v", err)
	}
}

// TestOwnTestsAtLoad: a policy's own *_test.rego files run at load. The
// typo fixture's tests pass under opa test, but its decision has an
// unknown key: as a bundle, it is refused (TestsRefuse, the default),
// loaded with the failure reported (TestsWarn), or loaded untested
// (TestsOff). The example policy's tests pass.
func TestOwnTestsAtLoad(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata/typo", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	typo := writeBundle(t, "typo-1", map[string]string{
		"sockwarden/policy.rego":      read("policy.rego"),
		"sockwarden/policy_test.rego": read("policy_test.rego"),
	}, map[string]any{})

	_, err := Load(context.Background(), Options{Paths: []string{typo}})
	if err == nil {
		t.Fatal("a bundle whose tests fail was loaded")
	}
	for _, want := range []string{"its own tests fail", "test_convert_allowed: FAIL", "/sockwarden/policy.rego:9: decision.timout: unknown key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	e := mustLoad(t, Options{Paths: []string{typo}, Tests: TestsWarn})
	if s := e.Tests(); !s.Failed || s.Files != 1 || !strings.Contains(s.Report, "FAIL: 1/2") {
		t.Errorf("warn: %+v", s)
	}
	if s := mustLoad(t, Options{Paths: []string{typo}, Tests: TestsOff}).Tests(); s.Files != 0 || s.Failed {
		t.Errorf("off: %+v", s)
	}
	if s := mustLoad(t, Options{Paths: []string{examplePolicy}}).Tests(); s.Failed || s.Files != 1 || !strings.Contains(s.Report, "PASS: ") {
		t.Errorf("example policy: %+v", s)
	}
}

// TestRunTestsImpossibleValues: values the decoder accepts in shape but
// no server runs as asked, or rejects, fail the test that produced them:
// run_as root, an unknown rlimit, a relative Landlock path.
func TestRunTestsImpossibleValues(t *testing.T) {
	for _, tt := range []struct{ decision, want string }{
		{`{"allow": true, "run_as": {"user": "root"}}`, `decision.run_as.user: "root" is uid 0`},
		{`{"allow": true, "rlimits": {"cpus": 1}}`, `decision.rlimits.cpus: unknown resource`},
		{`{"allow": true, "landlock": {"ro": ["usr"]}}`, `decision.landlock.ro[0]: want an absolute path`},
	} {
		dir := writeFiles(t, map[string]string{
			"p.rego":      "package sockwarden\n\ndefault decision := {\"allow\": false}\n\ndecision := " + tt.decision + " if input.argv[0] == \"x\"\n",
			"p_test.rego": "package sockwarden\n\ntest_x if decision with input as {\"argv\": [\"x\"]}\n",
		})
		var out bytes.Buffer
		err := RunTests(context.Background(), &out, []string{dir}, TestOptions{})
		var tf *TestFailure
		if !errors.As(err, &tf) || !strings.Contains(out.String(), tt.want) || !strings.Contains(out.String(), "p.rego:5:") {
			t.Errorf("%s: err %v\n%s", tt.decision, err, out.String())
		}
	}
}
