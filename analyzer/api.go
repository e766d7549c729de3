package analyzer

import "time"

// This file fixes the analyzer's public surface. The engine, the simulator
// and the replay command are written against it; change it only together
// with them.

// Variant is one side of the comparison.
type Variant uint8

const (
	// Baseline is the version currently serving most traffic.
	Baseline Variant = iota
	// Canary is the new version under analysis.
	Canary
)

// Kind is the kind of metric compared between the variants.
type Kind uint8

const (
	// Errors compares error rates (count e-process, STATS.md §1).
	Errors Kind = iota + 1
	// Latency compares geometric-mean latency (normal mixture, §2).
	Latency
	// LatencyQuantile compares one latency quantile (§3).
	LatencyQuantile
	// Custom compares the geometric mean of a positive per-request value (§4).
	Custom
)

// Direction says which way a metric degrades.
type Direction int8

const (
	// Increase means higher is worse (the default).
	Increase Direction = iota
	// Decrease means lower is worse.
	Decrease
)

// Metric configures one compared metric.
type Metric struct {
	Name        string
	Kind        Kind
	MaxIncrease float64   // tolerated relative degradation, 0.2 = 20%
	Quantile    float64   // LatencyQuantile only, in (0, 1)
	Direction   Direction // Custom only; errors and latency always degrade upwards
	Weight      float64   // weight in the rollback e-value average; 0 means 1
}

// Config configures an Analyzer.
type Config struct {
	Metrics      []Metric
	Alpha        float64 // P(false rollback) over the whole rollout
	PromoteAlpha float64 // P(promoting a canary worse than a margin)
}

// Observation is one request. Custom values are carried in Values, indexed
// like the Custom metrics in Config.Metrics (the i-th Custom metric reads
// Values[i]); NaN means "not reported".
type Observation struct {
	Variant    Variant
	HasLatency bool
	HasOutcome bool // Error is meaningful
	Error      bool
	LatencyMs  float64
	Unit       uint64 // hash of the unit (user, session); 0 when unknown
	Values     []float64
}

// Summary holds exact sufficient statistics of the logs of n positive values.
type Summary struct {
	N        int64
	SumLog   float64
	SumLogSq float64
}

// Bucket is one bucket of a log-bucketed latency histogram (see BucketIndex).
type Bucket struct {
	Index int32
	Count int64
}

// Batch is many requests of one variant, summarised. Ingesting it costs
// O(len(Buckets)+len(Values)), not O(Count).
type Batch struct {
	Variant  Variant
	Requests int64 // requests with a known outcome
	Errors   int64
	Latency  Summary
	Buckets  []Bucket  // latency histogram; required for LatencyQuantile metrics
	Values   []Summary // indexed like Observation.Values
}

// Step is what the decision rule needs to know about the current step.
type Step struct {
	Weight      float64       // nominal canary share in percent, (0, 100)
	Elapsed     time.Duration // time since the step started
	MinDuration time.Duration
	MaxDuration time.Duration
	MinRequests int64 // per variant
	OnTimeout   Action
}

// Action is the outcome of the decision rule.
type Action uint8

const (
	// Hold keeps the current weight.
	Hold Action = iota
	// Promote advances one step.
	Promote
	// Rollback sends all traffic back to the baseline.
	Rollback
)

// MetricResult is the evidence for one metric at one evaluation. All fields
// are finite; an undefined estimate (no data) is reported as 0 with zero
// samples. The JSON names are the decision event's (DESIGN.md).
type MetricResult struct {
	Name     string  `json:"name"`
	Baseline float64 `json:"baseline"` // baseline estimate (rate, ms, value)
	Canary   float64 `json:"canary"`
	Estimate float64 `json:"estimate"` // canary/baseline ratio (degradation direction)
	Lower    float64 `json:"lower"`    // anytime-valid CS for Estimate
	Upper    float64 `json:"upper"`
	EValue   float64 `json:"eValue"` // one-sided rollback e-value
	PValue   float64 `json:"pValue"` // always-valid p-value, min(1, 1/max E)
	Samples  Samples `json:"samples"`
}

// Samples counts the observations behind a MetricResult.
type Samples struct {
	Baseline int64 `json:"baseline"`
	Canary   int64 `json:"canary"`
}

// Verdict is the decision rule's answer for one evaluation.
type Verdict struct {
	Action  Action
	Cause   string // the metric that drove a rollback, or what blocks a promote
	Reason  string // one line for people
	Metrics []MetricResult
}
