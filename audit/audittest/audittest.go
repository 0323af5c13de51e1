// Package audittest helps tests check audit records against the record
// schema (audit.SchemaJSON), so that the server's tests can assert that
// what they log is what SIEM pipelines expect.
package audittest

import (
	"bytes"
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
