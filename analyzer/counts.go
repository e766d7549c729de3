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

// betaPrior is a fixed Beta(k*theta0, k*(1-theta0)) mixing prior with its
// normalising terms computed once: the one-sided e-values below, for a
// test whose theta0 and k never change (the quantile tests), at the cost
// of one Lbeta and one incomplete beta per look instead of two of each.
// The expressions are those of logBetaBinom2/Up/Down, term for term, so
// the results are the same to the last bit.
type betaPrior struct {
	theta0, a, b     float64
	lbeta            float64 // Lbeta(a, b)
	upTail, downTail float64 // logUpperTail(a, b, theta0), logLowerTail(a, b, theta0)
}

func newBetaPrior(theta0, k float64) betaPrior {
	a, b := k*theta0, k*(1-theta0)
	return betaPrior{theta0: theta0, a: a, b: b, lbeta: mathext.Lbeta(a, b),
		upTail: logUpperTail(a, b, theta0), downTail: logLowerTail(a, b, theta0)}
}

func (p *betaPrior) logE2(y, m float64) float64 {
	return mathext.Lbeta(p.a+y, p.b+m-y) - p.lbeta - xlogy(y, p.theta0) - xlogy(m-y, 1-p.theta0)
}

// logEUp is logBetaBinomUp(y, m, theta0, k).
func (p *betaPrior) logEUp(y, m float64) float64 {
	return p.logE2(y, m) + logUpperTail(p.a+y, p.b+m-y, p.theta0) - p.upTail
}

// logEDown is logBetaBinomDown(y, m, theta0, k).
func (p *betaPrior) logEDown(y, m float64) float64 {
	return p.logE2(y, m) + logLowerTail(p.a+y, p.b+m-y, p.theta0) - p.downTail
}

// logLRSupUp returns the log of the largest binomial likelihood ratio of y
// events in m at a share theta >= theta0 against theta0: 0 when y/m is at
// most theta0, m KL(y/m || theta0) above it. A mixture of likelihood
// ratios is at most the largest of them, so this bounds logBetaBinomUp(y,
// m, theta0, k) and betaPrior.logEUp from above for every k, at the cost of
// two logs instead of two log-betas and two incomplete betas (see
// logEBound). Counts that make no sense (y > m) give NaN.
func logLRSupUp(y, m, theta0 float64) float64 {
	if y <= m*theta0 {
		return 0
	}
	return xlogy(y, y/(m*theta0)) + xlogy(m-y, (m-y)/(m*(1-theta0)))
}

// logLRSupDown is logLRSupUp's mirror: the largest likelihood ratio at a
// share theta <= theta0, which bounds logBetaBinomDown and
// betaPrior.logEDown.
func logLRSupDown(y, m, theta0 float64) float64 {
	if y >= m*theta0 {
		return 0
	}
	return xlogy(y, y/(m*theta0)) + xlogy(m-y, (m-y)/(m*(1-theta0)))
}

// logUpperTail returns log(1 - I_x(a, b)), computed as log I_{1-x}(b, a) to
// avoid cancellation. Underflow is floored at minLogE.
func logUpperTail(a, b, x float64) float64 {
	return logRegIncBeta(b, a, 1-x)
}

// logLowerTail returns log I_x(a, b).
func logLowerTail(a, b, x float64) float64 {
	return logRegIncBeta(a, b, x)
}

// logRegIncBeta returns log I_x(a, b), accurate far into the tails, where
// I_x itself underflows: with hundreds of thousands of requests the
// truncated mixtures' tail terms fall below 1e-300, and flooring them
// would inflate the e-values they divide. Where I_x is not small it is
// gonum's RegIncBeta; in the tail it is the continued fraction of
// Numerical Recipes §6.4 (modified Lentz) with its prefactor in log space.
func logRegIncBeta(a, b, x float64) float64 {
	switch {
	case !(a > 0) || !(b > 0):
		// Only counts that cannot happen (a corrupt checkpoint) get here;
		// cephes would panic. NaN makes the caller's e-value "no evidence".
		return math.NaN()
	case !(x > 0):
		return minLogE
	case x >= 1:
		return 0
	}
	if p := mathext.RegIncBeta(a, b, x); p > 1e-250 {
		return math.Log(p)
	}
	if x >= (a+1)/(a+b+2) {
		// The continued fraction converges for the complement: I_x is
		// 1 - I_{1-x}(b, a), and it is only small when that fails too.
		return math.Log1p(-math.Exp(logRegIncBeta(b, a, 1-x)))
	}
	logFront := a*math.Log(x) + b*math.Log1p(-x) - mathext.Lbeta(a, b) - math.Log(a)
	return logFront + math.Log(betaCF(a, b, x))
}

// betaCF evaluates the continued fraction of the incomplete beta function
// by the modified Lentz method (Numerical Recipes §5.2, §6.4).
func betaCF(a, b, x float64) float64 {
	const (
		tiny    = 1e-300
		eps     = 1e-15
		maxIter = 100000
	)
	qab, qap, qam := a+b, a+1, a-1
	c, d := 1.0, 1-qab*x/qap
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		m2 := 2 * fm
		aa := fm * (b - fm) * x / ((qam + m2) * (a + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		aa = -(a + fm) * (qab + fm) * x / ((a + m2) * (qap + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return h
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
