// Package telemetry is the wire format of Verdict's telemetry: one JSON event
// per request, or one batch event summarising many requests of one variant.
// It is pure: no NATS, no clock, no logging. docs/EVENTS.md is the user-facing
// description of the format and is checked by this package's tests.
package telemetry

import (
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

// Reason says why a message was rejected. It is used as the last token of
// the dead-letter subject verdict.rejected.<reason>, so every value is a
// valid NATS subject token.
type Reason string

// The rejection reasons. Decode produces all but ReasonUnknownRollout,
// ReasonTooLarge and ReasonSubjectMismatch, which need the transport's
// context and are produced by package ingest.
const (
	ReasonBadJSON         Reason = "bad-json"         // not JSON, or a field of the wrong type
	ReasonMissingField    Reason = "missing-field"    // rollout, variant, or every signal missing
	ReasonBadVariant      Reason = "bad-variant"      // variant is not baseline or canary
	ReasonBadValue        Reason = "bad-value"        // NaN, Inf, negative or absurd number; bad status, time or id; inconsistent batch
	ReasonBadRollout      Reason = "bad-rollout"      // rollout id does not match [A-Za-z0-9_-]{1,64}
	ReasonUnknownRollout  Reason = "unknown-rollout"  // no such rollout is known to the engine
	ReasonTooLarge        Reason = "too-large"        // message larger than the configured limit
	ReasonBadEncoding     Reason = "bad-encoding"     // not valid UTF-8
	ReasonSubjectMismatch Reason = "subject-mismatch" // rollout field differs from the subject's rollout token
)

// Reasons lists every Reason, in a fixed order. Counters and metrics are
// indexed by it.
func Reasons() []Reason {
	return []Reason{
		ReasonBadJSON, ReasonMissingField, ReasonBadVariant, ReasonBadValue,
		ReasonBadRollout, ReasonUnknownRollout, ReasonTooLarge,
		ReasonBadEncoding, ReasonSubjectMismatch,
	}
}

// Error is a rejected message: the Reason, for counting and routing, and
// the detail, for people.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Err.Error()
}

// Unwrap returns the detail error.
func (e *Error) Unwrap() error { return e.Err }

func reject(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// Limits of the wire format. Values outside them are rejected with
// ReasonBadValue; latencies below MinLatencyMs are raised to it.
const (
	// MinLatencyMs is the smallest latency recorded. Latency is analysed on a
	// log scale, so 0 (a request faster than the router's clock) is recorded
	// as MinLatencyMs instead of being rejected.
	MinLatencyMs = 0.001
	// MaxLatencyMs is the largest plausible latency: 10^7 ms, about 2.8 hours.
	MaxLatencyMs = 1e7
	// MaxValue is the largest plausible custom value.
	MaxValue = 1e15
	// MaxValues is the number of custom values one event may carry.
	MaxValues = 32
	// MaxBuckets is the number of histogram buckets one batch may carry.
	MaxBuckets = 4096
	// MaxIDLen bounds the id and unit fields, in bytes.
	MaxIDLen = 256
	// MaxNameLen bounds a custom value's name, in bytes.
	MaxNameLen = 64
)

// Record is one decoded, validated telemetry message: a single request
// (Batch == nil) or a batch.
type Record struct {
	Rollout string
	Variant analyzer.Variant
	Time    time.Time // UTC; zero when the message has no time
	ID      string    // idempotency key; empty when absent
	Unit    string    // single events only; empty when absent

	// Single is the request of a single event. Its Values is nil (the
	// engine maps Values by name to its metrics); Unit is UnitHash(Unit).
	Single analyzer.Observation
	// Values are a single event's custom values, sorted by name, names
	// distinct; nil when none.
	Values []Value

	// Batch is non-nil for the batch form.
	Batch *BatchRecord
}

// Value is one custom value of a single event. Names are interned by
// Decode, so the same name shares its memory across records.
type Value struct {
	Name  string
	Value float64
}

// Value returns the custom value called name, and whether r has it.
func (r *Record) Value(name string) (float64, bool) {
	for i := range r.Values {
		if r.Values[i].Name == name {
			return r.Values[i].Value, true
		}
	}
	return 0, false
}

// BatchRecord is a decoded batch. Its analyzer.Batch.Values is nil: custom
// values are carried by name in Values and mapped to metric indices by the
// engine.
type BatchRecord struct {
	analyzer.Batch
	Values map[string]analyzer.Summary // nil when none
}

// UnitHash is the stable 64-bit hash (FNV-1a) of a unit id, the same in
// every process and release; 0 for the empty unit.
func UnitHash(unit string) uint64 {
	if unit == "" {
		return 0
	}
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(unit); i++ {
		h ^= uint64(unit[i])
		h *= prime
	}
	return h
}

// ValidRollout reports whether id is a valid rollout id, [A-Za-z0-9_-]{1,64}.
func ValidRollout(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if idByte[id[i]]&rolloutByte == 0 {
			return false
		}
	}
	return true
}

// validName reports whether s is a valid custom value name,
// [A-Za-z0-9_.-]{1,64}.
func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if idByte[s[i]]&nameByte == 0 {
			return false
		}
	}
	return true
}

// idByte classifies the bytes of rollout ids and value names: one table
// lookup per byte instead of a chain of comparisons.
var idByte = func() (t [256]uint8) {
	for c := range 256 {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			t[c] = rolloutByte | nameByte
		}
	}
	t['.'] = nameByte
	return t
}()

// The classes of idByte.
const (
	rolloutByte = 1 << iota // [A-Za-z0-9_-]
	nameByte                // [A-Za-z0-9_.-]
)
