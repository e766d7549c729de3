package analyzer

import (
	"math"

	"gonum.org/v1/gonum/mathext"
)

// quantState is the predictable-threshold test of one latency quantile
// (STATS §3). Thresholds come from the baseline's histogram only and are
// refreshed at epochs n = W, 2W, 4W, ... baseline latencies; the bound at
// epoch j uses delta_j = delta/2^(j+1), so all epochs together fail with
// probability at most delta (union bound). Canary latencies are judged
// against the thresholds in force when they arrive.
type quantState struct {
	q      float64
	warm   int64   // W
	nextN  int64   // baseline count at which the next epoch starts
	epoch  int32   // epochs frozen so far
	cHi    float64 // rollback threshold (1+m) * upper bound of Q_A(q)
	cLo    float64 // promote threshold (1+m) * lower bound of Q_A(q)
	trials int64   // canary latencies judged
	slowHi int64   // of which above cHi (rollback evidence)
	slowLo int64   // of which above cLo (counted against promote)

	roll, prom betaPrior // the tests' fixed priors (derived from q, not state)
}

// Quantile test constants (doc.go).
const (
	warmFactor   = 20.0 // W = ceil(warmFactor/(1-q)), at least warmMin
	warmMin      = 100
	maxEpochs    = 40
	deltaPerCent = 0.1 // delta = deltaPerCent * Alpha
)

func newQuantState(q float64) quantState {
	w := max(int64(math.Ceil(warmFactor/(1-q))), warmMin)
	t0 := 1 - q
	return quantState{q: q, warm: w, nextN: w,
		roll: newBetaPrior(t0, designK(t0, math.Min(designShift*t0, (1+t0)/2))),
		prom: newBetaPrior(t0, designK(t0, t0/designShift))}
}

func (s *quantState) frozen() bool { return s.epoch > 0 }

// observe judges one latency (already added to the histograms).
func (s *quantState) observe(v Variant, ms float64, base *hist, lambda0, alpha float64) {
	if v == Baseline {
		if base.n >= s.nextN {
			s.refresh(base, lambda0, alpha)
		}
		return
	}
	if !s.frozen() {
		return
	}
	s.trials++
	if ms > s.cHi {
		s.slowHi++
	}
	if ms > s.cLo {
		s.slowLo++
	}
}

// observeBatch judges a batch conservatively: a bucket straddling a
// threshold counts as not slow for the rollback test and slow for the
// promote test.
func (s *quantState) observeBatch(v Variant, bs []Bucket, base *hist, lambda0, alpha float64) {
	if v == Baseline {
		if base.n >= s.nextN {
			s.refresh(base, lambda0, alpha)
		}
		return
	}
	if !s.frozen() {
		return
	}
	for _, b := range bs {
		if b.Count <= 0 {
			continue
		}
		s.trials += b.Count
		if bucketLower(b.Index) >= s.cHi {
			s.slowHi += b.Count
		}
		if BucketUpper(b.Index) > s.cLo {
			s.slowLo += b.Count
		}
	}
}

// refresh freezes new thresholds from the baseline histogram.
func (s *quantState) refresh(base *hist, lambda0, alpha float64) {
	if s.epoch >= maxEpochs {
		s.nextN = math.MaxInt64
		return
	}
	delta := deltaPerCent * alpha / math.Exp2(float64(s.epoch+1))
	n := base.n
	s.cHi = math.MaxFloat64
	if r := upperRank(n, s.q, delta); r <= n {
		s.cHi = lambda0 * BucketUpper(base.rankBucket(r))
	}
	s.cLo = 0
	if r := lowerRank(n, s.q, delta); r >= 1 {
		s.cLo = lambda0 * bucketLower(base.rankBucket(r))
	}
	s.epoch++
	for s.nextN <= n && s.nextN < math.MaxInt64/2 {
		s.nextN *= 2
	}
}

// upperRank returns the smallest r with P(Bin(n,q) >= r) <= delta, so that
// the r-th order statistic of n values is at least the q-quantile with
// probability >= 1-delta; n+1 when there is none.
func upperRank(n int64, q, delta float64) int64 {
	// P(Bin(n,q) >= r) = I_q(r, n-r+1), decreasing in r.
	lo, hi := int64(1), n+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		if mathext.RegIncBeta(float64(mid), float64(n-mid+1), q) <= delta {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lowerRank returns the largest s with P(Bin(n,q) <= s-1) <= delta, so that
// the s-th order statistic is at most the q-quantile with probability >=
// 1-delta; 0 when there is none.
func lowerRank(n int64, q, delta float64) int64 {
	// P(Bin(n,q) <= s-1) = I_{1-q}(n-s+1, s), increasing in s.
	lo, hi := int64(0), n
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if mathext.RegIncBeta(float64(n-mid+1), float64(mid), 1-q) <= delta {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// Quantile test e-values: one-sample Bernoulli tests of the slow share
// against 1-q, with the count e-values of counts.go. The rollback test is
// tuned to a slow share designShift times 1-q, the promote test to one
// designShift times smaller (the priors are made in newQuantState).
func (s *quantState) logERollback() float64 {
	if s.trials == 0 {
		return 0
	}
	return clampLog(s.roll.logEUp(float64(s.slowHi), float64(s.trials)))
}

func (s *quantState) logEPromote() float64 {
	if s.trials == 0 {
		return 0
	}
	return clampLog(s.prom.logEDown(float64(s.slowLo), float64(s.trials)))
}

// quantileCS returns a display-only confidence interval for the q-quantile
// of one arm: a time-uniform normal-mixture boundary on the rank with
// variance n q (1-q) (asymptotic; Howard et al. 2021), at level alpha,
// mapped through the histogram (conservative bucket edges). hi is +Inf
// when the rank bound exceeds the sample.
func quantileCS(h *hist, q, alpha float64, warm int64) (lo, hi float64) {
	if h.n == 0 {
		return 0, math.Inf(1)
	}
	n := float64(h.n)
	v := n * q * (1 - q)
	// Tuned so kappa ≈ 7.9 (STATS §2) after the warm-up.
	rho := float64(warm) * q * (1 - q) / 7.94
	r := math.Sqrt((v + rho) * (math.Log1p(v/rho) + 2*math.Log(1/alpha)))
	rl := int64(math.Floor(n*q - r))
	rh := int64(math.Ceil(n*q + r))
	if rl >= 1 {
		lo = bucketLower(h.rankBucket(rl))
	}
	hi = math.Inf(1)
	if rh <= h.n {
		hi = BucketUpper(h.rankBucket(rh))
	}
	return lo, hi
}
