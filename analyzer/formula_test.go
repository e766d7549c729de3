package analyzer

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/mathext"
)

// simpson integrates f over [a, b] by adaptive Simpson quadrature.
// The tolerance is relative to a coarse first estimate of the integral.
func simpson(f func(float64) float64, a, b, rtol float64) float64 {
	const n = 2000 // composite Simpson for the scale
	h := (b - a) / n
	coarse := f(a) + f(b)
	for i := 1; i < n; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		coarse += w * f(a+float64(i)*h)
	}
	coarse *= h / 3
	fa, fb, m := f(a), f(b), (a+b)/2
	fm := f(m)
	whole := (b - a) / 6 * (fa + 4*fm + fb)
	return simpsonRec(f, a, b, fa, fm, fb, whole, math.Max(rtol*math.Abs(coarse), 1e-300), 40)
}

func simpsonRec(f func(float64) float64, a, b, fa, fm, fb, whole, tol float64, depth int) float64 {
	m := (a + b) / 2
	lm, rm := (a+m)/2, (m+b)/2
	flm, frm := f(lm), f(rm)
	left := (m - a) / 6 * (fa + 4*flm + fm)
	right := (b - m) / 6 * (fm + 4*frm + fb)
	if depth <= 0 || math.IsNaN(whole) || math.Abs(left+right-whole) <= 15*tol {
		return left + right + (left+right-whole)/15
	}
	return simpsonRec(f, a, m, fa, flm, fm, left, tol/2, depth-1) +
		simpsonRec(f, m, b, fm, frm, fb, right, tol/2, depth-1)
}

func relClose(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(math.Abs(want), 1e-300)
}

// countMixture integrates the likelihood ratio of y canary events among m
// against theta0 over a Beta(k theta0, k (1-theta0)) prior restricted to
// [lo, hi] and renormalised there.
func countMixture(y, m, theta0, k, lo, hi float64) float64 {
	a, b := k*theta0, k*(1-theta0)
	lb := mathext.Lbeta(a, b)
	prior := func(t float64) float64 {
		if t <= 0 || t >= 1 {
			return 0 // a, b > 1 in every case below
		}
		return math.Exp((a-1)*math.Log(t) + (b-1)*math.Log1p(-t) - lb)
	}
	num := func(t float64) float64 {
		if t <= 0 || t >= 1 {
			return 0
		}
		return prior(t) * math.Exp(y*math.Log(t/theta0)+(m-y)*math.Log((1-t)/(1-theta0)))
	}
	// Split at theta0 and at the mode of the posterior so that Simpson sees
	// the peak.
	mode := (a + y - 1) / (a + b + m - 2)
	pts := []float64{lo}
	for _, p := range []float64{theta0, mode} {
		if p > lo && p < hi {
			pts = append(pts, p)
		}
	}
	pts = append(pts, hi)
	if len(pts) == 4 && pts[1] > pts[2] {
		pts[1], pts[2] = pts[2], pts[1]
	}
	var n, z float64
	for i := 0; i+1 < len(pts); i++ {
		n += simpson(num, pts[i], pts[i+1], 1e-13)
		z += simpson(prior, pts[i], pts[i+1], 1e-13)
	}
	return n / z
}

func TestCountEValuesAgainstIntegration(t *testing.T) {
	cases := []struct{ y, m, theta0, k float64 }{
		{0, 0, 0.3, 20},
		{3, 10, 0.3, 20},
		{12, 40, 0.2, 30},
		{1, 60, 0.1, 50},
		{25, 80, 0.25, 12},
		{40, 100, 0.5, 10},
		{9, 120, 0.0594, 77},
	}
	for _, c := range cases {
		two := math.Exp(logBetaBinom2(c.y, c.m, c.theta0, c.k))
		if want := countMixture(c.y, c.m, c.theta0, c.k, 0, 1); !relClose(two, want, 1e-9) {
			t.Errorf("two-sided E(y=%v,m=%v,theta0=%v,k=%v) = %.15g, want %.15g", c.y, c.m, c.theta0, c.k, two, want)
		}
		up := math.Exp(logBetaBinomUp(c.y, c.m, c.theta0, c.k))
		if want := countMixture(c.y, c.m, c.theta0, c.k, c.theta0, 1); !relClose(up, want, 1e-9) {
			t.Errorf("upper E(y=%v,m=%v,theta0=%v,k=%v) = %.15g, want %.15g", c.y, c.m, c.theta0, c.k, up, want)
		}
		down := math.Exp(logBetaBinomDown(c.y, c.m, c.theta0, c.k))
		if want := countMixture(c.y, c.m, c.theta0, c.k, 0, c.theta0); !relClose(down, want, 1e-9) {
			t.Errorf("lower E(y=%v,m=%v,theta0=%v,k=%v) = %.15g, want %.15g", c.y, c.m, c.theta0, c.k, down, want)
		}
	}
}

// gaussMixture integrates the Gaussian likelihood ratio of an estimate
// dhat with variance v, against delta0, over a N(delta0, tau^2) prior
// restricted to side (+1: delta > delta0, -1: below, 0: both).
func gaussMixture(dhat, v, delta0, tau float64, side int) float64 {
	f := func(u float64) float64 { // u = delta - delta0
		lr := (u*(dhat-delta0) - u*u/2) / v
		return math.Exp(lr-u*u/(2*tau*tau)) / (tau * math.Sqrt(2*math.Pi))
	}
	span := math.Abs(dhat-delta0) + 40*(tau+math.Sqrt(v))
	peak := (dhat - delta0) * tau * tau / (tau*tau + v) // posterior mean of u
	pos := func() float64 {
		if peak > 0 && peak < span {
			return simpson(f, 0, peak, 1e-13) + simpson(f, peak, span, 1e-13)
		}
		return simpson(f, 0, span, 1e-13)
	}
	neg := func() float64 {
		if peak < 0 && peak > -span {
			return simpson(f, -span, peak, 1e-13) + simpson(f, peak, 0, 1e-13)
		}
		return simpson(f, -span, 0, 1e-13)
	}
	switch side {
	case 1:
		return 2 * pos()
	case -1:
		return 2 * neg()
	}
	return pos() + neg()
}

func TestGaussEValuesAgainstIntegration(t *testing.T) {
	cases := []struct{ dhat, v, delta0, tau float64 }{
		{0.1, 0.01, 0.05, 0.1},
		{0.3, 0.004, 0.0953, 0.0953},
		{-0.2, 0.02, 0.0953, 0.0953},
		{0.0953, 0.001, 0.0953, 0.2},
		{0.5, 0.1, 0.18, 0.05},
		{0.02, 0.0001, 0.0953, 0.0953},
	}
	for _, c := range cases {
		g := gaussStat{delta: c.dhat, v: c.v, ok: true}
		z := (c.dhat - c.delta0) / math.Sqrt(c.v)
		kappa := c.tau * c.tau / c.v
		if got, want := math.Exp(logGaussTwoSided(z, kappa)), gaussMixture(c.dhat, c.v, c.delta0, c.tau, 0); !relClose(got, want, 1e-9) {
			t.Errorf("two-sided E(%+v) = %.15g, want %.15g", c, got, want)
		}
		if got, want := math.Exp(logGaussUp(g, c.delta0, c.tau)), gaussMixture(c.dhat, c.v, c.delta0, c.tau, 1); !relClose(got, want, 1e-9) {
			t.Errorf("rollback E(%+v) = %.15g, want %.15g", c, got, want)
		}
		if got, want := math.Exp(logGaussDown(g, c.delta0, c.tau)), gaussMixture(c.dhat, c.v, c.delta0, c.tau, -1); !relClose(got, want, 1e-9) {
			t.Errorf("promote E(%+v) = %.15g, want %.15g", c, got, want)
		}
	}
}

func TestGaussRadiusInvertsTwoSided(t *testing.T) {
	for _, c := range []struct{ v, tau, alpha float64 }{
		{0.01, 0.1, 0.05}, {1e-4, 0.0953, 0.01}, {2, 0.05, 0.2},
	} {
		r := gaussRadius(c.v, c.tau, c.alpha)
		// On the boundary of the CS, the two-sided e-value is exactly 1/alpha,
		// computed here by integration.
		e := gaussMixture(r, c.v, 0, c.tau, 0)
		if !relClose(e, 1/c.alpha, 1e-9) {
			t.Errorf("E at radius(%+v) = %.15g, want %.15g", c, e, 1/c.alpha)
		}
	}
}

func TestLogPhiTail(t *testing.T) {
	// Continuity across the switch to the asymptotic series, and against
	// log(erfc) where erfc is still representable.
	for _, x := range []float64{-29.999, -30, -30.001, -35, -37} {
		want := math.Log(0.5 * math.Erfc(-x/math.Sqrt2))
		if got := logPhi(x); !relClose(got, want, 1e-9) {
			t.Errorf("logPhi(%v) = %.15g, want %.15g", x, got, want)
		}
	}
	if got := logPhi(-1e6); !finite(got) {
		t.Errorf("logPhi(-1e6) = %v, want finite", got)
	}
}

func TestOrderStatisticRanks(t *testing.T) {
	// Brute force against the binomial tail computed by summation.
	binomSF := func(n int64, q float64, r int64) float64 { // P(Bin >= r)
		s := 0.0
		for j := r; j <= n; j++ {
			lc, _ := math.Lgamma(float64(n + 1))
			l1, _ := math.Lgamma(float64(j + 1))
			l2, _ := math.Lgamma(float64(n - j + 1))
			s += math.Exp(lc - l1 - l2 + float64(j)*math.Log(q) + float64(n-j)*math.Log1p(-q))
		}
		return s
	}
	for _, c := range []struct {
		n     int64
		q, dl float64
	}{{100, 0.5, 0.05}, {500, 0.9, 0.005}, {2000, 0.99, 0.0025}} {
		r := upperRank(c.n, c.q, c.dl)
		if !(binomSF(c.n, c.q, r) <= c.dl && binomSF(c.n, c.q, r-1) > c.dl) {
			t.Errorf("upperRank(%v) = %d: tails %v, %v around %v", c, r, binomSF(c.n, c.q, r-1), binomSF(c.n, c.q, r), c.dl)
		}
		s := lowerRank(c.n, c.q, c.dl)
		cdf := func(s int64) float64 { return 1 - binomSF(c.n, c.q, s) } // P(Bin <= s-1)
		if !(cdf(s) <= c.dl && cdf(s+1) > c.dl) {
			t.Errorf("lowerRank(%v) = %d: cdfs %v, %v around %v", c, s, cdf(s), cdf(s+1), c.dl)
		}
	}
}

func TestBuckets(t *testing.T) {
	if got := BucketUpper(MinBucket); !(got >= 1e-3 && got/BucketGamma < 1e-3) {
		t.Errorf("BucketUpper(MinBucket) = %v, want the bucket holding 1e-3", got)
	}
	if got := BucketUpper(MaxBucket); !(got >= 1e7 && got/BucketGamma < 1e7) {
		t.Errorf("BucketUpper(MaxBucket) = %v, want the bucket holding 1e7", got)
	}
	for i := MinBucket; i <= MaxBucket; i++ {
		if got := BucketIndex(BucketUpper(i)); got != i {
			t.Fatalf("BucketIndex(BucketUpper(%d)) = %d", i, got)
		}
		if got := BucketIndex(BucketUpper(i) * 1.0001); i < MaxBucket && got != i+1 {
			t.Fatalf("BucketIndex(just above bucket %d) = %d", i, got)
		}
	}
	for _, ms := range []float64{1e-3, 0.37, 1, 12.5, 999, 123456, 1e7} {
		i := BucketIndex(ms)
		if up, lo := BucketUpper(i), bucketLower(i); !(ms <= up*(1+1e-12) && ms > lo) || up/ms > BucketGamma {
			t.Errorf("BucketIndex(%v) = %d with bounds (%v, %v]", ms, i, lo, up)
		}
	}
	for _, c := range []struct {
		ms   float64
		want int32
	}{{0, MinBucket}, {-1, MinBucket}, {math.NaN(), MinBucket}, {1e-9, MinBucket}, {1e12, MaxBucket}, {math.Inf(1), MaxBucket}} {
		if got := BucketIndex(c.ms); got != c.want {
			t.Errorf("BucketIndex(%v) = %d, want %d", c.ms, got, c.want)
		}
	}
}

// TestErrorCSInvertsTwoSided checks the error-rate confidence sequence
// against numerical integration: at each bound the two-sided mixture
// e-value is 1/alpha, to within what the bound's precision (csTol in log
// ratio) allows given the e-value's slope there.
func TestErrorCSInvertsTwoSided(t *testing.T) {
	cases := []struct {
		weight         float64
		nA, eA, nB, eB int64
	}{
		{5, 38000, 380, 2000, 50},
		{5, 19000, 190, 1000, 10},
		{25, 30000, 300, 10000, 150},
		{50, 5000, 20, 5000, 35},
	}
	const alpha = 0.05
	for _, c := range cases {
		a := mustNew(t, Config{Alpha: alpha, PromoteAlpha: 0.05,
			Metrics: []Metric{{Name: "e", Kind: Errors, MaxIncrease: 0.2}}})
		a.StartStep(c.weight)
		a.ObserveBatch(&Batch{Variant: Baseline, Requests: c.nA, Errors: c.eA})
		a.ObserveBatch(&Batch{Variant: Canary, Requests: c.nB, Errors: c.eB})
		r := a.Decide(Step{Weight: c.weight}).Metrics[0]
		rho := a.cur.rho()
		kR, _ := errK(rho, 1.2)
		m, y := float64(c.eA+c.eB), float64(c.eB)
		eAt := func(ratio float64) float64 { return countMixture(y, m, shareTheta(rho, ratio), kR, 0, 1) }
		for _, b := range []struct {
			name  string
			ratio float64
		}{{"lower", r.Lower}, {"upper", r.Upper}} {
			if !(b.ratio > 0 && b.ratio < maxRatio) {
				t.Errorf("%+v: %s bound %v, want finite and positive", c, b.name, b.ratio)
				continue
			}
			e := eAt(b.ratio)
			slope := math.Abs(math.Log(eAt(b.ratio*math.Exp(1e-4))/eAt(b.ratio*math.Exp(-1e-4)))) / 2e-4
			if tol := slope*csTol + 1e-9; !relClose(e, 1/alpha, tol) {
				t.Errorf("%+v: E at the %s bound %.12g = %.15g, want %v within %.2g relative", c, b.name, b.ratio, e, 1/alpha, tol)
			}
		}
	}
}
