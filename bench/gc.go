package bench

import (
	"runtime/metrics"
	"time"
)

// The runtime metrics GCCycles and GCCPU read.
const (
	gcCycles = "/gc/cycles/total:gc-cycles"
	gcCPU    = "/cpu/classes/gc/total:cpu-seconds"
)

// GCCycles returns how many garbage collections the process has
// completed so far. Unlike runtime.ReadMemStats it does not stop the
// world, so it can bracket a measured window.
func GCCycles() uint64 {
	s := []metrics.Sample{{Name: gcCycles}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// GCCPU returns the CPU time the garbage collector has used so far: its
// mark workers, the assists it took from allocating goroutines and its
// pauses, as the runtime estimates them (runtime/metrics), all of which
// the process's CPU time includes. Like GCCycles it does not stop the
// world.
func GCCPU() time.Duration {
	s := []metrics.Sample{{Name: gcCPU}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return time.Duration(s[0].Value.Float64() * float64(time.Second))
}
