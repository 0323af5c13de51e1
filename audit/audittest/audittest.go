// Package audittest helps tests check audit records against the record
// schema (audit.SchemaJSON), so that the server's tests can assert that
// what they log is what SIEM pipelines expect.
package audittest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sockwarden/sockwarden/audit"
)

const schemaURL = "https://github.com/sockwarden/sockwarden/audit/schema.json"

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(audit.SchemaJSON))
	if err != nil {
		return nil, fmt.Errorf("audittest: schema.json: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("audittest: schema.json: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("audittest: schema.json: %w", err)
	}
	return s, nil
})

// Check validates one record (a JSON line, with or without its newline)
// against the schema and returns what is wrong, or nil.
func Check(line []byte) error {
	s, err := compiled()
	if err != nil {
		return err
	}
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if bytes.ContainsAny(line, "\n") {
		return fmt.Errorf("audittest: record spans more than one line")
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return fmt.Errorf("audittest: not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("audittest: record does not match schema: %w", err)
	}
	return nil
}

// Validate fails t if line is not a valid audit record.
func Validate(t testing.TB, line []byte) {
	t.Helper()
	if err := Check(line); err != nil {
		t.Errorf("%v\nrecord: %s", err, line)
	}
}

// ValidateLines validates every line of data (a JSON Lines log) and
// returns how many records it checked. An empty line fails t.
func ValidateLines(t testing.TB, data []byte) int {
	t.Helper()
	n := 0
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" && len(data) == 0 {
			break
		}
		if err := Check([]byte(line)); err != nil {
			t.Errorf("line %d: %v\nrecord: %s", i+1, err, line)
		}
		n++
	}
	return n
}

// Record is one decoded audit record, for assertions on its fields.
type Record map[string]any

// Get walks a dotted path ("event.action") through the nested objects of
// r and returns the value there, or nil.
func (r Record) Get(path string) any {
	var v any = map[string]any(r)
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// Str returns the string at path, or "".
func (r Record) Str(path string) string {
	s, _ := r.Get(path).(string)
	return s
}

// Num returns the number at path as an int64, or -1 when there is none.
func (r Record) Num(path string) int64 {
	f, ok := r.Get(path).(float64)
	if !ok {
		return -1
	}
	return int64(f)
}

// Action returns the record's event.action.
func (r Record) Action() string { return r.Str("event.action") }

// RequestID returns the record's request_id, or "".
func (r Record) RequestID() string { return r.Str("request_id") }

// Args returns process.args (of an exec.decision record).
func (r Record) Args() []string {
	a, _ := r.Get("process.args").([]any)
	out := make([]string, len(a))
	for i, x := range a {
		out[i], _ = x.(string)
	}
	return out
}

// Parse validates every line of data (JSON Lines) against the schema and
// returns the decoded records.
func Parse(t testing.TB, data []byte) []Record {
	t.Helper()
	ValidateLines(t, data)
	var out []Record
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("audit record %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}
