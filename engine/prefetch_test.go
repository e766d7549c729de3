package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
)

// TestEngineDeliverManyRollouts: with more rollouts than prefetchOwners,
// Deliver prefetches ahead of the message it is at; every message is
// still applied once, to its own rollout, in stream order. The messages
// come in a seeded random order of rollouts, some with the route ingest
// passes and some without (Deliver then looks the owner up), and some for
// a rollout with no spec (ignored).
func TestEngineDeliverManyRollouts(t *testing.T) {
	const n = prefetchOwners + 44
	st := newMemStore()
	e, stop := startEngine(t, st, mustPolicy(t, "hold", benchQuantile))
	defer stop()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%03d", i)
		e.SetSpec(Spec{Rollout: ids[i], Policy: "test"}, false)
	}
	waitFor(t, "every owner restored", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.owners) != n {
			return false
		}
		for _, o := range e.owners {
			o.mu.Lock()
			ok := o.restored
			o.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	rng := rand.New(rand.NewPCG(7, 7))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want [n][2]int64
	var last [n]uint64
	var ignored int64
	var seq uint64
	for range 20 {
		msgs := make([]ingest.Message, 500)
		for j := range msgs {
			seq++
			i := rng.IntN(n + 1) // n: a rollout without a spec
			if i == n {
				msgs[j] = msg(seq, "unknown", analyzer.Baseline, t0, false)
				ignored++
				continue
			}
			v := analyzer.Variant(rng.IntN(2))
			msgs[j] = msg(seq, ids[i], v, t0, false)
			if rng.IntN(4) > 0 {
				id, r, ok := e.Rollout(ids[i])
				if !ok {
					t.Fatalf("Rollout(%s) unknown", ids[i])
				}
				msgs[j].Record.Rollout, msgs[j].Route = id, r
			}
			want[i][v]++
			last[i] = seq
		}
		if err := e.Deliver(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.Ignored(); got != ignored {
		t.Errorf("ignored %d messages, want %d", got, ignored)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, id := range ids {
		o := e.owners[id]
		o.mu.Lock()
		var got [2]int64
		got[0], got[1] = o.m.Requests()
		s := o.streamSeq
		o.mu.Unlock()
		if got != want[i] || s != last[i] {
			t.Errorf("%s: requests %v, streamSeq %d; want %v and %d", id, got, s, want[i], last[i])
		}
	}
}

// TestOwnerMemLayout keeps a rollout's allocation as docs/PERFORMANCE.md
// (Session 8) measured it: the fields an event touches within its first
// 1,280 bytes, and the whole in Go's 9,472-byte size class. The next
// class, 10,240 bytes, places every rollout a multiple of 2 KiB from the
// next, so the same field of all of them falls in 1/32 of the cache's
// sets; session 4 measured such an allocation 35% slower in Deliver.
// Growing an owner, a machine or an analyzer past this needs the
// measurement again, not a new bound.
func TestOwnerMemLayout(t *testing.T) {
	var mem ownerMem
	hot := unsafe.Offsetof(mem.mm) + unsafe.Offsetof(mem.mm.a) + analyzer.PrefetchSize
	if hot > 1280 {
		t.Errorf("an event's fields span %d bytes of ownerMem, want at most 1280", hot)
	}
	if size := unsafe.Sizeof(mem); size > 9472 {
		t.Errorf("ownerMem is %d bytes, past the 9,472-byte size class", size)
	}
}
