package analyzer

import "math"

// BucketGamma is the ratio between consecutive histogram bucket bounds:
// bucket i holds latencies in (BucketGamma^(i-1), BucketGamma^i] ms, so any
// latency is represented by its bucket's upper bound with a relative error
// of at most 2% upwards, or 1% from the bucket's geometric middle.
const BucketGamma = 1.02

// MinBucket and MaxBucket bound the histogram: BucketIndex clamps latencies
// below about 1e-3 ms to MinBucket and above about 1e7 ms to MaxBucket.
const (
	MinBucket int32 = -348 // upper bound 1.02^-348 ≈ 1.017e-3 ms
	MaxBucket int32 = 814  // upper bound 1.02^814 ≈ 1.00e7 ms
)

// numBuckets is the length of a dense histogram.
const numBuckets = int(MaxBucket-MinBucket) + 1

var logGamma = math.Log(BucketGamma)

// bucketUppers caches BucketUpper for every bucket (read-only after init).
var bucketUppers = func() []float64 {
	u := make([]float64, numBuckets)
	for i := range u {
		u[i] = math.Pow(BucketGamma, float64(int32(i)+MinBucket))
	}
	return u
}()

// BucketIndex returns the index of the histogram bucket holding a latency
// of ms milliseconds, clamped to [MinBucket, MaxBucket]. NaN and values at
// or below zero map to MinBucket.
func BucketIndex(ms float64) int32 {
	if !(ms > 0) {
		return MinBucket
	}
	return bucketOfLog(math.Log(ms))
}

// bucketOfLog is BucketIndex of a positive value given its log (Observe
// has it already).
func bucketOfLog(logMs float64) int32 {
	// The small slack keeps BucketIndex(BucketUpper(i)) == i despite
	// rounding in Log and Pow; it moves a boundary by a relative 2e-11.
	x := math.Ceil(logMs/logGamma - 1e-9)
	switch {
	case x <= float64(MinBucket):
		return MinBucket
	case x >= float64(MaxBucket):
		return MaxBucket
	}
	return int32(x)
}

// BucketUpper returns the upper bound, in milliseconds, of bucket i
// (clamped to [MinBucket, MaxBucket]).
func BucketUpper(i int32) float64 {
	return bucketUppers[clampBucket(i)-MinBucket]
}

// bucketLower returns the lower bound of bucket i (exclusive).
func bucketLower(i int32) float64 {
	i = clampBucket(i)
	if i == MinBucket {
		return 0
	}
	return bucketUppers[i-1-MinBucket]
}

func clampBucket(i int32) int32 {
	if i < MinBucket {
		return MinBucket
	}
	if i > MaxBucket {
		return MaxBucket
	}
	return i
}

// clampMs keeps a latency inside the histogram's range, so that logs stay
// finite and the histogram and the log-moments see the same value.
func clampMs(ms float64) float64 {
	const lo, hi = 1e-3, 1e7
	if ms < lo {
		return lo
	}
	if ms > hi {
		return hi
	}
	return ms
}

// histChunk is the granularity of a histogram's window: it grows by whole
// chunks of buckets aligned on MinBucket, so the window depends only on
// the lowest and highest bucket ever counted, not on the order of the
// counts (a restored or batch-fed histogram equals the original).
const histChunk = 64

// hist is a log-bucketed histogram. It keeps counts only for a window of
// buckets that covers every bucket counted so far: real latencies occupy
// a few hundred of the numBuckets, and at 10,000 rollouts the dense
// array was most of a rollout's memory. The zero value is empty.
//
// Single counts (Observe's) wait in pend and are added to counts
// histPending at a time, by settle: with many rollouts a histogram is
// rarely in cache, and misses taken together overlap where one per event
// is waited for in turn (see Analyzer.Prefetch). Everything that reads
// counts settles first; n is always whole.
type hist struct {
	counts []uint64 // counts[j] is bucket lo+j; outside the window, 0
	lo     int32
	npend  int32 // buckets in pend
	n      int64 // every count, pending ones included
	pend   [histPending]int16
}

// histPending is how many single counts a histogram holds back.
const histPending = 8

func (h *hist) add(i int32, c int64) {
	if c <= 0 {
		return
	}
	i = clampBucket(i)
	h.n += c
	if c == 1 {
		h.pend[h.npend] = int16(i)
		if h.npend++; h.npend == histPending {
			h.settle()
		}
		return
	}
	h.counts[h.index(i)] += uint64(c)
}

// settle adds the pending single counts to counts.
func (h *hist) settle() {
	for _, i := range h.pend[:h.npend] {
		h.counts[h.index(int32(i))]++
	}
	h.pend, h.npend = [histPending]int16{}, 0 // a settled hist has one representation
}

// index returns the index in counts of bucket i (within [MinBucket,
// MaxBucket]), growing the window to cover it.
func (h *hist) index(i int32) uint {
	if j := uint(i - h.lo); j < uint(len(h.counts)) {
		return j
	}
	return h.grow(i)
}

// grow widens the window to cover bucket i and returns its index: the
// only allocation, at most numBuckets/histChunk times in a histogram's
// life.
func (h *hist) grow(i int32) uint {
	lo, hi := i, i
	if len(h.counts) > 0 {
		lo, hi = min(lo, h.lo), max(hi, h.lo+int32(len(h.counts))-1)
	}
	lo = MinBucket + (lo-MinBucket)/histChunk*histChunk
	hi = min(MinBucket+((hi-MinBucket)/histChunk+1)*histChunk-1, MaxBucket)
	c := make([]uint64, hi-lo+1)
	if len(h.counts) > 0 {
		copy(c[h.lo-lo:], h.counts)
	}
	h.counts, h.lo = c, lo
	return uint(i - lo)
}

// rankBucket returns the bucket holding the r-th smallest value (1-based,
// clamped to [1, n]). The histogram must not be empty.
func (h *hist) rankBucket(r int64) int32 {
	h.settle()
	if r < 1 {
		r = 1
	}
	if r > h.n {
		r = h.n
	}
	var cum uint64
	for j, c := range h.counts {
		cum += c
		if cum >= uint64(r) {
			return int32(j) + h.lo
		}
	}
	return MaxBucket
}

// quantile returns the upper bound of the bucket holding the empirical
// q-quantile (the ceil(q*n)-th order statistic), or 0 when empty.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	return BucketUpper(h.rankBucket(int64(math.Ceil(q * float64(h.n)))))
}
