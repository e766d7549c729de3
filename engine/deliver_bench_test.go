package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// benchQuantile adds the latency-quantile metric of verdict bench's policy.
const benchQuantile = `  - name: p99
    type: latency-quantile
    quantile: 0.99
    maxIncrease: 25%
`

// BenchmarkDeliver is ingest's handler without NATS and decoding: per
// event, the Rollout lookup of an id that is not the engine's string (as
// decoded), and Deliver of batches of 700 single events, round robin over
// the rollouts, with bench.SingleEvent's latencies and errors. ns/op is per
// event; the owners' budgeted checkpoints (to memory) run meanwhile.
func BenchmarkDeliver(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			pol := mustPolicy(b, "hold", benchQuantile)
			e := New(Options{Store: newMemStore(), Now: func() time.Time { return t0 }})
			e.SetPolicies(policy.Set{pol.Name: pol})
			ids, decoded := make([]string, n), make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("rollout-%05d", i)
				decoded[i] = strings.Clone(ids[i])
				e.SetSpec(Spec{Rollout: ids[i], Policy: "test"}, false)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.Run(ctx) }()
			defer func() { cancel(); <-done }()
			for {
				e.mu.Lock()
				started := len(e.owners)
				e.mu.Unlock()
				if started == n {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			msgs := make([]ingest.Message, 700)
			var k int
			var inDeliver time.Duration
			deliver := func(events int) {
				for events > 0 {
					m := msgs[:min(events, len(msgs))]
					for j := range m {
						v := analyzer.Variant(k / n & 1)
						r := k / n >> 1
						id, route, ok := e.Rollout(decoded[k%n])
						if !ok {
							b.Fatal("unknown rollout")
						}
						m[j] = ingest.Message{Seq: uint64(k + 1), Route: route, Record: telemetry.Record{
							Rollout: id, Variant: v, Time: t0,
							Single: analyzer.Observation{Variant: v, HasLatency: true, HasOutcome: true,
								LatencyMs: 5 + float64(r%97)*0.75, Error: r%100 == 7},
						}}
						k++
					}
					t := time.Now()
					if err := e.Deliver(ctx, m); err != nil {
						b.Fatal(err)
					}
					inDeliver += time.Since(t)
					events -= len(m)
				}
			}
			deliver(20 * n) // every owner restored, its histograms grown
			b.ResetTimer()
			inDeliver = 0
			deliver(b.N)
			// Deliver alone (the rest of ns/op is the lookup, building
			// the messages, and the owners' checkpoints meanwhile).
			b.ReportMetric(float64(inDeliver.Nanoseconds())/float64(b.N), "deliver-ns/op")
		})
	}
}
