package analyzer

import (
	"bytes"
	"os"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// TestHistMatchesDense checks the windowed histogram against a dense
// array: the same order statistics for every rank, and the same window
// whatever the order of the counts.
func TestHistMatchesDense(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		type add struct {
			i int32
			c int64
		}
		adds := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) add {
			return add{rapid.Int32Range(MinBucket-5, MaxBucket+5).Draw(t, "i"), rapid.Int64Range(-1, 3).Draw(t, "c")}
		}), 1, 50).Draw(t, "adds")
		dense := make([]int64, numBuckets)
		var h, rev hist
		for k, a := range adds {
			h.add(a.i, a.c)
			if a.c > 0 {
				dense[clampBucket(a.i)-MinBucket] += a.c
			}
			b := adds[len(adds)-1-k]
			rev.add(b.i, b.c)
		}
		h.settle() // pending counts are in no particular order
		rev.settle()
		if !reflect.DeepEqual(h, rev) {
			t.Fatalf("window depends on order: %d+%d, reversed %d+%d", h.lo, len(h.counts), rev.lo, len(rev.counts))
		}
		var cum, n int64
		for _, c := range dense {
			n += c
		}
		if h.n != n {
			t.Fatalf("n = %d, want %d", h.n, n)
		}
		r := int64(1)
		for j, c := range dense {
			cum += c
			for ; r <= cum; r++ {
				if got, want := h.rankBucket(r), int32(j)+MinBucket; got != want {
					t.Fatalf("rankBucket(%d) = %d, want %d", r, got, want)
				}
			}
		}
	})
}

// TestCheckpointV2 restores a checkpoint written before the histograms
// became windowed (testdata/checkpoint-v2.bin, by aec06a4 from the calls
// below): the same state, encoded to the same bytes, as the calls
// replayed now.
func TestCheckpointV2(t *testing.T) {
	want, err := os.ReadFile("testdata/checkpoint-v2.bin")
	if err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, defaultConfig())
	a.StartStep(5)
	feed(a, newStream(7, 0.05), 3000)
	a.StartStep(20)
	feed(a, newStream(8, 0.2), 20000)
	a.Observe(&Observation{Variant: Canary, HasLatency: true, LatencyMs: 2e8})
	a.Observe(&Observation{Variant: Baseline, HasLatency: true, LatencyMs: 1e-9})
	if got, _ := a.MarshalBinary(); !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary after the same calls differs from the v2 checkpoint")
	}
	r := mustNew(t, defaultConfig())
	if err := r.UnmarshalBinary(want); err != nil {
		t.Fatalf("UnmarshalBinary(v2) = %v", err)
	}
	if got, _ := r.MarshalBinary(); !bytes.Equal(got, want) {
		t.Fatalf("restored v2 checkpoint re-encodes differently")
	}
	for v := range a.hist {
		a.hist[v].settle()
	}
	if !reflect.DeepEqual(r.hist, a.hist) {
		t.Fatalf("restored histograms differ")
	}
	st := Step{Weight: 20, Elapsed: 1e12, MinDuration: 1, MaxDuration: 2e12, MinRequests: 100}
	if got, want := r.Decide(st), a.Decide(st); !reflect.DeepEqual(got, want) {
		t.Fatalf("Decide after restore = %+v, want %+v", got, want)
	}
}
