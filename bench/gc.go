package bench

import "runtime/metrics"

// gcCycles is the runtime metric GCCycles reads.
const gcCycles = "/gc/cycles/total:gc-cycles"

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
