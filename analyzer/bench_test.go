package analyzer

import (
	"testing"
	"time"
)

func BenchmarkObserve(b *testing.B) {
	a := mustNew(b, defaultConfig())
	a.StartStep(5)
	s := newStream(1, 0.05)
	obs := make([]Observation, 4096)
	for i := range obs {
		s.next(&obs[i])
		obs[i].Values = append([]float64(nil), obs[i].Values...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		a.Observe(&obs[i&4095])
	}
}

func BenchmarkObserveBatch(b *testing.B) {
	a := mustNew(b, defaultConfig())
	a.StartStep(5)
	bt := &Batch{Variant: Canary, Requests: 1000, Errors: 10,
		Latency: Summary{N: 1000, SumLog: 3900, SumLogSq: 16000},
		Values:  []Summary{{N: 1000, SumLog: 1000, SumLogSq: 1250}}}
	for i := int32(150); i < 250; i++ {
		bt.Buckets = append(bt.Buckets, Bucket{Index: i, Count: 10})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		bt.Variant = Variant(i & 1)
		a.ObserveBatch(bt)
	}
}

// decideState is an analyzer after 50,000 requests at a 5% share, the
// state BenchmarkDecide and BenchmarkCheck look at.
func decideState(b *testing.B) (*Analyzer, Step) {
	a := mustNew(b, defaultConfig())
	a.StartStep(5)
	s := newStream(2, 0.05)
	var o Observation
	for range 50000 {
		s.next(&o)
		a.Observe(&o)
	}
	return a, Step{Weight: 5, Elapsed: time.Minute, MinDuration: time.Minute, MaxDuration: time.Hour, MinRequests: 100}
}

// BenchmarkDecide is a look that reports: the verdict with its evidence,
// confidence intervals and reason.
func BenchmarkDecide(b *testing.B) {
	a, st := decideState(b)
	b.ReportAllocs()
	for b.Loop() {
		a.Decide(st)
	}
}

// BenchmarkCheck is a look that decides without reporting, as the state
// machine makes at most looks (every 100 requests).
func BenchmarkCheck(b *testing.B) {
	a, st := decideState(b)
	b.ReportAllocs()
	for b.Loop() {
		a.Check(st)
	}
}
