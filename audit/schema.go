package audit

import _ "embed"

// SchemaJSON is the JSON Schema (draft 2020-12) of an audit record, the
// contents of audit/schema.json. The audittest package validates records
// against it.
//
//go:embed schema.json
var SchemaJSON []byte
