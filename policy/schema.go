package policy

import _ "embed"

// DecisionSchemaJSON is the JSON Schema (2020-12) of the decision
// document, decision.schema.json: the contract [DecodeDecision] enforces,
// for editors, linters and policy authors. A few bounds are the
// decoder's alone (a cpu_max period over 1000000, a duration's range).
//
//go:embed decision.schema.json
var DecisionSchemaJSON []byte
