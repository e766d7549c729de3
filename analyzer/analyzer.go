package analyzer

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/verdict-dev/verdict/internal/prefetch"
)

// ErrInvalidConfig is wrapped by every error New returns.
var ErrInvalidConfig = errors.New("invalid analyzer config")

// AlphaSRM is the level of the sample-ratio-mismatch test (STATS §6): a step
// whose request counts give an e-value of at least 1/AlphaSRM against the
// nominal weight is flagged and cannot be promoted.
const AlphaSRM = 0.001

// Tuning constants; doc.go explains each choice.
const (
	// rhoPrior is the pseudo-count of requests at the nominal weight that
	// stabilises a step's empirical canary share while the step is young.
	rhoPrior = 100.0
	// srmK is the concentration of the SRM test's Beta mixture.
	srmK = 1000.0
	// dedupSlots is the size of each variant's table of recently failing
	// units; dedupWindow is how many requests (both variants, a proxy for
	// time) an entry stays "recent".
	dedupSlots  = 256
	dedupWindow = 1024
	// maxRatio caps reported ratios and confidence bounds ("unbounded").
	maxRatio = 1e6
)

// Analyzer compares a canary with a baseline on a fixed set of metrics. It
// is not safe for concurrent use; one goroutine owns it.
type Analyzer struct {
	cfg     Config
	metrics []metricState
	quants  []int // indices into metrics of LatencyQuantile metrics
	customs []int // indices into metrics of Custom metrics, in Values order

	// Current step.
	weight  float64  // nominal canary share in percent; 0 until StartStep
	stepReq [2]int64 // all requests
	cur     stepCounts
	srmReq  [2]int64 // requests since the SRM test (re)started
	srmLump [2]int64 // largest batch of each variant so far (the router's batch size)
	srmLogE float64  // running max of the step's SRM log e-value (reported)
	srmNow  float64  // the SRM log e-value at the last Decide

	steps []stepCounts // completed steps with outcome data

	totOut [2]int64 // requests with an outcome, whole rollout
	totErr [2]int64 // counted (distinct-unit) errors, whole rollout

	seq uint64 // requests seen by Observe, the dedup clock

	lat    [2]welford   // log latency, whole rollout
	custom [][2]welford // log values per Custom metric
	hist   [2]hist      // latency histograms; empty when unused

	evbuf   []evidence // Decide's scratch, one per metric; not state
	evalCur stepCounts // Decide's scratch: the current step at the looked-at weight
	logSumW float64    // log of the metrics' weights summed, in order

	// Last: 8 KiB that an error touches one slot of, after the fields
	// every Observe touches, which then share a few cache lines.
	recent [2][dedupSlots]unitSlot
}

// stepCounts are one step's error-test counts.
type stepCounts struct {
	out    [2]int64 // requests with an outcome
	err    [2]int64 // counted errors
	weight float64  // nominal weight in percent
}

type unitSlot struct {
	unit uint64
	seq  uint64
}

// metricState is a metric's configuration, derived constants and running
// state.
type metricState struct {
	Metric
	weight  float64 // rollback average weight, > 0
	logW    float64 // log(weight)
	lambda0 float64 // ratio margin 1+m (errors, quantile)
	sign    float64 // +1 when higher is worse, -1 when lower is worse
	delta0  float64 // log-scale null boundary, bad-is-positive
	tau     float64 // normal-mixture scale
	slot    int     // index into custom (Custom) or quantile state
	q       quantState
	maxLogE float64 // running max of the rollback log e-value

	// Errors: the completed steps a.steps[:errDone] summed at lambda0 (a
	// cache, derived from state; see errLogE0).
	errDone          int
	errRoll, errProm float64
}

// New validates cfg and returns an Analyzer with all its memory allocated
// but the latency histograms' (see Observe).
func New(cfg Config) (*Analyzer, error) {
	a := new(Analyzer)
	if err := a.Init(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// Init makes a what New(cfg) returns, in memory the caller chose: the
// engine keeps each rollout's analyzer in one allocation with the rest
// of the rollout's state, so that an event finds all of it on a page or
// two (see package engine's owner). Any earlier state of a is gone. On
// an error a is left as it was.
func (a *Analyzer) Init(cfg Config) error {
	if err := validate(cfg); err != nil {
		return err
	}
	*a = Analyzer{cfg: cfg}
	a.cfg.Metrics = append([]Metric(nil), cfg.Metrics...)
	a.metrics = make([]metricState, len(cfg.Metrics))
	sumW := 0.0
	for i, m := range cfg.Metrics {
		ms := metricState{Metric: m, weight: m.Weight, lambda0: 1 + m.MaxIncrease, sign: 1}
		if ms.weight == 0 {
			ms.weight = 1
		}
		ms.logW = math.Log(ms.weight)
		sumW += ms.weight
		ms.delta0 = math.Log1p(m.MaxIncrease)
		switch m.Kind {
		case Custom:
			if m.Direction == Decrease {
				ms.sign = -1
				ms.delta0 = -math.Log1p(-m.MaxIncrease)
			}
			ms.slot = len(a.customs)
			a.customs = append(a.customs, i)
		case LatencyQuantile:
			ms.slot = len(a.quants)
			ms.q = newQuantState(m.Quantile)
			a.quants = append(a.quants, i)
		}
		ms.tau = gaussTau(ms.delta0)
		a.metrics[i] = ms
	}
	a.logSumW = math.Log(sumW)
	a.custom = make([][2]welford, len(a.customs))
	return nil
}

func validate(cfg Config) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if !(cfg.Alpha > 0 && cfg.Alpha < 0.5) {
		return bad("alpha %v not in (0, 0.5)", cfg.Alpha)
	}
	if !(cfg.PromoteAlpha > 0 && cfg.PromoteAlpha < 0.5) {
		return bad("promoteAlpha %v not in (0, 0.5)", cfg.PromoteAlpha)
	}
	if len(cfg.Metrics) == 0 {
		return bad("no metrics")
	}
	seen := make(map[string]bool, len(cfg.Metrics))
	for _, m := range cfg.Metrics {
		if m.Name == "" {
			return bad("metric with an empty name")
		}
		if seen[m.Name] {
			return bad("metric %q: duplicate name", m.Name)
		}
		seen[m.Name] = true
		if !(m.MaxIncrease > 0) || math.IsInf(m.MaxIncrease, 0) {
			return bad("metric %q: maxIncrease %v must be positive and finite", m.Name, m.MaxIncrease)
		}
		if !(m.Weight >= 0) || math.IsInf(m.Weight, 0) {
			return bad("metric %q: weight %v must be non-negative and finite", m.Name, m.Weight)
		}
		switch m.Kind {
		case Errors, Latency:
		case LatencyQuantile:
			if !(m.Quantile > 0 && m.Quantile < 1) {
				return bad("metric %q: quantile %v not in (0, 1)", m.Name, m.Quantile)
			}
		case Custom:
			switch m.Direction {
			case Increase:
			case Decrease:
				if m.MaxIncrease >= 1 {
					return bad("metric %q: a decrease margin %v must be below 1", m.Name, m.MaxIncrease)
				}
			default:
				return bad("metric %q: unknown direction %d", m.Name, m.Direction)
			}
		default:
			return bad("metric %q: unknown kind %d", m.Name, m.Kind)
		}
	}
	return nil
}

// StartStep begins a new traffic step at nominal canary share weight
// percent. The error test and the SRM test restart; the completed step's
// error evidence is kept and multiplied with the new step's.
func (a *Analyzer) StartStep(weight float64) {
	if a.cur.out[0]+a.cur.out[1] > 0 {
		a.steps = append(a.steps, a.cur)
	}
	if !validWeight(weight) {
		weight = 0 // unknown: no prior share, no SRM test
	}
	a.weight = weight
	a.cur = stepCounts{weight: weight}
	a.stepReq = [2]int64{}
	a.RestartSRM()
}

// RestartSRM restarts the step's sample-ratio-mismatch test: requests seen
// so far no longer count towards it. The engine calls it once the routers
// have had time to apply a new weight, so requests routed at the old
// weight during the switch are not taken for a mismatch.
func (a *Analyzer) RestartSRM() {
	a.srmReq = [2]int64{}
	a.srmLogE, a.srmNow = 0, 0
}

// Requests returns the number of requests of each variant in the current
// step.
func (a *Analyzer) Requests() (baseline, canary int64) {
	return a.stepReq[Baseline], a.stepReq[Canary]
}

// Observe adds one request. It runs in constant time and does not allocate,
// except when a latency falls outside the buckets its histogram covers so
// far (which then grows by a chunk: a few times in an analyzer's life).
// Observations of an unknown variant are ignored; so are latencies that
// are NaN or negative and custom values that are not positive and finite.
func (a *Analyzer) Observe(o *Observation) {
	if o.Variant > Canary {
		return
	}
	v := o.Variant
	a.seq++
	a.stepReq[v]++
	a.srmReq[v]++
	if o.HasOutcome {
		a.cur.out[v]++
		a.totOut[v]++
		if o.Error && a.firstFailure(v, o.Unit) {
			a.cur.err[v]++
			a.totErr[v]++
		}
	}
	if o.HasLatency && o.LatencyMs >= 0 && !math.IsInf(o.LatencyMs, 1) {
		ms := clampMs(o.LatencyMs)
		l := math.Log(ms)
		a.lat[v].add(l)
		if len(a.quants) > 0 {
			a.hist[v].add(bucketOfLog(l), 1)
			for _, i := range a.quants {
				a.metrics[i].q.observe(v, ms, &a.hist[Baseline], a.metrics[i].lambda0, a.cfg.Alpha)
			}
		}
	}
	for j := range a.customs {
		if j >= len(o.Values) {
			break
		}
		if x := o.Values[j]; x > 0 && !math.IsInf(x, 1) {
			a.custom[j][v].add(math.Log(x))
		}
	}
}

// Prefetch hints that Observe is coming: it asks the processor to start
// loading the fields every Observe touches (all but the unit table), so
// that a caller applying the events of many analyzers in turn can overlap
// their cache misses (see package internal/prefetch). It changes nothing.
func (a *Analyzer) Prefetch() {
	prefetch.Range(unsafe.Pointer(a), PrefetchSize)
}

// PrefetchSize is how much of an Analyzer, from its start, Prefetch asks
// for: the fields every Observe touches (about 540 bytes).
const PrefetchSize = unsafe.Offsetof(Analyzer{}.recent)

// firstFailure records a failure of unit in variant v and reports whether
// it counts: a unit that already failed in the same variant within the
// last dedupWindow requests is not counted again (STATS §1, bursts).
func (a *Analyzer) firstFailure(v Variant, unit uint64) bool {
	if unit == 0 {
		return true
	}
	s := &a.recent[v][(unit*0x9E3779B97F4A7C15)>>(64-8)]
	dup := s.unit == unit && a.seq-s.seq <= dedupWindow
	s.unit, s.seq = unit, a.seq
	return !dup
}

// ObserveBatch adds a batch of requests of one variant in
// O(len(b.Buckets)+len(b.Values)). Its request count is the larger of
// b.Requests and b.Latency.N. Batches carry no units, so their errors are
// counted as given.
func (a *Analyzer) ObserveBatch(b *Batch) {
	if b.Variant > Canary {
		return
	}
	v := b.Variant
	n := max(b.Requests, b.Latency.N, 0)
	a.seq += uint64(n)
	a.stepReq[v] += n
	a.srmReq[v] += n
	a.srmLump[v] = max(a.srmLump[v], n)
	if b.Requests > 0 {
		e := min(max(b.Errors, 0), b.Requests)
		a.cur.out[v] += b.Requests
		a.totOut[v] += b.Requests
		a.cur.err[v] += e
		a.totErr[v] += e
	}
	a.lat[v].merge(b.Latency)
	if len(a.quants) > 0 {
		for _, bk := range b.Buckets {
			a.hist[v].add(bk.Index, bk.Count)
		}
		for _, i := range a.quants {
			a.metrics[i].q.observeBatch(v, b.Buckets, &a.hist[Baseline], a.metrics[i].lambda0, a.cfg.Alpha)
		}
	}
	for j := range a.customs {
		if j < len(b.Values) {
			a.custom[j][v].merge(b.Values[j])
		}
	}
}

// String returns "hold", "promote" or "rollback".
func (x Action) String() string {
	switch x {
	case Hold:
		return "hold"
	case Promote:
		return "promote"
	case Rollback:
		return "rollback"
	}
	return fmt.Sprintf("Action(%d)", uint8(x))
}
