package analyzer

import (
	"math"

	"gonum.org/v1/gonum/mathext"
)

// Count e-values (STATS.md §1; Lindon & Malek 2022). Under the null each
// of m events is a canary event with probability theta0 (independently);
// y of them were. The alternative is mixed over a Beta(k*theta0,
// k*(1-theta0)) prior, possibly truncated to one side of theta0.

// logBetaBinom2 is the two-sided Beta-mixture log e-value.
func logBetaBinom2(y, m, theta0, k float64) float64 {
	a, b := k*theta0, k*(1-theta0)
	return mathext.Lbeta(a+y, b+m-y) - mathext.Lbeta(a, b) -
		xlogy(y, theta0) - xlogy(m-y, 1-theta0)
}

// logBetaBinomUp is the one-sided log e-value for H0: theta <= theta0, the
// prior truncated to theta > theta0: Q(a,b) = 1 - I_theta0(a,b).
func logBetaBinomUp(y, m, theta0, k float64) float64 {
	a, b := k*theta0, k*(1-theta0)
	return logBetaBinom2(y, m, theta0, k) +
		logUpperTail(a+y, b+m-y, theta0) - logUpperTail(a, b, theta0)
}

// logBetaBinomDown is the mirror one-sided log e-value for H0: theta >=
// theta0, the prior truncated to theta < theta0.
func logBetaBinomDown(y, m, theta0, k float64) float64 {
	a, b := k*theta0, k*(1-theta0)
	return logBetaBinom2(y, m, theta0, k) +
		logLowerTail(a+y, b+m-y, theta0) - logLowerTail(a, b, theta0)
}

// logUpperTail returns log(1 - I_x(a, b)), computed as log I_{1-x}(b, a) to
// avoid cancellation. Underflow is floored at minLogE.
func logUpperTail(a, b, x float64) float64 {
	return safeLog(mathext.RegIncBeta(b, a, 1-x))
}

// logLowerTail returns log I_x(a, b).
func logLowerTail(a, b, x float64) float64 {
	return safeLog(mathext.RegIncBeta(a, b, x))
}

// minLogE and maxLogE keep every log e-value finite.
const (
	minLogE = -700.0
	maxLogE = 700.0
)

func safeLog(p float64) float64 {
	if !(p > 0) {
		return minLogE
	}
	return math.Log(p)
}

// xlogy is x*log(y) with 0*log(0) = 0.
func xlogy(x, y float64) float64 {
	if x == 0 {
		return 0
	}
	return x * math.Log(y)
}

// clampLog keeps a log e-value finite; NaN becomes 0 (e-value 1, no evidence).
func clampLog(l float64) float64 {
	switch {
	case math.IsNaN(l):
		return 0
	case l < minLogE:
		return minLogE
	case l > maxLogE:
		return maxLogE
	}
	return l
}

// shareTheta maps a rate ratio lambda to the probability that an event is
// a canary event when the canary has share rho of the requests.
func shareTheta(rho, lambda float64) float64 {
	return rho * lambda / (rho*lambda + 1 - rho)
}

// Mixture concentration bounds (see doc.go, "Choosing k").
const (
	kMin = 10.0
	kMax = 1e4
	// designShift is the ratio beyond the margin that the rollback tests are
	// tuned to catch quickly: lambda1 = designShift * (1 + margin).
	designShift = 1.5
)

// designK returns k ≈ theta0(1-theta0)/(theta1-theta0)^2, clamped to
// [kMin, kMax], so that the prior's spread matches the distance between
// the null boundary theta0 and the design alternative theta1.
func designK(theta0, theta1 float64) float64 {
	d := theta1 - theta0
	k := theta0 * (1 - theta0) / (d * d)
	if math.IsNaN(k) || k > kMax {
		return kMax
	}
	if k < kMin {
		return kMin
	}
	return k
}
