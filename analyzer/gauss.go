package analyzer

import "math"

// welford holds the count, mean and centred sum of squares of the logs of
// one arm's positive values (Welford 1962; Chan et al. 1979 for merging).
type welford struct {
	n    int64
	mean float64
	m2   float64
}

func (w *welford) add(x float64) {
	w.n++
	d := x - w.mean
	w.mean += d / float64(w.n)
	w.m2 += d * (x - w.mean)
}

// merge adds a batch given as exact sums of logs and squared logs.
func (w *welford) merge(s Summary) {
	if s.N <= 0 || !finite(s.SumLog) || !finite(s.SumLogSq) {
		return
	}
	nb := float64(s.N)
	mb := s.SumLog / nb
	m2b := s.SumLogSq - nb*mb*mb
	if m2b < 0 {
		m2b = 0
	}
	na := float64(w.n)
	n := na + nb
	d := mb - w.mean
	w.mean += d * nb / n
	w.m2 += m2b + d*d*na*nb/n
	w.n += s.N
}

// variance is the unbiased sample variance, 0 with fewer than two values.
func (w *welford) variance() float64 {
	if w.n < 2 {
		return 0
	}
	return w.m2 / float64(w.n-1)
}

// gaussStat is the estimator-form input of the normal mixture (STATS §2):
// the difference of means on the "bad is positive" scale and its variance.
type gaussStat struct {
	delta float64 // Delta_hat
	v     float64 // V = s_A^2/n_A + s_B^2/n_B
	ok    bool    // at least minGaussN values per arm and V > 0
}

// minGaussN is how many values each arm needs before the normal mixture
// counts. The e-value of STATS §2 plugs the sample variance in for the
// true one, which is only sound once the variance is estimated: with a
// handful of canary values at a 1% share, an underestimated variance gave
// e-values in the millions on A/A traffic (3.9% false rollbacks at a pinned
// 1% share in `verdict simulate`, all in the first few hundred requests).
// Below it the metric reports e-value 1 (no evidence either way).
const minGaussN = 50

// diff returns the bad-is-positive difference of arms A and B; sign is +1
// when higher is worse and -1 when lower is worse.
func diff(a, b *welford, sign float64) gaussStat {
	if a.n < minGaussN || b.n < minGaussN {
		return gaussStat{}
	}
	v := a.variance()/float64(a.n) + b.variance()/float64(b.n)
	if !(v > 0) || !finite(v) {
		// Degenerate (all values equal): use a tiny floor so that a real
		// difference still shows, but no e-value explodes on noise-free data.
		v = 1e-12
	}
	d := sign * (b.mean - a.mean)
	if !finite(d) {
		return gaussStat{}
	}
	return gaussStat{delta: d, v: v, ok: true}
}

// logGaussUp is the one-sided normal-mixture log e-value for H0: Delta <=
// delta0 (mixture over Delta > delta0 with a half-normal of scale tau).
func logGaussUp(g gaussStat, delta0, tau float64) float64 {
	if !g.ok {
		return 0
	}
	z := (g.delta - delta0) / math.Sqrt(g.v)
	kappa := tau * tau / g.v
	return clampLog(logGaussOneSided(z, kappa))
}

// logGaussDown is the mirror test, H0: Delta >= delta0.
func logGaussDown(g gaussStat, delta0, tau float64) float64 {
	if !g.ok {
		return 0
	}
	z := (g.delta - delta0) / math.Sqrt(g.v)
	kappa := tau * tau / g.v
	return clampLog(logGaussOneSided(-z, kappa))
}

// logGaussOneSided is log 2 - log(1+kappa)/2 + x^2/2 + log Phi(x) with
// x = z*sqrt(kappa/(1+kappa)).
func logGaussOneSided(z, kappa float64) float64 {
	x := z * math.Sqrt(kappa/(1+kappa))
	return math.Ln2 - 0.5*math.Log1p(kappa) + x*x/2 + logPhi(x)
}

// logGaussTwoSided is -log(1+kappa)/2 + kappa z^2 / (2(1+kappa)).
func logGaussTwoSided(z, kappa float64) float64 {
	return -0.5*math.Log1p(kappa) + kappa*z*z/(2*(1+kappa))
}

// gaussRadius is the half-width of the two-sided normal-mixture confidence
// sequence at level alpha (STATS §2).
func gaussRadius(v, tau, alpha float64) float64 {
	kappa := tau * tau / v
	return math.Sqrt(v) * math.Sqrt((1+kappa)/kappa*(math.Log1p(kappa)+2*math.Log(1/alpha)))
}

// logPhi is log of the standard normal CDF, accurate in the far left tail.
func logPhi(x float64) float64 {
	if x > -30 {
		return math.Log(0.5 * math.Erfc(-x/math.Sqrt2))
	}
	// Asymptotic expansion of Mills' ratio; relative error < 1e-12 here.
	x2 := x * x
	s := 1 - 1/x2 + 3/(x2*x2) - 15/(x2*x2*x2) + 105/(x2*x2*x2*x2)
	return -x2/2 - math.Log(-x) - 0.5*math.Log(2*math.Pi) + math.Log(s)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// gaussTau returns the fixed mixture scale for a metric with the given
// log-scale null boundary (see doc.go, "Choosing tau").
func gaussTau(delta0 float64) float64 {
	return math.Max(delta0, 0.05)
}
