package telemetry_test

import (
	"fmt"
	"math"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

func ExampleBuilder() {
	b := telemetry.NewBuilder("checkout-42", analyzer.Canary)
	b.Add(10, false)
	b.Add(10.1, false)
	b.Add(250, true)
	rec := b.Record("router-7/batch-1", time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC))
	data, err := telemetry.Encode(&rec) // the batch message to publish
	if err != nil {
		panic(err)
	}
	back, err := telemetry.Decode(data)
	if err != nil {
		panic(err)
	}
	br := back.Batch
	fmt.Printf("count %d, errors %d, buckets %v\n", br.Requests, br.Errors, br.Buckets)
	fmt.Printf("geometric mean latency %.2f ms\n", math.Exp(br.Latency.SumLog/float64(br.Latency.N)))
	// Output:
	// count 3, errors 1, buckets [{117 2} {279 1}]
	// geometric mean latency 29.34 ms
}

func ExampleDecode() {
	rec, err := telemetry.Decode([]byte(`{"rollout":"checkout-42","variant":"canary","latency_ms":12.5,"status":503}`))
	fmt.Println(rec.Rollout, rec.Variant == analyzer.Canary, rec.Single.LatencyMs, rec.Single.Error, err)

	_, err = telemetry.Decode([]byte(`{"rollout":"checkout-42","variant":"canary","latency_ms":-1}`))
	fmt.Println(err)
	// Output:
	// checkout-42 true 12.5 true <nil>
	// bad-value: latency_ms -1 is outside [0, 1e+07]
}
