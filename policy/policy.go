package policy

import (
	"time"

	"github.com/robfig/cron/v3"
)

// APIVersion and Kind are the only accepted values of a policy document's
// apiVersion and kind fields.
const (
	APIVersion = "verdict/v1"
	Kind       = "Policy"
)

// Metric types.
const (
	TypeErrors          = "errors"           // error rate
	TypeLatency         = "latency"          // geometric-mean latency
	TypeLatencyQuantile = "latency-quantile" // one latency quantile
	TypeCustom          = "custom"           // a positive per-request value from the event's "values"
)

// Values of Policy.OnTimeout: what happens when a step reaches its
// MaxDuration without a decision.
const (
	OnTimeoutRollback = "rollback"
	OnTimeoutPromote  = "promote"
	OnTimeoutHold     = "hold"
)

// Values of Metric.Direction: which direction of change is bad.
const (
	DirectionIncrease = "increase"
	DirectionDecrease = "decrease"
)

// Defaults applied to fields a policy leaves out.
const (
	DefaultMinDuration  = time.Minute
	DefaultMaxDuration  = 30 * time.Minute
	DefaultMinRequests  = 500
	DefaultOnTimeout    = OnTimeoutRollback
	DefaultAlpha        = 0.05
	DefaultPromoteAlpha = 0.05
	DefaultWeight       = 1.0
	DefaultDirection    = DirectionIncrease
)

// Limits on policy files and their contents.
const (
	MaxFileSize = 1 << 20 // bytes; larger files are rejected before parsing
	MaxDepth    = 64      // YAML nesting levels
	MaxSteps    = 20
	MaxMetrics  = 32
)

// DefaultMetrics returns the metrics of a policy that has no metrics field:
// error-rate (errors, 20%) and latency (latency, 10%).
func DefaultMetrics() []Metric {
	return []Metric{
		{Name: "error-rate", Type: TypeErrors, MaxIncrease: 0.2, Direction: DirectionIncrease, Weight: DefaultWeight},
		{Name: "latency", Type: TypeLatency, MaxIncrease: 0.1, Direction: DirectionIncrease, Weight: DefaultWeight},
	}
}

// A Policy says how a rollout proceeds: the canary weights it goes through,
// how long each step lasts, and which metrics decide. Every default is
// applied; a Policy returned by Parse or Load is valid and must not be
// modified, since a running rollout keeps a pointer to the Policy it started
// with.
type Policy struct {
	Name          string
	Preset        string        // as written, "" if steps were given
	Steps         []Step        // expanded, defaults applied; last Weight is 100
	OnTimeout     string        // OnTimeoutRollback, OnTimeoutPromote or OnTimeoutHold
	Alpha         float64       // P(false rollback) over the whole rollout, in (0, 0.5)
	PromoteAlpha  float64       // P(promoting a canary worse than a margin), in (0, 0.5)
	PromoteWindow string        // cron spec as written, "" if none
	Window        cron.Schedule // parsed PromoteWindow (UTC unless CRON_TZ=); nil if none
	Metrics       []Metric
	Hash          string // "sha256:<64 hex>" of Normalized()
	File          string // where it was defined
	Line          int    // line of the document's first field

	nameLine, nameCol int // position of the name, for duplicate errors
}

// A Step is one canary weight and the bounds on how long the rollout stays
// there. The last step (Weight 100) is terminal: reaching it completes the
// rollout, so the analysis happens on the steps before it.
type Step struct {
	Weight      float64 // canary percentage, in (0, 100]
	MinDuration time.Duration
	MaxDuration time.Duration
	MinRequests int64 // per variant, before a promote is possible
}

// A Metric is one quantity compared between canary and baseline.
type Metric struct {
	Name        string
	Type        string  // TypeErrors, TypeLatency, TypeLatencyQuantile or TypeCustom
	MaxIncrease float64 // tolerated relative degradation as a fraction: 20% is 0.2
	Quantile    float64 // TypeLatencyQuantile only, in (0, 1)
	Field       string  // TypeCustom only: the key in the event's "values"
	Direction   string  // DirectionIncrease or DirectionDecrease; always increase unless custom
	Weight      float64 // weight in the rollback e-value average; default 1
}

// A Set holds valid policies by name.
type Set map[string]*Policy
