package bench

import (
	"runtime"
	"testing"
)

func TestGCCycles(t *testing.T) {
	before := GCCycles()
	runtime.GC()
	runtime.GC()
	if got := GCCycles() - before; got < 2 {
		t.Errorf("GCCycles rose by %d over two runtime.GC calls, want at least 2", got)
	}
}
