package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
)

// blockingStore blocks SaveState of one rollout until release is closed.
type blockingStore struct {
	*memStore
	rollout string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *blockingStore) SaveState(ctx context.Context, id string, data []byte) error {
	if id == s.rollout {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.memStore.SaveState(ctx, id, data)
}

// TestEngineDeliverWhileOwnerWrites: Deliver applies messages of idle
// owners itself, but never waits for an owner busy with a KV write: the
// other rollouts' messages are applied at once, and the busy rollout's
// go to its inbox, applied in order once the write returns.
func TestEngineDeliverWhileOwnerWrites(t *testing.T) {
	st := &blockingStore{memStore: newMemStore(), rollout: "a",
		entered: make(chan struct{}), release: make(chan struct{})}
	pol := mustPolicy(t, "promote", "")
	e, stop := startEngine(t, st, pol)
	defer stop()
	defer func() { // a failed check must not leave the owner blocked
		select {
		case <-st.release:
		default:
			close(st.release)
		}
	}()
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	e.SetSpec(Spec{Rollout: "b", Policy: "test"}, false)
	waitFor(t, "both started", func() bool { return len(st.actions("a")) == 1 && len(st.actions("b")) == 1 })
	// The start decision's checkpoint of a blocks its owner.
	<-st.entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Deliver(ctx, []ingest.Message{msg(1, "b", analyzer.Baseline, t0, false)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- e.Deliver(ctx, []ingest.Message{
			msg(2, "a", analyzer.Baseline, t0, false), msg(3, "b", analyzer.Canary, t0, false),
			msg(4, "a", analyzer.Canary, t0, false)})
	}()
	select {
	case err := <-done:
		t.Fatalf("Deliver returned (%v) while a's owner was still writing", err)
	case <-time.After(50 * time.Millisecond):
	}
	// b's messages come after a's in the batch, and are applied at once.
	e.mu.Lock()
	b := e.owners["b"]
	e.mu.Unlock()
	waitFor(t, "b's canary applied while a's owner writes", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, c := b.m.an.Requests()
		return c == 1
	})
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	a := e.owners["a"]
	e.mu.Unlock()
	for _, c := range []struct {
		o    *owner
		want [2]int64
		seq  uint64
	}{{a, [2]int64{1, 1}, 4}, {b, [2]int64{1, 1}, 3}} {
		c.o.mu.Lock()
		var got [2]int64
		got[0], got[1] = c.o.m.an.Requests()
		seq := c.o.streamSeq
		c.o.mu.Unlock()
		if got != c.want || seq != c.seq {
			t.Errorf("%s: counts %v streamSeq %d, want %v and %d", c.o.id, got, seq, c.want, c.seq)
		}
	}
}
