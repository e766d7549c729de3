package sim

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// reference holds a scenario's "known" baseline values, what a Flagger
// user would write into absolute thresholds: the error rate, the mean
// latency and the latency quantiles of the baseline, measured once on
// referenceN requests with a fixed seed (independent of the run's seed)
// and kept for the life of the process.
type reference struct {
	errRate float64
	meanMs  float64
	sorted  []float64 // baseline latencies, sorted
}

const referenceN = 1 << 20

type referenceKey struct {
	sc  Scenario
	day time.Duration
}

var references sync.Map // referenceKey -> *reference

// referenceFor returns the scenario's reference values, computing them on
// first use.
func referenceFor(sc *Scenario, day time.Duration) *reference {
	key := referenceKey{*sc, day}
	if r, ok := references.Load(key); ok {
		return r.(*reference)
	}
	r, _ := references.LoadOrStore(key, newReference(sc, day))
	return r.(*reference)
}

func newReference(sc *Scenario, day time.Duration) *reference {
	st := sc.NewStream(rand.New(rand.NewPCG(0x5eed, 0x5eed)), day)
	ref := &reference{sorted: make([]float64, referenceN)}
	var r Request
	var errs int
	var sum float64
	for i := range referenceN {
		st.Next(&r)
		if r.Base.Error {
			errs++
		}
		sum += r.Base.LatencyMs
		ref.sorted[i] = r.Base.LatencyMs
	}
	slices.Sort(ref.sorted)
	ref.errRate = float64(errs) / referenceN
	ref.meanMs = sum / referenceN
	return ref
}

// quantile is the baseline's nearest-rank q-quantile.
func (r *reference) quantile(q float64) float64 { return r.sorted[rank(len(r.sorted), q)-1] }
