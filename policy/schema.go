package policy

import (
	"bytes"
	_ "embed"
)

//go:embed schema.json
var schema []byte

// Schema returns a JSON Schema (draft-07) of the policy file format, for
// editors: with the YAML language server it completes and checks fields
// as they are typed. It cannot express every rule (steps increasing,
// durations ordered, metric names unique, cron syntax); Parse is the
// authority.
func Schema() []byte {
	return bytes.Clone(schema)
}
