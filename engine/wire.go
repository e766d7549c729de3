package engine

import (
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

// The wire types below are contracts with users and routers (DESIGN.md).

// Spec is a rollout's desired state, stored in KV verdict_rollouts under the
// rollout id and written by `verdict rollout ...`.
type Spec struct {
	Rollout  string `json:"rollout"`
	Policy   string `json:"policy"`
	Baseline string `json:"baseline"`
	Canary   string `json:"canary"`
	Paused   bool   `json:"paused,omitempty"`
	Abort    bool   `json:"abort,omitempty"`
}

// Route is the current traffic split of a rollout, stored in KV
// verdict_routes under the rollout id. Routers watch it.
type Route struct {
	Rollout  string  `json:"rollout"`
	Baseline string  `json:"baseline"`
	Canary   string  `json:"canary"`
	Weight   float64 `json:"weight"` // canary percentage, 0..100
	State    State   `json:"state"`
	Step     int     `json:"step"`
	Seq      uint64  `json:"seq"`
}

// Decision is the data of a decision event.
type Decision struct {
	Rollout        string                  `json:"rollout"`
	Seq            uint64                  `json:"seq"`
	Action         Action                  `json:"action"`
	Step           int                     `json:"step"`
	Weight         float64                 `json:"weight"`
	PreviousWeight float64                 `json:"previousWeight"`
	Policy         string                  `json:"policy"`
	PolicyHash     string                  `json:"policyHash"`
	Reason         string                  `json:"reason"`
	Metrics        []analyzer.MetricResult `json:"metrics"`

	// At is when the decision was made (rollout time, not wall time); it
	// is the CloudEvent time, not part of the data.
	At time.Time `json:"-"`
}
