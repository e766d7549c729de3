package sim

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkStream is the cost of generating one request of the aa
// scenario (both potential outcomes), the simulator's own share of a run.
func BenchmarkStream(b *testing.B) {
	sc, err := Lookup("aa")
	if err != nil {
		b.Fatal(err)
	}
	st := sc.NewStream(rand.New(rand.NewPCG(1, 2)), 90*time.Minute)
	var r Request
	b.ReportAllocs()
	for b.Loop() {
		st.Next(&r)
	}
}

// BenchmarkRep is one replication of the aa scenario under
// testdata/sim/policy.yaml, Verdict following the steps beside the peers,
// on one worker; it reports the requests a replication simulates and the
// cost per request. `verdict simulate --reps N` costs about N times this
// on one core.
func BenchmarkRep(b *testing.B) {
	pol := simPolicy(b)
	sc, err := Lookup("aa")
	if err != nil {
		b.Fatal(err)
	}
	var requests int64
	seed := uint64(0)
	for b.Loop() {
		seed++
		rep, err := Run(context.Background(), Config{Policy: pol, Scenario: sc, Reps: 1, Seed: seed, Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		requests += rep.Results[0][0].Requests
	}
	b.ReportMetric(float64(requests)/float64(b.N), "requests/rep")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(requests), "ns/request")
}
