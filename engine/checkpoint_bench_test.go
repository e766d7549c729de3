package engine

import (
	"testing"

	"github.com/verdict-dev/verdict/analyzer"
)

// BenchmarkMarshalState is one checkpoint's encoding (MarshalState) of a
// rollout that has seen 20,000 of BenchmarkDeliver's events: at 10,000
// rollouts the engine writes up to MaxCheckpointRate (1,000) of these a
// second. bytes is the checkpoint's size.
func BenchmarkMarshalState(b *testing.B) {
	pol := mustPolicy(b, "hold", benchQuantile)
	m, err := NewMachine(Spec{Rollout: "rollout-00001", Policy: pol.Name}, pol)
	if err != nil {
		b.Fatal(err)
	}
	m.Start(t0)
	for k := range 20000 {
		v := analyzer.Variant(k & 1)
		r := k >> 1
		m.Observe(t0, &analyzer.Observation{Variant: v, HasLatency: true, HasOutcome: true,
			LatencyMs: 5 + float64(r%97)*0.75, Error: r%100 == 7, Unit: uint64(r%1000 + 1)})
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		data, err := m.MarshalState(uint64(20000))
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size), "bytes")
}
