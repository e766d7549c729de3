package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// memStore is an in-memory Store for the engine's own tests; the NATS
// store (package actuator) has its own tests on a real server, and
// cmd/verdict's end-to-end tests run the two together.
type memStore struct {
	mu        sync.Mutex
	decisions []Decision
	routes    map[string]Route
	states    map[string][]byte
	saves     int // SaveState calls
}

func newMemStore() *memStore {
	return &memStore{routes: map[string]Route{}, states: map[string][]byte{}}
}

func (s *memStore) Apply(_ context.Context, d Decision, r Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.decisions = append(s.decisions, d)
	if old, ok := s.routes[r.Rollout]; !ok || old.Seq < r.Seq {
		s.routes[r.Rollout] = r
	}
	return nil
}

func (s *memStore) SaveState(_ context.Context, id string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[id] = append([]byte(nil), data...)
	s.saves++
	return nil
}

func (s *memStore) LoadState(_ context.Context, id string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.states[id]
	return d, ok, nil
}

func (s *memStore) LoadRoute(_ context.Context, id string) (Route, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.routes[id]
	return r, ok, nil
}

func (s *memStore) actions(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, d := range s.decisions {
		if d.Rollout == id {
			out = append(out, fmt.Sprintf("%d:%s", d.Seq, d.Action))
		}
	}
	return out
}

func msg(seq uint64, id string, v analyzer.Variant, at time.Time, failed bool) ingest.Message {
	return ingest.Message{Seq: seq, Record: telemetry.Record{
		Rollout: id, Variant: v, Time: at,
		Single: analyzer.Observation{Variant: v, HasLatency: true, HasOutcome: true, LatencyMs: 20, Error: failed},
	}}
}

func startEngine(t *testing.T, st Store, pol *policy.Policy) (*Engine, func()) {
	t.Helper()
	e := New(Options{Store: st, Now: func() time.Time { return t0 }})
	e.SetPolicies(policy.Set{pol.Name: pol})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return e, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEngineOwners: specs start owners, Deliver returns once messages are
// applied, a rollback retires the owner and later telemetry is ignored,
// and a restarted engine resumes from the checkpoint without repeating a
// decision or counting a message twice.
func TestEngineOwners(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "rollback", "")
	e, stop := startEngine(t, st, pol)
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	e.SetSpec(Spec{Rollout: "b", Policy: "missing"}, false)
	waitFor(t, "start of a", func() bool { return len(st.actions("a")) == 1 })
	if !e.Known("a") || !e.Known("b") || e.Known("c") {
		t.Fatalf("Known: a %v b %v c %v", e.Known("a"), e.Known("b"), e.Known("c"))
	}
	// b waits for its policy: its telemetry is ignored, not lost silently.
	ctx := context.Background()
	if err := e.Deliver(ctx, []ingest.Message{msg(1, "b", analyzer.Canary, t0, false)}); err != nil {
		t.Fatal(err)
	}
	if e.Ignored() != 1 {
		t.Errorf("Ignored = %d, want 1", e.Ignored())
	}
	// Half of a's baseline traffic, then stop the engine.
	var seq uint64 = 1
	var batch []ingest.Message
	for i := 0; i < 1000; i++ {
		seq++
		batch = append(batch, msg(seq, "a", analyzer.Baseline, t0.Add(time.Duration(i)*time.Millisecond), false))
	}
	if err := e.Deliver(ctx, batch); err != nil {
		t.Fatal(err)
	}
	stop()
	snap, ok, _ := st.LoadState(ctx, "a")
	if !ok {
		t.Fatal("no checkpoint after shutdown")
	}
	s, err := DecodeStatus(snap)
	if err != nil || s.Requests[0] != 1000 {
		t.Fatalf("checkpoint requests %v, %v; want 1000 baseline", s.Requests, err)
	}

	// A new engine restores a; a redelivery of the same messages is skipped.
	e2, stop2 := startEngine(t, st, pol)
	defer stop2()
	e2.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitFor(t, "owner of a", func() bool { return e2.Known("a") })
	time.Sleep(20 * time.Millisecond)
	if err := e2.Deliver(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Bad canary traffic: a rolls back.
	batch = nil
	for i := 0; i < 20000; i++ {
		seq++
		v := analyzer.Baseline
		if i%20 == 0 {
			v = analyzer.Canary
		}
		batch = append(batch, msg(seq, "a", v, t0.Add(time.Second+time.Duration(i)*time.Millisecond), v == analyzer.Canary && i%40 == 0))
	}
	if err := e2.Deliver(ctx, batch); err != nil {
		t.Fatal(err)
	}
	defer func() { t.Logf("actions of a: %v", st.actions("a")) }()
	waitFor(t, "rollback of a", func() bool {
		a := st.actions("a")
		return len(a) >= 2 && strings.HasSuffix(a[len(a)-1], ":rollback")
	})
	// After the rollback the owner retires; telemetry is ignored.
	waitFor(t, "owner retired", func() bool {
		e2.mu.Lock()
		defer e2.mu.Unlock()
		return e2.owners["a"] == nil
	})
	before := e2.Ignored()
	if err := e2.Deliver(ctx, []ingest.Message{msg(seq+1, "a", analyzer.Canary, t0.Add(time.Hour), true)}); err != nil {
		t.Fatal(err)
	}
	if e2.Ignored() != before+1 {
		t.Errorf("telemetry after the end: Ignored %d -> %d, want +1", before, e2.Ignored())
	}
	snap, _, _ = st.LoadState(ctx, "a")
	s, _ = DecodeStatus(snap)
	if s.Route.State != StateRolledBack {
		t.Errorf("checkpoint state %v, want rolledback", s.Route.State)
	}
	if got := s.Requests[0] + s.Requests[1]; got > 1000+20000 {
		t.Errorf("counted %d requests, more than the 21,000 distinct ones: a redelivery was counted", got)
	}
}

// TestEngineDeliverConcurrent: many rollouts, concurrent deliveries, and a
// shutdown while deliveries are in flight never deadlock.
func TestEngineDeliverConcurrent(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "rollback", "")
	e, stop := startEngine(t, st, pol)
	const rollouts = 50
	for i := 0; i < rollouts; i++ {
		e.SetSpec(Spec{Rollout: fmt.Sprintf("r%d", i), Policy: "test"}, false)
	}
	waitFor(t, "all started", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.decisions) == rollouts
	})
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				var b []ingest.Message
				for j := 0; j < 50; j++ {
					id := fmt.Sprintf("r%d", (i*50+j+w)%rollouts)
					b = append(b, msg(0, id, analyzer.Variant(j%2), t0, false))
				}
				if err := e.Deliver(ctx, b); err != nil {
					t.Errorf("Deliver: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	stop()
}

// TestEngineResumeSeq: the sequence to resume telemetry at is one past
// the oldest checkpoint of a running rollout, and a restored owner skips
// what its checkpoint holds, so a replay from there counts nothing twice.
func TestEngineResumeSeq(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "rollback", "")
		e, stop := startEngine(t, st, pol)
		e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
		e.SetSpec(Spec{Rollout: "b", Policy: "test"}, false)
		waitOwners(t, e, 2)
		var all []ingest.Message
		for seq := uint64(1); seq <= 30; seq++ {
			id := "a"
			if seq > 10 {
				id = "b"
			}
			all = append(all, msg(seq, id, analyzer.Baseline, t0.Add(time.Duration(seq)*time.Millisecond), false))
		}
		ctx := context.Background()
		// a gets its events and is checkpointed on the engine's clock (at
		// sequence 10); then b gets its events and the engine stops, which
		// checkpoints b (at 30) but not the unchanged a.
		if err := e.Deliver(ctx, all[:10]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if err := e.Deliver(ctx, all[10:]); err != nil {
			t.Fatal(err)
		}
		stop()

		e2, stop2 := startEngine(t, st, pol)
		e2.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
		e2.SetSpec(Spec{Rollout: "b", Policy: "test"}, false)
		waitOwners(t, e2, 2)
		seq, ok, err := e2.ResumeSeq(ctx)
		if err != nil || !ok || seq != 11 {
			t.Fatalf("ResumeSeq = %d, %v, %v; want 11, true, nil", seq, ok, err)
		}
		// Everything again, as a replay from an older position would.
		if err := e2.Deliver(ctx, all); err != nil {
			t.Fatal(err)
		}
		stop2()
		for id, want := range map[string]int64{"a": 10, "b": 20} {
			data, _, _ := st.LoadState(ctx, id)
			s, err := DecodeStatus(data)
			if err != nil || s.Requests[0] != want {
				t.Errorf("%s counted %v (%v), want %d baseline", id, s.Requests, err, want)
			}
		}
	})
}

// TestEngineLate: an event further than Lateness behind its rollout's
// clock is counted, and counted as late.
func TestEngineLate(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "rollback", "")
	e, stop := startEngine(t, st, pol)
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitOwners(t, e, 1)
	ctx := context.Background()
	in := []ingest.Message{
		msg(1, "a", analyzer.Baseline, t0.Add(time.Minute), false),
		msg(2, "a", analyzer.Baseline, t0.Add(time.Minute-29*time.Second), false), // within 30s
		msg(3, "a", analyzer.Baseline, t0.Add(time.Minute-31*time.Second), false), // late
	}
	if err := e.Deliver(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got := e.Late(); got != 1 {
		t.Errorf("Late() = %d, want 1", got)
	}
	stop()
	data, _, _ := st.LoadState(ctx, "a")
	if s, _ := DecodeStatus(data); s.Requests[0] != 3 {
		t.Errorf("counted %v, want 3 baseline: late events count too", s.Requests)
	}
}

// TestEngineOutageNeverTimesOut: while telemetry cannot be read (Live is
// false) an idle rollout's clock stands still, so even onTimeout: promote
// does nothing; once telemetry is readable again and stays silent, the
// step times out as the policy says.
func TestEngineOutageNeverTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "promote", "")
		var live atomic.Bool
		e := New(Options{Store: st, Live: live.Load})
		e.SetPolicies(policy.Set{pol.Name: pol})
		e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		time.Sleep(time.Hour) // ten maxDurations of outage
		synctest.Wait()
		if got := st.actions("a"); len(got) != 1 {
			t.Fatalf("decisions during the outage: %v, want only the start", got)
		}
		live.Store(true)
		time.Sleep(11 * time.Minute) // IdleAfter, then the step's maxDuration
		synctest.Wait()
		if got := st.actions("a"); len(got) < 2 {
			t.Errorf("decisions after the outage: %v, want a timeout", got)
		}
		cancel()
		<-done
	})
}

// waitOwners waits until the engine runs n owners.
func waitOwners(t *testing.T, e *Engine, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d owners", n), func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.owners) == n
	})
}

// TestEngineWatermark: a rollout without telemetry of its own moves its
// checkpoint to the delivered watermark, so it does not make a restart
// replay everything since it last had an event.
func TestEngineWatermark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "rollback", "")
		e := New(Options{Store: st, CheckpointEvery: 10 * time.Millisecond})
		e.SetPolicies(policy.Set{pol.Name: pol})
		e.SetSpec(Spec{Rollout: "quiet", Policy: "test"}, false)
		e.SetSpec(Spec{Rollout: "busy", Policy: "test"}, false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		synctest.Wait()
		var in []ingest.Message
		for seq := uint64(1); seq <= 20; seq++ {
			in = append(in, msg(seq, "busy", analyzer.Baseline, t0, false))
		}
		if err := e.Deliver(ctx, in); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if seq, ok, err := e.ResumeSeq(ctx); err != nil || !ok || seq != 21 {
			t.Errorf("ResumeSeq = %d, %v, %v; want 21, true, nil", seq, ok, err)
		}
		cancel()
		<-done
	})
}

// TestEngineCheckpointBudget: with more changed rollouts than
// MaxCheckpointRate allows in a CheckpointEvery, the engine writes no more
// checkpoints a second than the rate, oldest first, and every changed
// rollout is checkpointed within changed rollouts / rate.
func TestEngineCheckpointBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "rollback", "")
		e := New(Options{Store: st, Now: func() time.Time { return t0 }, MaxCheckpointRate: 20})
		e.SetPolicies(policy.Set{pol.Name: pol})
		const n = 100
		for i := range n {
			e.SetSpec(Spec{Rollout: fmt.Sprintf("r%d", i), Policy: "test"}, false)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		waitOwners(t, e, n)
		synctest.Wait()
		saves := func() int {
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.saves
		}
		started := saves() // the start decisions' checkpoints
		var in []ingest.Message
		for i := range n {
			in = append(in, msg(uint64(i+1), fmt.Sprintf("r%d", i), analyzer.Baseline, t0, false))
		}
		if err := e.Deliver(ctx, in); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := saves() - started; got > 2*20+5 {
			t.Errorf("%d checkpoints in 2s, want at most about 40 (rate 20/s)", got)
		}
		time.Sleep(4 * time.Second) // n / rate = 5s in all
		synctest.Wait()
		if got := saves() - started; got != n {
			t.Errorf("%d checkpoints after 6s, want one per changed rollout (%d)", got, n)
		}
		if seq, ok, err := e.ResumeSeq(ctx); err != nil || !ok || seq != n+1 {
			t.Errorf("ResumeSeq = %d, %v, %v; want %d", seq, ok, err, n+1)
		}
		cancel()
		<-done
	})
}

// TestEngineDeletedSpecStopsOwner: deleting a rollout's spec ends its
// owner (after it applied what it holds and wrote a last checkpoint); it
// does not keep running, or idling into decisions, until the engine stops.
func TestEngineDeletedSpecStopsOwner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "promote", "")
		e := New(Options{Store: st, Now: func() time.Time { return t0 }})
		e.SetPolicies(policy.Set{pol.Name: pol})
		e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		waitOwners(t, e, 1)
		e.mu.Lock()
		o := e.owners["a"]
		e.mu.Unlock()
		if err := e.Deliver(ctx, []ingest.Message{msg(1, "a", analyzer.Baseline, t0, false)}); err != nil {
			t.Fatal(err)
		}
		e.SetSpec(Spec{Rollout: "a"}, true)
		select {
		case <-o.stopped:
		case <-time.After(time.Minute):
			t.Fatal("the owner of a deleted rollout is still running")
		}
		data, _, _ := st.LoadState(ctx, "a")
		if s, err := DecodeStatus(data); err != nil || s.Requests[0] != 1 {
			t.Errorf("last checkpoint counted %v (%v), want 1 baseline", s.Requests, err)
		}
		time.Sleep(time.Hour) // an owner left running would time the step out
		synctest.Wait()
		if got := st.actions("a"); len(got) != 1 {
			t.Errorf("decisions: %v, want only the start", got)
		}
		cancel()
		<-done
	})
}

// checkRoutes checks the pairing of known routes and owners (see route):
// a route's owner is the owner under its id, they point at each other, and
// every owner of a known rollout is its route's.
func checkRoutes(t *testing.T, e *Engine) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.knownMu.RLock()
	defer e.knownMu.RUnlock()
	for id, o := range e.owners {
		if o.route != nil && (o.route.owner != o || o.route.id != id) {
			t.Errorf("owner %s: its route points at %p (id %s), not at it", id, o.route.owner, o.route.id)
		}
		if r := e.known[id]; r != nil && r.owner != o {
			t.Errorf("rollout %s: known route's owner %p, want the running owner %p", id, r.owner, o)
		}
	}
	for id, r := range e.known {
		if r.owner != nil && (e.owners[id] != r.owner || r.owner.route != r) {
			t.Errorf("route %s: owner %p is not the running owner or not paired", id, r.owner)
		}
	}
}

// TestEngineRoutes: Deliver finds a message's owner from the route
// Rollout returned, and a route that outlived its spec or its owner
// leads where the id does: to the running owner, or to none.
func TestEngineRoutes(t *testing.T) {
	st := newMemStore()
	pol := mustPolicy(t, "hold", "")
	e, stop := startEngine(t, st, pol)
	ctx := context.Background()
	routed := func(seq uint64, r any) ingest.Message {
		m := msg(seq, "a", analyzer.Baseline, t0, false)
		m.Route = r
		return m
	}
	running := func() *owner {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.owners["a"]
	}
	requests := func(o *owner) int64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.m.requests[analyzer.Baseline]
	}

	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitOwners(t, e, 1)
	checkRoutes(t, e)
	id, r1, ok := e.Rollout("a")
	if !ok || id != "a" || r1 == nil {
		t.Fatalf("Rollout(a) = %q, %v, %v", id, r1, ok)
	}
	o1 := running()
	if err := e.Deliver(ctx, []ingest.Message{routed(1, r1)}); err != nil {
		t.Fatal(err)
	}
	if got := requests(o1); got != 1 {
		t.Fatalf("owner counted %d requests, want 1", got)
	}

	// Deleted and written again before the engine reconciles: the owner
	// keeps running under the new route, and the old one leads to it too.
	e.SetSpec(Spec{Rollout: "a"}, true)
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	_, r2, _ := e.Rollout("a")
	if r2 == r1 {
		t.Fatal("a spec written after a delete kept the deleted route")
	}
	checkRoutes(t, e)
	if err := e.Deliver(ctx, []ingest.Message{routed(2, r1), routed(3, r2)}); err != nil {
		t.Fatal(err)
	}
	if o := running(); o != o1 || requests(o) != 3 {
		t.Fatalf("after delete and rewrite: owner %p (was %p), %d requests; want the same owner, 3", o, o1, requests(o1))
	}

	// Deleted for good: the owner stops; its routes lead nowhere.
	e.SetSpec(Spec{Rollout: "a"}, true)
	<-o1.stopped
	waitOwners(t, e, 0)
	checkRoutes(t, e)
	ignored := e.Ignored()
	if err := e.Deliver(ctx, []ingest.Message{routed(4, r2)}); err != nil {
		t.Fatal(err)
	}
	if e.Ignored() != ignored+1 {
		t.Errorf("telemetry of a deleted rollout: Ignored %d -> %d, want +1", ignored, e.Ignored())
	}

	// Written again: a new owner (restored from the checkpoint), found
	// from the new route and from the stale ones.
	e.SetSpec(Spec{Rollout: "a", Policy: "test"}, false)
	waitOwners(t, e, 1)
	checkRoutes(t, e)
	_, r3, _ := e.Rollout("a")
	o2 := running()
	waitFor(t, "restore of a", func() bool {
		o2.mu.Lock()
		defer o2.mu.Unlock()
		return o2.restored
	})
	if err := e.Deliver(ctx, []ingest.Message{routed(5, r1), routed(6, r2), routed(7, r3), routed(8, nil)}); err != nil {
		t.Fatal(err)
	}
	if got := requests(o2); got != 3+4 {
		t.Errorf("new owner counted %d requests, want 7 (3 restored, 4 delivered)", got)
	}
	stop()
	checkRoutes(t, e)
}
