package engine

import (
	"context"
	"errors"
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

// failingLoads fails the first n LoadState calls of one rollout, as a KV
// read does while the server restarts.
type failingLoads struct {
	*memStore
	rollout string
	mu      sync.Mutex
	n       int
}

func (s *failingLoads) LoadState(ctx context.Context, id string) ([]byte, bool, error) {
	if id == s.rollout {
		s.mu.Lock()
		fail := s.n > 0
		s.n--
		s.mu.Unlock()
		if fail {
			return nil, false, errors.New("nats: timeout")
		}
	}
	return s.memStore.LoadState(ctx, id)
}

// TestEngineRestoreRetries: an owner whose checkpoint cannot be read yet
// retries, and the telemetry delivered for it meanwhile waits and is
// applied once it is restored, while other rollouts go on; before,
// the owner gave up and every Deliver with its telemetry hung.
func TestEngineRestoreRetries(t *testing.T) {
	st := &failingLoads{memStore: newMemStore(), rollout: "a", n: 3}
	pol := mustPolicy(t, "hold", "")
	e, stop := startEngine(t, st, pol)
	defer stop()
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	e.SetSpec(Spec{Rollout: "b", Policy: "test"}, false)
	waitFor(t, "b started", func() bool { return len(st.actions("b")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var in []ingest.Message
	for seq := uint64(1); seq <= 20; seq++ {
		in = append(in, msg(seq, []string{"a", "b"}[seq&1], analyzer.Variant(seq>>1&1), t0, false))
	}
	if err := e.Deliver(ctx, in); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	for _, id := range []string{"a", "b"} {
		e.mu.Lock()
		o := e.owners[id]
		e.mu.Unlock()
		o.mu.Lock()
		b, c := o.m.an.Requests()
		o.mu.Unlock()
		if b+c != 10 {
			t.Errorf("%s: %d requests applied, want 10", id, b+c)
		}
	}
	if got := st.actions("a"); len(got) != 1 {
		t.Errorf("decisions of a: %v, want the start", got)
	}
}

// TestEngineStopWhileRestoring: an engine stopped while an owner still
// retries its restore returns, and so does a Deliver waiting for it.
func TestEngineStopWhileRestoring(t *testing.T) {
	st := &failingLoads{memStore: newMemStore(), rollout: "a", n: 1 << 30}
	pol := mustPolicy(t, "hold", "")
	e, stop := startEngine(t, st, pol)
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitOwners(t, e, 1)
	done := make(chan error, 1)
	go func() {
		done <- e.Deliver(context.Background(), []ingest.Message{msg(1, "a", analyzer.Baseline, t0, false)})
	}()
	time.Sleep(50 * time.Millisecond)
	stop() // cancels Run's context; Run returns once every owner has ended
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Deliver: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver still waiting after the engine stopped")
	}
}
