package analyzer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
)

// Checkpoint format: a magic, a version, a fingerprint of the metric
// configuration, then the state in a fixed order (little-endian fixed
// width for floats, varints for counts; histograms and unit tables sparse,
// a histogram's buckets numbered from MinBucket).

const codecVersion = 2

var codecMagic = [4]byte{'V', 'R', 'D', 'A'}

// ErrCheckpoint is wrapped by UnmarshalBinary's errors.
var ErrCheckpoint = errors.New("bad analyzer checkpoint")

// MarshalBinary encodes the analyzer's state (not its configuration) for a
// checkpoint. It implements encoding.BinaryMarshaler.
func (a *Analyzer) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 1024)
	b = append(b, codecMagic[:]...)
	b = append(b, codecVersion)
	b = binary.LittleEndian.AppendUint64(b, a.fingerprint())
	b = appendF(b, a.weight)
	b = appendI(b, a.stepReq[0], a.stepReq[1])
	b = appendStep(b, &a.cur)
	b = appendI(b, a.srmReq[0], a.srmReq[1], a.srmLump[0], a.srmLump[1])
	b = appendF(b, a.srmLogE, a.srmNow)
	b = binary.AppendUvarint(b, uint64(len(a.steps)))
	for i := range a.steps {
		b = appendStep(b, &a.steps[i])
	}
	b = appendI(b, a.totOut[0], a.totOut[1], a.totErr[0], a.totErr[1])
	b = binary.AppendUvarint(b, a.seq)
	for v := range a.recent {
		var n uint64
		for _, s := range a.recent[v] {
			if s != (unitSlot{}) {
				n++
			}
		}
		b = binary.AppendUvarint(b, n)
		for j, s := range a.recent[v] {
			if s != (unitSlot{}) {
				b = binary.AppendUvarint(b, uint64(j))
				b = binary.LittleEndian.AppendUint64(b, s.unit)
				b = binary.AppendUvarint(b, s.seq)
			}
		}
	}
	for v := range a.lat {
		b = appendW(b, &a.lat[v])
	}
	for j := range a.custom {
		b = appendW(b, &a.custom[j][0])
		b = appendW(b, &a.custom[j][1])
	}
	if len(a.quants) > 0 {
		for v := range a.hist {
			h := &a.hist[v]
			h.settle()
			var n uint64
			for _, c := range h.counts {
				if c != 0 {
					n++
				}
			}
			b = appendI(b, h.n)
			b = binary.AppendUvarint(b, n)
			for j, c := range h.counts {
				if c != 0 {
					b = binary.AppendUvarint(b, uint64(int32(j)+h.lo-MinBucket))
					b = binary.AppendUvarint(b, c)
				}
			}
		}
	}
	for i := range a.metrics {
		m := &a.metrics[i]
		b = appendF(b, m.maxLogE)
		if m.Kind == LatencyQuantile {
			q := &m.q
			b = appendI(b, q.nextN, int64(q.epoch), q.trials, q.slowHi, q.slowLo)
			b = appendF(b, q.cHi, q.cLo)
		}
	}
	return b, nil
}

// UnmarshalBinary restores a state written by MarshalBinary into an
// Analyzer made by New with the same Config. It implements
// encoding.BinaryUnmarshaler. On error the Analyzer is unchanged.
func (a *Analyzer) UnmarshalBinary(data []byte) error {
	fresh, err := New(a.cfg)
	if err != nil {
		return err
	}
	r := reader{b: data}
	var magic [4]byte
	copy(magic[:], r.bytes(4))
	if magic != codecMagic {
		return fmt.Errorf("%w: not a checkpoint", ErrCheckpoint)
	}
	if ver := r.bytes(1); r.err == nil && ver[0] != codecVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrCheckpoint, ver[0], codecVersion)
	}
	if fp := r.u64(); r.err == nil && fp != fresh.fingerprint() {
		return fmt.Errorf("%w: written for a different metric configuration", ErrCheckpoint)
	}
	x := fresh
	if x.weight = r.f(); !validWeight(x.weight) {
		r.fail("weight out of range")
	}
	x.stepReq = [2]int64{r.i(), r.i()}
	r.step(&x.cur)
	x.srmReq, x.srmLump = [2]int64{r.i(), r.i()}, [2]int64{r.i(), r.i()}
	x.srmLogE, x.srmNow = r.f(), r.f()
	if n := r.uv(); r.err == nil {
		if n > uint64(len(data)) {
			return fmt.Errorf("%w: %d steps", ErrCheckpoint, n)
		}
		x.steps = make([]stepCounts, n)
		for i := range x.steps {
			r.step(&x.steps[i])
		}
	}
	x.totOut = [2]int64{r.i(), r.i()}
	x.totErr = [2]int64{r.i(), r.i()}
	if min(x.totErr[0], x.totErr[1]) < 0 || x.totErr[0] > x.totOut[0] || x.totErr[1] > x.totOut[1] {
		r.fail("whole-rollout error counts out of range")
	}
	x.seq = r.uv()
	for v := range x.recent {
		n := r.uv()
		for k := uint64(0); k < n && r.err == nil; k++ {
			j := r.uv()
			if j >= dedupSlots {
				r.fail("unit slot out of range")
				break
			}
			x.recent[v][j] = unitSlot{unit: r.u64(), seq: r.uv()}
		}
	}
	for v := range x.lat {
		r.w(&x.lat[v])
	}
	for j := range x.custom {
		r.w(&x.custom[j][0])
		r.w(&x.custom[j][1])
	}
	if len(x.quants) > 0 {
		for v := range x.hist {
			h := &x.hist[v]
			h.n = r.i()
			n := r.uv()
			for k := uint64(0); k < n && r.err == nil; k++ {
				j := r.uv()
				if j >= uint64(numBuckets) {
					r.fail("bucket out of range")
					break
				}
				if c := r.uv(); c != 0 {
					h.counts[h.index(int32(j)+MinBucket)] = c
				}
			}
		}
	}
	for i := range x.metrics {
		m := &x.metrics[i]
		m.maxLogE = r.f()
		if m.Kind == LatencyQuantile {
			q := &m.q
			q.nextN = r.i()
			if e := r.i(); e <= maxEpochs {
				q.epoch = int32(e)
			} else {
				r.fail("quantile epoch out of range") // int32 would wrap it
			}
			q.trials, q.slowHi, q.slowLo = r.i(), r.i(), r.i()
			q.cHi, q.cLo = r.f(), r.f()
			if q.trials < 0 || q.slowHi < 0 || q.slowLo < 0 || q.slowHi > q.trials || q.slowLo > q.trials {
				r.fail("quantile counts out of range")
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return r.err
	}
	*a = *x
	return nil
}

// fingerprint identifies the parts of the configuration that shape the
// state, so that a checkpoint is not restored under another policy.
func (a *Analyzer) fingerprint() uint64 {
	h := fnv.New64a()
	var buf []byte
	for _, m := range a.cfg.Metrics {
		buf = append(buf, byte(m.Kind), byte(m.Direction))
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(m.MaxIncrease))
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(m.Quantile))
		buf = append(buf, m.Name...)
		buf = append(buf, 0)
	}
	h.Write(buf)
	return h.Sum64()
}

func appendF(b []byte, xs ...float64) []byte {
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func appendI(b []byte, xs ...int64) []byte {
	for _, x := range xs {
		b = binary.AppendVarint(b, x)
	}
	return b
}

func appendStep(b []byte, s *stepCounts) []byte {
	b = appendI(b, s.out[0], s.out[1], s.err[0], s.err[1])
	return appendF(b, s.weight)
}

func appendW(b []byte, w *welford) []byte {
	b = appendI(b, w.n)
	return appendF(b, w.mean, w.m2)
}

// reader decodes with a sticky error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCheckpoint, msg)
	}
	r.b = nil
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.fail("truncated")
		return make([]byte, n)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.bytes(8)) }

// f decodes a float; every float in the state is finite.
func (r *reader) f() float64 {
	x := math.Float64frombits(r.u64())
	if !finite(x) {
		r.fail("non-finite number")
		return 0
	}
	return x
}

func (r *reader) uv() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *reader) i() int64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Varint(r.b)
	if n <= 0 || x < 0 {
		r.fail("bad count")
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *reader) step(s *stepCounts) {
	s.out = [2]int64{r.i(), r.i()}
	s.err = [2]int64{r.i(), r.i()}
	s.weight = r.f()
	switch {
	case min(s.out[0], s.out[1], s.err[0], s.err[1]) < 0:
		r.fail("negative step counts")
	case s.err[0] > s.out[0] || s.err[1] > s.out[1]:
		r.fail("more counted errors than requests in a step")
	case !validWeight(s.weight):
		r.fail("step weight out of range")
	}
}

// validWeight reports whether w is a weight StartStep keeps: 0 (unknown)
// or a share in percent strictly between 0 and 100. The error tests'
// bounds hold only for those; a checkpoint with another is corrupt.
func validWeight(w float64) bool { return w == 0 || (w > 0 && w < 100) }

func (r *reader) w(w *welford) {
	w.n = r.i()
	w.mean, w.m2 = r.f(), r.f()
}
