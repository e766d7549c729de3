package telemetry

import (
	"math"
	"slices"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

// Builder accumulates the requests of one rollout and variant into a batch
// record. Each Add costs O(1); Record costs O(buckets). The zero value is
// not usable; call NewBuilder. A Builder is not safe for concurrent use.
type Builder struct {
	rollout string
	variant analyzer.Variant
	count   int64
	errors  int64
	latency analyzer.Summary
	buckets map[int32]int64
	values  map[string]analyzer.Summary
}

// NewBuilder returns an empty Builder for the given rollout and variant.
func NewBuilder(rollout string, v analyzer.Variant) *Builder {
	return &Builder{rollout: rollout, variant: v, buckets: make(map[int32]int64)}
}

// Add records one request with its latency and outcome. Latencies are
// clamped to [MinLatencyMs, MaxLatencyMs]; NaN is recorded as an outcome
// without latency.
func (b *Builder) Add(latencyMs float64, failed bool) {
	b.AddOutcome(failed)
	if math.IsNaN(latencyMs) {
		return
	}
	ms := min(max(latencyMs, MinLatencyMs), MaxLatencyMs)
	l := math.Log(ms)
	b.latency.N++
	b.latency.SumLog += l
	b.latency.SumLogSq += l * l
	b.buckets[analyzer.BucketIndex(ms)]++
}

// AddOutcome records one request whose latency is unknown.
func (b *Builder) AddOutcome(failed bool) {
	b.count++
	if failed {
		b.errors++
	}
}

// AddValue records a custom value of the request just added. Values that
// are not positive and finite are ignored, as Decode would reject them.
func (b *Builder) AddValue(name string, v float64) {
	if !(v > 0 && v <= MaxValue) {
		return
	}
	if b.values == nil {
		b.values = make(map[string]analyzer.Summary)
	}
	s := b.values[name]
	l := math.Log(v)
	s.N++
	s.SumLog += l
	s.SumLogSq += l * l
	b.values[name] = s
}

// Count is the number of requests added since the last Reset.
func (b *Builder) Count() int64 { return b.count }

// Record returns the batch record of the requests added so far, with the
// given idempotency id and time (either may be zero). Pass it to Encode.
func (b *Builder) Record(id string, t time.Time) Record {
	br := &BatchRecord{Batch: analyzer.Batch{
		Variant:  b.variant,
		Requests: b.count,
		Errors:   b.errors,
		Latency:  b.latency,
	}}
	if len(b.buckets) > 0 {
		br.Buckets = make([]analyzer.Bucket, 0, len(b.buckets))
		for i, c := range b.buckets {
			br.Buckets = append(br.Buckets, analyzer.Bucket{Index: i, Count: c})
		}
		slices.SortFunc(br.Buckets, func(x, y analyzer.Bucket) int { return int(x.Index) - int(y.Index) })
	}
	if len(b.values) > 0 {
		br.Values = make(map[string]analyzer.Summary, len(b.values))
		for k, v := range b.values {
			br.Values[k] = v
		}
	}
	if !t.IsZero() {
		t = t.UTC()
	}
	return Record{Rollout: b.rollout, Variant: b.variant, Time: t, ID: id, Batch: br}
}

// Reset empties the Builder, keeping its rollout and variant.
func (b *Builder) Reset() {
	b.count, b.errors = 0, 0
	b.latency = analyzer.Summary{}
	clear(b.buckets)
	clear(b.values)
}
