package prefetch

import (
	"testing"
	"unsafe"
)

func TestSpan(t *testing.T) {
	for _, c := range []struct{ p, size, start, n uintptr }{
		{0x1000, 0, 0, 0},
		{0x1000, 1, 0x1000, 1},
		{0x1000, 64, 0x1000, 1},
		{0x1000, 65, 0x1000, 2},
		{0x103f, 1, 0x1000, 1},
		{0x103f, 2, 0x1000, 2},
		{0x1010, 512, 0x1000, 9},
		{0x1000, 512, 0x1000, 8},
	} {
		start, n := span(c.p, c.size)
		if start != c.start || n != c.n {
			t.Errorf("span(%#x, %d) = %#x, %d; want %#x, %d", c.p, c.size, start, n, c.start, c.n)
		}
	}
}

// TestRangeAnyAddress: a prefetch is a hint and never faults, whatever it
// is given.
func TestRangeAnyAddress(t *testing.T) {
	var buf [1000]byte
	Range(unsafe.Pointer(&buf[3]), uintptr(len(buf)-3))
	Range(nil, 4096)
	Range(unsafe.Pointer(&buf[0]), 0)
	lines(1<<47, 2) // not mapped
	lines(0, 1)
}
