package analyzer

import (
	"math"
	"math/rand/v2"
)

// defaultConfig is the policy of DESIGN.md: errors, latency, p99, cpu.
func defaultConfig() Config {
	return Config{
		Alpha: 0.05, PromoteAlpha: 0.05,
		Metrics: []Metric{
			{Name: "error-rate", Kind: Errors, MaxIncrease: 0.2},
			{Name: "latency", Kind: Latency, MaxIncrease: 0.1},
			{Name: "p99", Kind: LatencyQuantile, Quantile: 0.99, MaxIncrease: 0.25},
			{Name: "cpu", Kind: Custom, MaxIncrease: 0.15},
		},
	}
}

func mustNew(t interface{ Fatalf(string, ...any) }, cfg Config) *Analyzer {
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// stream generates requests for simulations.
type stream struct {
	rng          *rand.Rand
	share        float64 // actual canary share, in (0, 1)
	pErr         [2]float64
	logMu, logSd [2]float64
	tail         float64 // canary latencies above exp(tailAt) are multiplied by tail
	tailAt       float64
	burst        int    // errors come in bursts of this many from one unit
	burstLeft    [2]int // pending burst errors per variant
	burstUnit    [2]uint64
	values       [1]float64
	srm          float64 // actual/told canary share; 0 means 1
	pareto       float64 // when > 0, latencies are Pareto with this tail index
}

func newStream(seed uint64, share float64) *stream {
	return &stream{
		rng:   rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		share: share,
		pErr:  [2]float64{0.01, 0.01},
		logMu: [2]float64{math.Log(50), math.Log(50)},
		logSd: [2]float64{1, 1},
	}
}

func (s *stream) next(o *Observation) {
	v := Baseline
	if s.rng.Float64() < s.share {
		v = Canary
	}
	*o = Observation{Variant: v, HasLatency: true, HasOutcome: true}
	if s.pareto > 0 {
		o.LatencyMs = math.Exp(s.logMu[v]) * math.Pow(1-s.rng.Float64(), -1/s.pareto)
	} else {
		o.LatencyMs = math.Exp(s.logMu[v] + s.logSd[v]*s.rng.NormFloat64())
	}
	if v == Canary && s.tail > 0 && o.LatencyMs > math.Exp(s.tailAt) {
		o.LatencyMs *= s.tail
	}
	if s.burst > 0 {
		o.Unit = s.rng.Uint64() | 1
		if s.burstLeft[v] > 0 {
			s.burstLeft[v]--
			o.Unit, o.Error = s.burstUnit[v], true
		} else if s.rng.Float64() < s.pErr[v]/float64(s.burst) {
			// Same long-run error rate, delivered in bursts from one unit.
			o.Error = true
			s.burstUnit[v], s.burstLeft[v] = o.Unit, s.burst-1
		}
	} else {
		o.Error = s.rng.Float64() < s.pErr[v]
	}
	s.values[0] = math.Exp(1 + 0.5*s.rng.NormFloat64())
	o.Values = s.values[:]
}
