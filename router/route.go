package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// Variant is the side of a rollout a request is sent to. Its values are
// those of analyzer.Variant.
type Variant uint8

// The two variants.
const (
	Baseline Variant = Variant(analyzer.Baseline)
	Canary   Variant = Variant(analyzer.Canary)
)

// String returns "baseline" or "canary", the names used on the wire and in
// the Verdict-Variant header.
func (v Variant) String() string {
	switch v {
	case Baseline:
		return "baseline"
	case Canary:
		return "canary"
	}
	return fmt.Sprintf("Variant(%d)", uint8(v))
}

// ParseVariant parses "baseline" or "canary".
func ParseVariant(s string) (Variant, bool) {
	switch s {
	case "baseline":
		return Baseline, true
	case "canary":
		return Canary, true
	}
	return 0, false
}

// The route states that send all traffic to the baseline, whatever the
// weight field says.
const (
	StateRolledBack = "rolledback"
	StateAborted    = "aborted"
)

// Route is a rollout's current traffic split: the value of the KV entry
// verdict_routes/<rollout>, written by the engine. The JSON is the route
// entry of DESIGN.md:
//
//	{"rollout":"checkout-42","baseline":"v41","canary":"v42","weight":5,
//	 "state":"progressing","step":1,"seq":7}
//
// The zero Route sends everything to the baseline.
type Route struct {
	Rollout  string  `json:"rollout"`
	Baseline string  `json:"baseline"` // baseline version label
	Canary   string  `json:"canary"`   // canary version label
	Weight   float64 `json:"weight"`   // canary percentage, 0..100, decimals allowed
	State    string  `json:"state"`    // pending, progressing, paused, completed, rolledback, aborted
	Step     int     `json:"step"`
	Seq      uint64  `json:"seq"` // increases by one per decision
}

// ErrBadRoute is wrapped by ParseRoute's errors.
var ErrBadRoute = errors.New("bad route entry")

// ParseRoute decodes and checks a route entry stored under key. The
// rollout field may be empty (the key is used) but must otherwise equal
// the key; the weight must be a number in [0, 100].
func ParseRoute(key string, data []byte) (Route, error) {
	var r Route
	if err := json.Unmarshal(data, &r); err != nil {
		return Route{}, fmt.Errorf("%w %q: %v", ErrBadRoute, key, err)
	}
	if r.Rollout == "" {
		r.Rollout = key
	}
	switch {
	case r.Rollout != key:
		return Route{}, fmt.Errorf("%w %q: rollout field is %q", ErrBadRoute, key, r.Rollout)
	case !telemetry.ValidRollout(key):
		return Route{}, fmt.Errorf("%w %q: invalid rollout id", ErrBadRoute, key)
	case math.IsNaN(r.Weight) || r.Weight < 0 || r.Weight > 100:
		return Route{}, fmt.Errorf("%w %q: weight %v outside [0, 100]", ErrBadRoute, key, r.Weight)
	}
	return r, nil
}

// RolledBack reports whether the route sends all traffic back to the
// baseline because the rollout was rolled back or aborted.
func (r Route) RolledBack() bool { return r.State == StateRolledBack || r.State == StateAborted }

// CanaryWeight is the effective canary percentage: Weight, or 0 once the
// rollout is rolled back or aborted.
func (r Route) CanaryWeight() float64 {
	if r.RolledBack() {
		return 0
	}
	return r.Weight
}

// Assign returns the variant of unit: Canary when Point(unit) is below
// the canary weight. A unit that is on the canary stays there as the
// weight grows. An empty unit has no stickiness: each call draws a new
// random point.
func (r Route) Assign(unit string) Variant {
	w := r.CanaryWeight()
	if w <= 0 {
		return Baseline
	}
	p := 0.0
	if unit == "" {
		p = float64(rand.Uint64N(pointScale)) / pointDiv
	} else {
		p = Point(unit)
	}
	if p < w {
		return Canary
	}
	return Baseline
}

// Version returns the version label of v in this route.
func (r Route) Version(v Variant) string {
	if v == Canary {
		return r.Canary
	}
	return r.Baseline
}

const (
	pointScale = 1_000_000
	pointDiv   = 10_000
)

// Point maps a unit to its fixed point in [0, 100), in steps of 0.0001:
//
//	Point(unit) = (FNV-1a-64(unit) mod 1_000_000) / 10_000
//
// where FNV-1a-64 is telemetry.UnitHash (offset basis 14695981039346656037,
// prime 1099511628211, over the unit's bytes). A unit is on the canary when
// its point is below the canary weight. Every router, in any language, must
// compute exactly this; docs/ROUTERS.md gives test vectors.
func Point(unit string) float64 {
	return float64(telemetry.UnitHash(unit)%pointScale) / pointDiv
}
