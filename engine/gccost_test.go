package engine

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// TestGCCost measures what 10,000 rollouts with data cost each garbage
// collection: the GC's CPU time per forced cycle, the heap, its objects
// and the goroutines. A measurement, not a check: it runs only with
// VERDICT_MEASURE_GC=1 (go test -run TestGCCost -v ./engine).
func TestGCCost(t *testing.T) {
	if os.Getenv("VERDICT_MEASURE_GC") == "" {
		t.Skip()
	}
	measure := func(label string) {
		gcCPU := func() float64 {
			s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
			metrics.Read(s)
			return s[0].Value.Float64()
		}
		const cycles = 5
		runtime.GC()
		c0, w0 := gcCPU(), time.Now()
		for range cycles {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("%s: GC CPU %.1f ms and wall %.1f ms a cycle; heap %d MiB in %d objects; %d goroutines",
			label, (gcCPU()-c0)*1000/cycles, float64(time.Since(w0).Microseconds())/1000/cycles,
			ms.HeapAlloc>>20, ms.HeapObjects, runtime.NumGoroutine())
	}
	measure("before")
	const n = 10000
	pol := mustPolicy(t, "hold", benchQuantile)
	e := New(Options{Store: newMemStore(), Now: func() time.Time { return t0 }})
	e.SetPolicies(policy.Set{pol.Name: pol})
	for i := range n {
		e.SetSpec(Spec{Rollout: fmt.Sprintf("rollout-%05d", i), Policy: "test"}, false)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitOwners(t, e, n)
	// Every rollout gets events, as in verdict bench: its histograms grow.
	msgs := make([]ingest.Message, 700)
	for k := 0; k < 40*len(msgs); k++ {
		v := analyzer.Variant(k / n & 1)
		id, route, _ := e.Rollout(fmt.Sprintf("rollout-%05d", k%n))
		msgs[k%len(msgs)] = ingest.Message{Seq: uint64(k + 1), Route: route, Record: telemetry.Record{
			Rollout: id, Variant: v, Time: t0,
			Single: analyzer.Observation{Variant: v, HasLatency: true, HasOutcome: true, LatencyMs: 5 + float64(k%97)*0.75},
		}}
		if k%len(msgs) == len(msgs)-1 {
			if err := e.Deliver(ctx, msgs); err != nil {
				t.Fatal(err)
			}
		}
	}
	measure(fmt.Sprintf("%d rollouts", n))
}
