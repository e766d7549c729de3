package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
)

// TestEngineIdleOwnersHaveNoGoroutine: once restored, an owner with an
// empty inbox has no goroutine, so 200 idle rollouts add none.
func TestEngineIdleOwnersHaveNoGoroutine(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "hold", "")
	e, stop := startEngine(t, st, pol)
	defer stop()
	base := runtime.NumGoroutine()
	const n = 200
	for i := range n {
		e.SetSpec(Spec{Rollout: fmt.Sprintf("r%03d", i), Policy: "test"}, false)
	}
	waitFor(t, "every rollout started", func() bool {
		for i := range n {
			if len(st.actions(fmt.Sprintf("r%03d", i))) == 0 {
				return false
			}
		}
		return true
	})
	// The start checkpoints and the spec pokes are done within moments;
	// then every owner's goroutine ends.
	waitFor(t, "owners idle", func() bool { return runtime.NumGoroutine() <= base+5 })
}

// TestEngineWakeHandoff: deliveries that cannot be applied inline (the
// test holds the owner's lock, as a KV write would) go to the inbox and
// start a goroutine, while another goroutine pokes the owner; every one is
// applied (Deliver returns) and none twice, however the owner's goroutine
// ending interleaves with the sends.
func TestEngineWakeHandoff(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "hold", "")
	e, stop := startEngine(t, st, pol)
	defer stop()
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitFor(t, "a started", func() bool { return len(st.actions("a")) == 1 })
	e.mu.Lock()
	o := e.owners["a"]
	e.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the engine's clock, faster
		defer wg.Done()
		for ctx.Err() == nil {
			o.poke(wantCheckpoint)
			runtime.Gosched()
		}
	}()
	defer wg.Wait()
	defer cancel()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 3000
	for seq := uint64(1); seq <= n; seq++ {
		held := rng.IntN(2) == 0
		if held {
			o.mu.Lock()
			d := time.Duration(rng.IntN(50)) * time.Microsecond
			go func() { time.Sleep(d); o.mu.Unlock() }()
		}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		err := e.Deliver(dctx, []ingest.Message{msg(seq, "a", analyzer.Variant(seq&1), t0, false)})
		dcancel()
		if err != nil {
			t.Fatalf("Deliver %d (lock held: %v): %v", seq, held, err)
		}
	}
	o.mu.Lock()
	b, c := o.m.an.Requests()
	o.mu.Unlock()
	if b+c != n {
		t.Errorf("requests applied: %d baseline + %d canary, want %d", b, c, n)
	}
}
