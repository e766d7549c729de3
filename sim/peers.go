package sim

import (
	"math"
	"slices"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
)

// The peers: what others use, run on the same requests as Verdict at a
// fixed canary share with the policy's margins. See doc.go.

// peerMetric is a policy metric as the peers read it. Custom metrics are
// not simulated and are skipped.
type peerMetric struct {
	name    string
	kind    analyzer.Kind
	lambda0 float64 // 1 + margin
	logL0   float64 // log(1 + margin)
	q       float64 // quantile metrics
}

// peerMetrics reads the metrics as the engine hands them to the analyzer
// (engine.AnalyzerConfig), so the peers and Verdict judge the same ones.
func peerMetrics(pol *policy.Policy) ([]peerMetric, error) {
	cfg, _, err := engine.AnalyzerConfig(pol)
	if err != nil {
		return nil, err
	}
	var ms []peerMetric
	for _, m := range cfg.Metrics {
		if m.Kind == analyzer.Custom {
			continue
		}
		ms = append(ms, peerMetric{name: m.Name, kind: m.Kind, lambda0: 1 + m.MaxIncrease,
			logL0: math.Log1p(m.MaxIncrease), q: m.Quantile})
	}
	return ms, nil
}

// schedule walks a fixed-share rollout through the policy's analysed steps
// (all but the last, 100%) on their minimum durations and minimum requests
// per variant: the bake time of a timed rollout. The naive z-test promotes
// when it completes.
type schedule struct {
	steps []policy.Step
	i     int
	start time.Duration
	n     [2]int64
}

func (s *schedule) add(canary bool) {
	if canary {
		s.n[1]++
	} else {
		s.n[0]++
	}
}

// advance moves through the steps whose minimums are met at time at and
// reports whether the last analysed step is done.
func (s *schedule) advance(at time.Duration) bool {
	for s.i < len(s.steps) {
		st := s.steps[s.i]
		if at-s.start < st.MinDuration || s.n[0] < st.MinRequests || s.n[1] < st.MinRequests {
			return false
		}
		s.i++
		s.start = at
		s.n = [2]int64{}
	}
	return true
}

// histogram of latencies with the analyzer's log buckets.
type histogram []uint32

func newHistogram() histogram { return make(histogram, analyzer.MaxBucket-analyzer.MinBucket+1) }

func (h histogram) add(ms float64) { h[analyzer.BucketIndex(ms)-analyzer.MinBucket]++ }

func (h histogram) reset() { clear(h) }

// rankUpper returns the upper bound of the bucket holding the r-th smallest
// value (1-based).
func (h histogram) rankUpper(r int64) float64 {
	var cum int64
	for i, c := range h {
		cum += int64(c)
		if cum >= r {
			return analyzer.BucketUpper(int32(i) + analyzer.MinBucket)
		}
	}
	return analyzer.BucketUpper(analyzer.MaxBucket)
}

// above counts values in buckets entirely above x.
func (h histogram) above(x float64) int64 {
	var n int64
	for i := int(analyzer.BucketIndex(x)-analyzer.MinBucket) + 1; i < len(h); i++ {
		n += int64(h[i])
	}
	return n
}

// naiveZ re-runs fixed-sample one-sided z-tests at every look (every
// lookEvery requests), each metric at level alpha with the policy's margin,
// and rolls back at the first rejection (STATS.md §7's "naive z-test
// repeated at every look"). It promotes when the policy's bake time (the
// minimum durations and requests of its steps, at the fixed share) is over.
type naiveZ struct {
	share   float64
	zc      float64
	metrics []peerMetric
	minN    int64
	sched   schedule

	n, errs    [2]int64
	sum, sumSq [2]float64 // log latency
	hist       [2]histogram

	done bool
	res  Result
}

// naiveMinN is the per-variant sample below which the naive test does not
// look: the textbook "n >= 30" for a normal approximation.
const naiveMinN = 30

func (z *naiveZ) reset(sc *Scenario, pol *policy.Policy, metrics []peerMetric, share float64, hist *[2]histogram) {
	*z = naiveZ{
		share: share, zc: zQuantile(1 - pol.Alpha), metrics: metrics, minN: naiveMinN,
		sched: schedule{steps: pol.Steps[:max(len(pol.Steps)-1, 1)]},
	}
	for _, m := range metrics {
		if m.kind == analyzer.LatencyQuantile {
			hist[0].reset()
			hist[1].reset()
			z.hist = *hist
			break
		}
	}
}

func (z *naiveZ) observe(sc *Scenario, n int64, r *Request) {
	canary := sc.Canary(r, z.share)
	o, v := r.Base, 0
	if canary {
		o, v = r.Canary, 1
	}
	z.sched.add(canary)
	z.n[v]++
	if o.Error {
		z.errs[v]++
	}
	l := math.Log(o.LatencyMs)
	z.sum[v] += l
	z.sumSq[v] += l * l
	if z.hist[0] != nil {
		z.hist[v].add(o.LatencyMs)
	}
	if n%lookEvery != 0 {
		return
	}
	if z.n[0] >= z.minN && z.n[1] >= z.minN {
		for _, m := range z.metrics {
			if z.stat(m) > z.zc {
				z.finish(Rollback, n, m.name)
				return
			}
		}
	}
	if z.sched.advance(r.At) {
		z.finish(Promote, n, "")
	}
}

// stat is the metric's z statistic, positive when the canary looks worse
// than the margin; NaN when undefined.
func (z *naiveZ) stat(m peerMetric) float64 {
	nA, nB := float64(z.n[0]), float64(z.n[1])
	switch m.kind {
	case analyzer.Errors:
		pA, pB := float64(z.errs[0])/nA, float64(z.errs[1])/nB
		se := math.Sqrt(m.lambda0*m.lambda0*pA*(1-pA)/nA + pB*(1-pB)/nB)
		return (pB - m.lambda0*pA) / se
	case analyzer.Latency:
		mA, mB := z.sum[0]/nA, z.sum[1]/nB
		vA := (z.sumSq[0] - nA*mA*mA) / (nA - 1)
		vB := (z.sumSq[1] - nB*mB*mB) / (nB - 1)
		return (mB - mA - m.logL0) / math.Sqrt(vA/nA+vB/nB)
	case analyzer.LatencyQuantile:
		// Share of canary latencies above (1+margin) times the baseline's
		// empirical quantile, against 1-q.
		c := m.lambda0 * z.hist[0].rankUpper(int64(math.Ceil(m.q*nA)))
		p := float64(z.hist[1].above(c)) / nB
		return (p - (1 - m.q)) / math.Sqrt(m.q*(1-m.q)/nB)
	}
	return math.NaN()
}

func (z *naiveZ) finish(o Outcome, n int64, cause string) {
	z.done = true
	z.res = Result{Outcome: o, Requests: n, Cause: cause}
}

// fixedMW is a fixed-horizon test like Kayenta's judge: once, at the total
// sample size N that gives Power for the scenario's design effect, a
// one-sided Mann-Whitney U test (normal approximation, tie correction) of
// canary latency/(1+margin) against baseline latency, and a one-sided
// two-proportion z-test of the error rates with the margin, each at level
// alpha. Rollback if either rejects, promote otherwise.
type fixedMW struct {
	share  float64
	size   int64
	zc     float64
	errL0  float64 // 0 when the policy has no errors metric
	errN   string
	latL0  float64 // log(1+margin); NaN when no latency metric
	latN   string
	n, err [2]int64
	bins   *[2][]int32

	done bool
	res  Result
}

// Mann-Whitney log-latency bins: 0.1% wide, from 1e-3 ms/e to 1e7 ms.
const (
	mwBinWidth = 1e-3
	mwBinLo    = -8.0 // log(1e-3 ms) - 1, room for the margin shift
	mwBinHi    = 16.2 // log(1e7 ms) ≈ 16.12
	mwBins     = int((mwBinHi - mwBinLo) / mwBinWidth)
)

func newMWBins() *[2][]int32 { return &[2][]int32{make([]int32, mwBins), make([]int32, mwBins)} }

func (f *fixedMW) reset(pol *policy.Policy, metrics []peerMetric, share float64, size int64, bins *[2][]int32) {
	*f = fixedMW{share: share, size: size, zc: zQuantile(1 - pol.Alpha), latL0: math.NaN(), bins: bins}
	for _, m := range metrics {
		switch {
		case m.kind == analyzer.Errors && f.errN == "":
			f.errL0, f.errN = m.lambda0, m.name
		case m.kind == analyzer.Latency && f.latN == "":
			f.latL0, f.latN = m.logL0, m.name
		}
	}
	clear(bins[0])
	clear(bins[1])
}

func mwBin(logMs float64) int {
	i := int((logMs - mwBinLo) / mwBinWidth)
	return min(max(i, 0), mwBins-1)
}

func (f *fixedMW) observe(sc *Scenario, n int64, r *Request) {
	o, v := r.Base, 0
	if sc.Canary(r, f.share) {
		o, v = r.Canary, 1
	}
	f.n[v]++
	if o.Error {
		f.err[v]++
	}
	if f.latN != "" {
		l := math.Log(o.LatencyMs)
		if v == 1 {
			l -= f.latL0
		}
		f.bins[v][mwBin(l)]++
	}
	if n < f.size {
		return
	}
	f.done = true
	f.res = Result{Outcome: Promote, Requests: n}
	if f.n[0] == 0 || f.n[1] == 0 {
		return
	}
	if f.errN != "" {
		nA, nB := float64(f.n[0]), float64(f.n[1])
		pA, pB := float64(f.err[0])/nA, float64(f.err[1])/nB
		se := math.Sqrt(f.errL0*f.errL0*pA*(1-pA)/nA + pB*(1-pB)/nB)
		if (pB-f.errL0*pA)/se > f.zc {
			f.res = Result{Outcome: Rollback, Requests: n, Cause: f.errN}
			return
		}
	}
	if f.latN != "" && f.mannWhitneyZ() > f.zc {
		f.res = Result{Outcome: Rollback, Requests: n, Cause: f.latN}
	}
}

// mannWhitneyZ is the standardised U statistic counting (canary,
// baseline) pairs where the canary is larger, ties counting one half, with
// the tie-corrected variance.
func (f *fixedMW) mannWhitneyZ() float64 {
	a, b := f.bins[0], f.bins[1]
	var u, below, ties float64
	for i := range a {
		ca, cb := float64(a[i]), float64(b[i])
		if ca == 0 && cb == 0 {
			continue
		}
		u += cb * (below + ca/2)
		below += ca
		t := ca + cb
		ties += t*t*t - t
	}
	nA, nB := float64(f.n[0]), float64(f.n[1])
	n := nA + nB
	v := nA * nB / 12 * ((n + 1) - ties/(n*(n-1)))
	if !(v > 0) {
		return math.NaN()
	}
	return (u - nA*nB/2) / math.Sqrt(v)
}

// threshold is a rule like Flagger's: every interval of simulated time it
// checks the canary's error rate, mean latency and latency quantiles over
// that interval against absolute limits, the scenario's known baseline
// value times (1 + the policy's margin). A rollout rolls back after
// thresholdFails failed checks (not necessarily consecutive, like
// Flagger's failedChecks counter) and promotes after as many passing
// checks as the policy's steps' minimum durations hold intervals.
type threshold struct {
	share    float64
	interval time.Duration
	next     time.Duration
	limits   []limit
	need     int

	n, errs int64
	sumLat  float64
	lats    []float64 // canary latencies in the interval

	failed, passed int
	done           bool
	res            Result
}

// limit is one absolute check of the threshold rule.
type limit struct {
	name  string
	kind  analyzer.Kind
	q     float64
	value float64
}

// Threshold rule constants: Flagger's documented example analysis runs
// every 1m with threshold 5.
const (
	thresholdInterval = time.Minute
	thresholdFails    = 5
)

func (t *threshold) reset(pol *policy.Policy, metrics []peerMetric, ref *reference, share float64, lats []float64) {
	*t = threshold{share: share, interval: thresholdInterval, next: thresholdInterval, lats: lats[:0]}
	for _, s := range pol.Steps[:max(len(pol.Steps)-1, 1)] {
		t.need += max(int((s.MinDuration+thresholdInterval-1)/thresholdInterval), 1)
	}
	for _, m := range metrics {
		l := limit{name: m.name, kind: m.kind, q: m.q}
		switch m.kind {
		case analyzer.Errors:
			l.value = ref.errRate * m.lambda0
		case analyzer.Latency:
			l.value = ref.meanMs * m.lambda0
		case analyzer.LatencyQuantile:
			l.value = ref.quantile(m.q) * m.lambda0
		}
		t.limits = append(t.limits, l)
	}
}

func (t *threshold) observe(sc *Scenario, n int64, r *Request) {
	for r.At >= t.next && !t.done {
		t.check(n - 1)
		t.next += t.interval
	}
	if t.done || !sc.Canary(r, t.share) {
		return
	}
	t.n++
	if r.Canary.Error {
		t.errs++
	}
	t.sumLat += r.Canary.LatencyMs
	t.lats = append(t.lats, r.Canary.LatencyMs)
}

// check judges the interval that just ended, after n requests in all.
func (t *threshold) check(n int64) {
	cause := t.failing()
	t.n, t.errs, t.sumLat, t.lats = 0, 0, 0, t.lats[:0]
	if cause == "" {
		t.passed++
		if t.passed >= t.need {
			t.done, t.res = true, Result{Outcome: Promote, Requests: n}
		}
		return
	}
	t.failed++
	if t.failed >= thresholdFails {
		t.done, t.res = true, Result{Outcome: Rollback, Requests: n, Cause: cause}
	}
}

// failing returns the first limit the interval breaks ("" when it
// passes). An interval without canary requests fails, as Flagger fails a
// check whose query returns no value.
func (t *threshold) failing() string {
	if t.n == 0 {
		return "no-data"
	}
	sorted := false
	for _, l := range t.limits {
		var x float64
		switch l.kind {
		case analyzer.Errors:
			x = float64(t.errs) / float64(t.n)
		case analyzer.Latency:
			x = t.sumLat / float64(t.n)
		case analyzer.LatencyQuantile:
			if !sorted {
				slices.Sort(t.lats)
				sorted = true
			}
			x = t.lats[rank(len(t.lats), l.q)-1]
		}
		if x > l.value {
			return l.name
		}
	}
	return ""
}

// rank is the 1-based nearest rank of the q-quantile of n values.
func rank(n int, q float64) int { return min(max(int(math.Ceil(q*float64(n))), 1), n) }
