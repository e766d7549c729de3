package analyzer

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/mathext"
)

// TestLogRegIncBetaTails checks log I_x(a, b) where I_x underflows, against
// gonum where gonum is accurate, and against values computed with mpmath
// at 60 digits where it is not.
func TestLogRegIncBetaTails(t *testing.T) {
	// Where gonum is accurate, the continued fraction agrees with it.
	for _, c := range []struct{ a, b, x float64 }{{5, 50, 0.01}, {30, 3000, 0.005}, {200, 20000, 0.007}} {
		got := math.Log(betaCF(c.a, c.b, c.x)) + c.a*math.Log(c.x) + c.b*math.Log1p(-c.x) - mathext.Lbeta(c.a, c.b) - math.Log(c.a)
		want := math.Log(mathext.RegIncBeta(c.a, c.b, c.x))
		if math.Abs(got-want) > 1e-9*math.Abs(want) {
			t.Errorf("log I_%g(%g,%g): continued fraction %v, gonum %v", c.x, c.a, c.b, got, want)
		}
	}
	// Deep in the tail the value is far below what float64 holds; mpmath
	// (50 digits) gives log(1 - I_0.01(351.96, 160218.04)) = -729.5905...
	// and the one-sided e-value of 348 slow requests of 160,174 against a
	// 1% null log E = -6.5573...
	if got, want := logUpperTail(3.96+348, 392.04+160174-348, 0.01), -729.590517515557059; math.Abs(got-want) > 1e-9*math.Abs(want) {
		t.Errorf("logUpperTail = %.12g, want %.12g", got, want)
	}
	if got, want := logBetaBinomUp(348, 160174, 0.01, 396), -6.55730799290943807; math.Abs(got-want) > 1e-7*math.Abs(want) {
		t.Errorf("logBetaBinomUp(348, 160174, 0.01, 396) = %.12g, want %.12g", got, want)
	}
}
