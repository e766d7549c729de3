package analyzer

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestCountBounds checks the bounds Check uses in place of the count
// tests' e-values, both sides, over counts up to ten million, shares from
// 1e-6 to 1-1e-6 and every k the tests use: the computed mixture is below 0
// when the bound is 0, and exceeds a positive bound, by rounding where the
// prior sits where the likelihood ratio is flat, by less than a hundredth
// of boundSlack.
func TestCountBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := math.Floor(math.Exp(rapid.Float64Range(0, 16).Draw(t, "logM")))
		theta0 := math.Exp(-rapid.Float64Range(0, 13.8).Draw(t, "-logTheta0"))
		if theta0 > 1-1e-6 {
			theta0 = 1 - 1e-6
		}
		k := math.Exp(rapid.Float64Range(math.Log(kMin), math.Log(kMax)).Draw(t, "logK"))
		// Counts near the null boundary are where the bound is tightest.
		sd := math.Sqrt(m * theta0 * (1 - theta0))
		y := math.Round(m*theta0 + sd*rapid.Float64Range(-4, 6).Draw(t, "z"))
		if rapid.Bool().Draw(t, "uniform") {
			y = math.Floor(rapid.Float64Range(0, 1).Draw(t, "u") * (m + 1))
		}
		y = math.Min(math.Max(y, 0), m)

		prior := newBetaPrior(theta0, k)
		for _, c := range []struct {
			side string
			sup  float64
			es   []float64
		}{
			{"up", logLRSupUp(y, m, theta0), []float64{logBetaBinomUp(y, m, theta0, k), prior.logEUp(y, m)}},
			{"down", logLRSupDown(y, m, theta0), []float64{logBetaBinomDown(y, m, theta0, k), prior.logEDown(y, m)}},
		} {
			for _, e := range c.es {
				switch {
				case c.sup == 0 && !(e < 0):
					t.Fatalf("%s y=%v m=%v theta0=%v k=%v: bound 0, mixture %v", c.side, y, m, theta0, k, e)
				case c.sup > 0 && !(e <= c.sup+boundSlack(m)/100):
					t.Fatalf("%s y=%v m=%v theta0=%v k=%v: bound %v, mixture %v", c.side, y, m, theta0, k, c.sup, e)
				}
			}
		}
	})
	if up, down := logLRSupUp(5, 3, 0.1), logLRSupDown(-1, 3, 0.1); !math.IsNaN(up) || !math.IsNaN(down) {
		t.Errorf("impossible counts: bounds %v and %v, want NaN (never skip)", up, down)
	}
}

// TestCheckCapsRollbacks checks that Check's bounds do the work they are
// there for: on an A/A canary past its first looks, most looks leave the
// count tests' rollback e-values out. (That they never change an answer
// or the state is TestCheckMatchesDecide's.)
func TestCheckCapsRollbacks(t *testing.T) {
	a := mustNew(t, defaultConfig())
	a.StartStep(5)
	s := newStream(7, 0.05)
	step := Step{Weight: 5, MinDuration: time.Hour, MinRequests: 100}
	var o Observation
	looks, capped := 0, map[string]int{}
	for n := 1; n <= 200_000; n++ {
		s.next(&o)
		a.Observe(&o)
		if n%100 != 0 {
			continue
		}
		if act, _ := a.Check(step); act != Hold {
			t.Fatalf("A/A look %d: %v", n, act)
		}
		if n <= 20_000 {
			continue
		}
		looks++
		for i, e := range a.evbuf {
			if e.capped {
				capped[a.metrics[i].Name]++
			}
		}
	}
	for _, name := range []string{"error-rate", "p99"} {
		if share := float64(capped[name]) / float64(looks); share < 0.9 {
			t.Errorf("%s: %d of %d looks capped (%.2f), want at least 90%%", name, capped[name], looks, share)
		}
	}
	t.Logf("capped over %d looks: %v", looks, capped)
}
