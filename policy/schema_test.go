package policy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sockwarden/sockwarden/sandbox"
)

// TestDecisionSchema keeps decision.schema.json and DecodeDecision in
// step: the same keys, the same rlimit names, and the same verdict on
// each document of a table of valid and invalid decisions.
func TestDecisionSchema(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(DecisionSchemaJSON))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("decision.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("decision.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Properties map[string]struct {
			PropertyNames struct {
				Enum []string `json:"enum"`
			} `json:"propertyNames"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(DecisionSchemaJSON, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := strings.Split(decisionKeys, ", ")
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("schema keys %v, decoder keys %v", keys, want)
	}
	if got := raw.Properties["rlimits"].PropertyNames.Enum; !slices.Equal(got, sandbox.RlimitNames()) {
		t.Errorf("schema rlimit names %v, sandbox's %v", got, sandbox.RlimitNames())
	}

	docs := []struct {
		doc   string
		valid bool
	}{
		{`{"allow": false}`, true},
		{`{"allow": true, "message": "m", "reasons": ["r"],
		   "run_as": {"user": "nobody", "group": 65534, "groups": []},
		   "network": "none", "ipc": "private", "tmpdir": true, "explain": true,
		   "mask": {"args": [2], "patterns": ["--pin="]},
		   "quota": {"key": "convert", "concurrent": 4},
		   "rlimits": {"cpu": 10, "as": 536870912, "nofile": "unlimited"},
		   "landlock": {"ro": ["/usr", "/lib"], "rw": ["/tmp/job"], "connect_tcp": [443], "bind_tcp": [], "udp": false},
		   "seccomp": {"profile": "default", "allow": [], "deny": ["ptrace"]},
		   "timeout": "30s", "kill_timeout": "1m30s",
		   "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
		   "cwd": "/", "umask": "0077",
		   "max_output_bytes": 10485760, "max_stdin_bytes": 0,
		   "cgroup": {"memory_max": 268435456, "memory_swap_max": 0, "pids_max": 64, "cpu_max": "50000 100000"}}`, true},
		{`{"allow": true, "run_as": {"dynamic": true}}`, true},
		{`{}`, false},
		{`{"allow": "yes"}`, false},
		{`{"allow": true, "timout": "5s"}`, false},
		{`{"allow": true, "timeout": 5}`, false},
		{`{"allow": true, "timeout": "-1s"}`, false},
		{`{"allow": true, "rlimits": {"cpus": 1}}`, false},
		{`{"allow": true, "rlimits": {"cpu": -1}}`, false},
		{`{"allow": true, "rlimits": {"cpu": "lots"}}`, false},
		{`{"allow": true, "landlock": {"ro": ["usr"]}}`, false},
		{`{"allow": true, "landlock": {"ro": ["/usr/../etc"]}}`, false},
		{`{"allow": true, "landlock": {"connect_tcp": [0]}}`, false},
		{`{"allow": true, "landlock": {"connect_tcp": [70000]}}`, false},
		{`{"allow": true, "landlock": {"write": ["/tmp"]}}`, false},
		{`{"allow": true, "seccomp": {"profile": "strict"}}`, false},
		{`{"allow": true, "network": "bridge"}`, false},
		{`{"allow": true, "quota": {"key": "k"}}`, false},
		{`{"allow": true, "quota": {"key": "", "concurrent": 1}}`, false},
		{`{"allow": true, "umask": "0999"}`, false},
		{`{"allow": true, "umask": 77}`, false},
		{`{"allow": true, "cgroup": {"cpu_max": "10 100"}}`, false},
		{`{"allow": true, "cgroup": {"memory_max": 0}}`, false},
		{`{"allow": true, "run_as": {"dynamic": true, "user": "nobody"}}`, false},
		{`{"allow": true, "run_as": {"user": ""}}`, false},
		{`{"allow": true, "env": {"A=B": "c"}}`, false},
		{`{"allow": true, "env": {"A": 1}}`, false},
		{`{"allow": true, "cwd": "tmp"}`, false},
		{`{"allow": true, "max_output_bytes": -1}`, false},
		{`{"allow": true, "mask": {"args": [-1]}}`, false},
		{`{"allow": true, "explain": "yes"}`, false},
	}
	for _, tt := range docs {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(tt.doc))
		if err != nil {
			t.Fatalf("%s: %v", tt.doc, err)
		}
		schemaErr := schema.Validate(inst)
		v, err := ast.ValueFromReader(strings.NewReader(tt.doc))
		if err != nil {
			t.Fatal(err)
		}
		_, decodeErr := DecodeDecision(v)
		if (schemaErr == nil) != tt.valid || (decodeErr == nil) != tt.valid {
			t.Errorf("%s: schema says %v, decoder says %v; want valid %v", tt.doc, schemaErr, decodeErr, tt.valid)
		}
	}
}
