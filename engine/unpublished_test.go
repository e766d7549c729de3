package engine

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
)

// downStore is a memStore whose Apply fails while down is set, as the
// NATS store does while the server is unreachable.
type downStore struct {
	*memStore
	down     atomic.Bool
	attempts atomic.Int64
}

func (s *downStore) Apply(ctx context.Context, d Decision, r Route) error {
	if s.down.Load() {
		s.attempts.Add(1)
		return errors.New("store down")
	}
	return s.memStore.Apply(ctx, d, r)
}

// TestEngineStopWithUnpublishedDecision: an engine stopped while it cannot
// publish a decision must not checkpoint the state past it. Otherwise the
// restarted engine would restore a rolled-back rollout whose rollback no
// router ever saw. Instead the next start replays from the previous
// checkpoint and publishes the decision, once.
func TestEngineStopWithUnpublishedDecision(t *testing.T) {
	st := &downStore{memStore: newMemStore()}
	pol := mustPolicy(t, "rollback", "")
	e, stop := startEngine(t, st, pol)
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitFor(t, "start of a", func() bool { return len(st.actions("a")) == 1 })

	// A failing canary: enough to roll back.
	var batch []ingest.Message
	for i := range 20000 {
		v := analyzer.Baseline
		if i%20 == 0 {
			v = analyzer.Canary
		}
		batch = append(batch, msg(uint64(i+1), "a", v, t0.Add(time.Second+time.Duration(i)*time.Millisecond), v == analyzer.Canary && i%40 == 0))
	}
	st.down.Store(true)
	delivered := make(chan error, 1)
	go func() { delivered <- e.Deliver(context.Background(), batch) }()
	waitFor(t, "a failed attempt to publish the rollback", func() bool { return st.attempts.Load() > 0 })
	stop()
	<-delivered

	if snap, ok, _ := st.LoadState(context.Background(), "a"); ok {
		s, err := DecodeStatus(snap)
		if err != nil {
			t.Fatal(err)
		}
		if s.Route.State.Terminal() || s.Route.Seq != 1 {
			t.Fatalf("checkpoint after the stop: state %v, seq %d; want the state before the unpublished rollback (seq 1)", s.Route.State, s.Route.Seq)
		}
	}

	st.down.Store(false)
	e2, stop2 := startEngine(t, st, pol)
	defer stop2()
	e2.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitOwners(t, e2, 1) // Known says only that the spec is there
	if err := e2.Deliver(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rollback, published after the restart", func() bool { return len(st.actions("a")) >= 2 })
	time.Sleep(50 * time.Millisecond)
	if got, want := st.actions("a"), []string{"1:start", "2:rollback"}; !slices.Equal(got, want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
}
