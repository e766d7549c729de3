package bench

import (
	"runtime"
	"testing"
)

func TestGCCycles(t *testing.T) {
	before, cpu := GCCycles(), GCCPU()
	keep := make([]*[64]byte, 100000) // something to mark
	for i := range keep {
		keep[i] = new([64]byte)
	}
	runtime.GC()
	runtime.GC()
	runtime.KeepAlive(keep)
	if got := GCCycles() - before; got < 2 {
		t.Errorf("GCCycles rose by %d over two runtime.GC calls, want at least 2", got)
	}
	if got := GCCPU() - cpu; got <= 0 {
		t.Errorf("GCCPU rose by %v over two runtime.GC calls, want more than 0", got)
	}
}
