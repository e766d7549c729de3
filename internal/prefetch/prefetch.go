// Package prefetch asks the processor to start loading memory into its
// caches before the program reads it.
//
// With many rollouts, an event's state (its owner, state machine and
// analyzer) is rarely in cache, and Engine.Deliver would wait for each
// cache miss in turn: the atomic operations between one event and the
// next (taking the owner's lock, say) are full memory barriers on amd64,
// so the processor cannot start the next event's loads early on its own.
// Prefetch instructions are not held back by those barriers (Intel SDM,
// PREFETCHh: "not ordered with respect to the fence instructions ... or
// locked memory references"), so Deliver issues them a few events ahead,
// and the misses overlap.
//
// A prefetch is only a hint: it never faults, reads no value the program
// sees and changes nothing, whatever the address. Go exposes no prefetch
// to programs (the runtime's is internal), hence the few lines of
// assembly; on architectures without them Range does nothing.
package prefetch

import "unsafe"

// LineSize is the cache line size Range assumes (64 bytes on amd64 and on
// the arm64 processors Go runs on).
const LineSize = 64

// Range hints that the size bytes from p will be read soon: it prefetches
// every cache line they touch, into all cache levels. p need not point to
// anything; nothing is read through it.
func Range(p unsafe.Pointer, size uintptr) {
	lines(span(uintptr(p), size))
}

// span returns the first cache line of the size bytes from p and how many
// lines they touch.
func span(p, size uintptr) (start, n uintptr) {
	if size == 0 {
		return 0, 0
	}
	start = p &^ (LineSize - 1)
	return start, (p + size - start + LineSize - 1) / LineSize
}
