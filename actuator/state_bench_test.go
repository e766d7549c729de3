package actuator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/bench"
	"github.com/verdict-dev/verdict/internal/natstest"
)

// BenchmarkSaveState writes checkpoints the size of a busy rollout's
// (2,346 bytes, BenchmarkMarshalState's) into the state bucket, round
// robin over 1 or 10,000 rollouts, one at a time as an owner does.
// cpu-µs/op is the process's CPU time per checkpoint, the embedded
// server's included: what the engine's checkpoints cost besides their
// encoding.
func BenchmarkSaveState(b *testing.B) {
	for _, n := range []int{1, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			_, nc := natstest.Start(b, nil)
			js, err := jetstream.New(nc)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := actuator.Setup(ctx, js, actuator.Config{}); err != nil {
				b.Fatal(err)
			}
			a, err := actuator.New(js, actuator.Config{})
			if err != nil {
				b.Fatal(err)
			}
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("rollout-%05d", i)
			}
			data := make([]byte, 2346)
			for i := range data {
				data[i] = 'a' + byte(i%26)
			}
			for _, id := range ids { // every key exists, as in steady state
				if err := a.SaveState(ctx, id, data); err != nil {
					b.Fatal(err)
				}
			}
			c0 := bench.ProcessCPU()
			b.ResetTimer()
			for i := range b.N {
				if err := a.SaveState(ctx, ids[i%n], data); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((bench.ProcessCPU()-c0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}
