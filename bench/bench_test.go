package bench

import (
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// The single events must take telemetry's fast path and stay about 200
// bytes, or the ingest figures measure something else.
func TestSingleEvent(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC)
	for i := range 1000 {
		data := SingleEvent(nil, "bench-00001", i, at)
		if n := len(data); n < 180 || n > 220 {
			t.Fatalf("SingleEvent(%d) is %d bytes, want about 200: %s", i, n, data)
		}
		r, err := telemetry.Decode(data)
		if err != nil {
			t.Fatalf("Decode(SingleEvent(%d)) = %v\n%s", i, err, data)
		}
		if got, want := r.Variant, analyzer.Variant(i&1); got != want {
			t.Errorf("SingleEvent(%d) variant %v, want %v", i, got, want)
		}
	}
}

func TestBatchEvent(t *testing.T) {
	data, err := BatchEvent("bench-00001", analyzer.Canary, 1000, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	r, err := telemetry.Decode(data)
	if err != nil {
		t.Fatalf("Decode(BatchEvent) = %v", err)
	}
	if r.Batch == nil || r.Batch.Requests != 1000 {
		t.Errorf("BatchEvent decodes to %+v, want a batch of 1000 requests", r.Batch)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, tc := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {1, 5}, {0, 1}, {0.2, 1}, {0.21, 2}} {
		if got := Percentile(xs, tc.q); got != tc.want {
			t.Errorf("Percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}
