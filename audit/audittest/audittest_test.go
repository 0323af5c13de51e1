package audittest_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/sockwarden/sockwarden/audit/audittest"
)

func TestSchemaRejects(t *testing.T) {
	golden, err := os.ReadFile("../testdata/records.golden.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(golden), "\n"), "\n")
	byAction := map[string]string{}
	for _, l := range lines {
		if err := audittest.Check([]byte(l)); err != nil {
			t.Fatalf("golden record invalid: %v", err)
		}
		i := strings.Index(l, `"action":"`) + len(`"action":"`)
		a := l[i : i+strings.IndexByte(l[i:], '"')]
		if _, ok := byAction[a]; !ok {
			byAction[a] = l
		}
	}
	tests := []struct {
		name, action, old, new string
	}{
		{"unknown top-level field", "exec.exit", `"seq":`, `"extra":1,"seq":`},
		{"dotted key", "exec.exit", `"seq":`, `"process.pid":1,"seq":`},
		{"seq zero", "exec.exit", `"seq":4,`, `"seq":0,`},
		{"seq string", "exec.exit", `"seq":4,`, `"seq":"4",`},
		{"timestamp not UTC", "exec.exit", `.126456789Z"`, `.126456789+01:00"`},
		{"bad outcome", "exec.exit", `"outcome":"success"`, `"outcome":"ok"`},
		{"unknown action", "exec.exit", `"action":"exec.exit"`, `"action":"exec.exited"`},
		{"exit without code or signal", "exec.exit", `"exit_code":0,`, ``},
		{"exit with code and signal", "exec.exit", `"exit":{`, `"exit":{"signal":"TERM",`},
		{"numeric user id", "exec.start", `"user":{"id":"65534"`, `"user":{"id":65534`},
		{"start without run_as", "exec.start", `"run_as":{"groups":[{"id":"100","name":"users"}]},`, ``},
		{"deny with success outcome", "exec.decision", `"allow":true`, `"allow":false`},
		{"decision without request_id", "exec.decision", `"request_id":"req-1",`, ``},
		{"kill reason unknown", "exec.kill", `"reason":"timeout"`, `"reason":"boredom"`},
		{"short hash", "exec.kill", `"chain":{"prev":"`, `"chain":{"prev":"00",`},
		{"server event with request_id", "server.start", `"seq":1,`, `"seq":1,"request_id":"x",`},
		{"protocol error success", "protocol.error", `"outcome":"failure"`, `"outcome":"success"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, ok := byAction[tt.action]
			if !ok {
				t.Fatalf("no %s record in golden file", tt.action)
			}
			bad := strings.Replace(rec, tt.old, tt.new, 1)
			if bad == rec {
				t.Fatalf("%q not found in %s", tt.old, rec)
			}
			if err := audittest.Check([]byte(bad)); err == nil {
				t.Errorf("schema accepted %s", bad)
			}
		})
	}
	if err := audittest.Check([]byte("{\"a\":1}\n{\"b\":2}")); err == nil {
		t.Error("accepted two lines")
	}
	if n := audittest.ValidateLines(t, bytes.Join([][]byte{[]byte(lines[0]), []byte(lines[1])}, []byte("\n"))); n != 2 {
		t.Errorf("ValidateLines counted %d", n)
	}
}
