package sim

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// ClopperPearson returns the exact two-sided confidence interval at level
// 1-alpha for a binomial proportion with x successes in n trials: lower =
// the alpha/2 quantile of Beta(x, n-x+1) (0 when x = 0) and upper = the
// 1-alpha/2 quantile of Beta(x+1, n-x) (1 when x = n). Each bound alone is
// a one-sided 1-alpha/2 bound. With n = 0 it returns [0, 1].
func ClopperPearson(x, n int, alpha float64) (lower, upper float64) {
	if n <= 0 {
		return 0, 1
	}
	lower, upper = 0, 1
	if x > 0 {
		lower = distuv.Beta{Alpha: float64(x), Beta: float64(n - x + 1)}.Quantile(alpha / 2)
	}
	if x < n {
		upper = distuv.Beta{Alpha: float64(x + 1), Beta: float64(n - x)}.Quantile(1 - alpha/2)
	}
	return lower, upper
}

// rankQuantile returns the nearest-rank q-quantile of xs, the
// ceil(q*len)-th smallest value, sorting xs in place. No interpolation, so
// request counts stay whole. ok is false when xs is empty.
func rankQuantile(xs []int64, q float64) (v int64, ok bool) {
	if len(xs) == 0 {
		return 0, false
	}
	slices.Sort(xs)
	r := int(math.Ceil(q * float64(len(xs))))
	r = min(max(r, 1), len(xs))
	return xs[r-1], true
}

// zQuantile is the p-quantile of the standard normal distribution.
func zQuantile(p float64) float64 { return distuv.UnitNormal.Quantile(p) }

// Power is the power at which the fixed-horizon test is sized.
const Power = 0.8

// propSampleSize returns the total number of requests (both versions, the
// canary receiving share rho) at which a one-sided two-proportion z-test of
// H0: pB <= lambda0*pA at level alpha has power Power when the true rates
// are pA and pB (the standard normal-approximation formula):
//
//	N = (z_{1-alpha} + z_{power})^2 (lambda0^2 pA(1-pA)/(1-rho) + pB(1-pB)/rho) / (pB - lambda0 pA)^2
//
// ok is false when pB <= lambda0*pA (no effect beyond the margin).
func propSampleSize(pA, pB, lambda0, rho, alpha float64) (int64, bool) {
	d := pB - lambda0*pA
	if !(d > 0) {
		return 0, false
	}
	z := zQuantile(1-alpha) + zQuantile(Power)
	v := lambda0*lambda0*pA*(1-pA)/(1-rho) + pB*(1-pB)/rho
	return int64(math.Ceil(z * z * v / (d * d))), true
}

// mwSampleSize returns Noether's (1987) total sample size for a one-sided
// Mann-Whitney test at level alpha with power Power, the canary receiving
// share rho, when P(canary/(1+margin) > baseline) = pp:
//
//	N = (z_{1-alpha} + z_{power})^2 / (12 rho (1-rho) (pp - 1/2)^2)
//
// ok is false when pp <= 1/2.
func mwSampleSize(pp, rho, alpha float64) (int64, bool) {
	if !(pp > 0.5) {
		return 0, false
	}
	z := zQuantile(1-alpha) + zQuantile(Power)
	return int64(math.Ceil(z * z / (12 * rho * (1 - rho) * (pp - 0.5) * (pp - 0.5)))), true
}

// lognormalShiftP returns P(Y > X) for independent lognormals with the same
// log-sd sigma whose log medians differ by delta (Y's minus X's).
func lognormalShiftP(delta, sigma float64) float64 {
	return distuv.UnitNormal.CDF(delta / (sigma * math.Sqrt2))
}
