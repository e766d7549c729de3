package router

import (
	"fmt"
	"math"
	"testing"

	"pgregory.net/rapid"

	"github.com/verdict-dev/verdict/telemetry"
)

// The test vectors of docs/ROUTERS.md, computed independently (Python,
// arbitrary-precision integers reduced mod 2^64).
var pointVectors = []struct {
	unit  string
	hash  uint64
	point float64
}{
	{"user-123", 10997457010273760083, 76.0083},
	{"a", 12638187200555641996, 64.1996},
	{"session-9f2c", 492240807307034182, 3.4182},
}

func TestPointVectors(t *testing.T) {
	for _, v := range pointVectors {
		if got := telemetry.UnitHash(v.unit); got != v.hash {
			t.Errorf("UnitHash(%q) = %d, want %d", v.unit, got, v.hash)
		}
		if got := Point(v.unit); got != v.point {
			t.Errorf("Point(%q) = %v, want %v", v.unit, got, v.point)
		}
	}
}

func weight() *rapid.Generator[float64] {
	return rapid.OneOf(
		rapid.Float64Range(0, 100),
		rapid.SampledFrom([]float64{0, 0.0001, 0.5, 1, 5, 25, 50, 99.9999, 100}),
	)
}

// A unit on the canary stays there as the weight rises.
func TestAssignMonotone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		unit := rapid.StringN(1, 40, -1).Draw(t, "unit")
		w1 := weight().Draw(t, "w1")
		w2 := rapid.Float64Range(w1, 100).Draw(t, "w2")
		lo, hi := Route{Weight: w1}.Assign(unit), Route{Weight: w2}.Assign(unit)
		if lo == Canary && hi != Canary {
			t.Fatalf("unit %q: canary at weight %v but %v at %v", unit, w1, hi, w2)
		}
	})
}

// Rollback (or abort, or weight 0) sends every unit to the baseline at
// once, whatever the weight field says; weight 100 sends every unit to the
// canary.
func TestAssignRollbackAndBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		unit := rapid.String().Draw(t, "unit") // may be empty: random point
		w := weight().Draw(t, "weight")
		state := rapid.SampledFrom([]string{StateRolledBack, StateAborted}).Draw(t, "state")
		if got := (Route{Weight: w, State: state}).Assign(unit); got != Baseline {
			t.Fatalf("Assign(%q) with weight %v, state %s = %v, want baseline", unit, w, state, got)
		}
		if got := (Route{Weight: 0, State: "progressing"}).Assign(unit); got != Baseline {
			t.Fatalf("Assign(%q) at weight 0 = %v, want baseline", unit, got)
		}
		if got := (Route{Weight: 100, State: "completed"}).Assign(unit); got != Canary {
			t.Fatalf("Assign(%q) at weight 100 = %v, want canary", unit, got)
		}
		if p := Point(unit); p < 0 || p >= 100 {
			t.Fatalf("Point(%q) = %v, outside [0, 100)", unit, p)
		}
	})
}

// With many units the canary share is the weight: within 5 standard
// errors of a binomial proportion plus the 0.0001 resolution.
func TestAssignShare(t *testing.T) {
	const n = 200_000
	points := make([]float64, n)
	for i := range points {
		points[i] = Point(fmt.Sprintf("user-%d", i))
	}
	for _, w := range []float64{0.1, 1, 5, 10, 25, 50, 75, 99} {
		canary := 0
		r := Route{Weight: w}
		for i := range n {
			if r.Assign(fmt.Sprintf("user-%d", i)) == Canary {
				canary++
			}
		}
		share := 100 * float64(canary) / n
		p := w / 100
		tol := 100*5*math.Sqrt(p*(1-p)/n) + 0.0001
		if math.Abs(share-w) > tol {
			t.Errorf("weight %v: canary share %.4f%% of %d units, want within %.4f", w, share, n, tol)
		}
	}
	// Without a unit every request draws afresh: the share still matches.
	canary := 0
	for range n {
		if (Route{Weight: 30}).Assign("") == Canary {
			canary++
		}
	}
	if share, tol := 100*float64(canary)/n, 100*5*math.Sqrt(0.3*0.7/n); math.Abs(share-30) > tol {
		t.Errorf("weight 30, no unit: canary share %.4f%%, want within %.4f", share, tol)
	}
}
