package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, nc := natstest.Start(t, nil, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		t.Errorf("nats async error: %v", err)
	}))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func newActuator(t testing.TB) (*Actuator, jetstream.JetStream) {
	t.Helper()
	js := startJetStream(t)
	ctx := context.Background()
	for range 2 { // idempotent
		if err := Setup(ctx, js, Config{}); err != nil {
			t.Fatalf("Setup: %v", err)
		}
	}
	a, err := New(js, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return a, js
}

func decision(seq uint64, weight float64) (engine.Decision, engine.Route) {
	d := engine.Decision{
		Rollout: "checkout-42", Seq: seq, Action: engine.ActionPromote, Step: int(seq), Weight: weight,
		Policy: "checkout", PolicyHash: "sha256:00", Reason: "all metrics within margins",
		Metrics: []analyzer.MetricResult{{Name: "error-rate", Baseline: 0.01, Canary: 0.011, Estimate: 1.1,
			Lower: 0.9, Upper: 1.3, EValue: 0.4, PValue: 1, Samples: analyzer.Samples{Baseline: 9000, Canary: 1000}}},
	}
	r := engine.Route{Rollout: "checkout-42", Baseline: "v41", Canary: "v42", Weight: weight,
		State: engine.StateProgressing, Step: int(seq), Seq: seq}
	return d, r
}

func route(t testing.TB, a *Actuator) engine.Route {
	t.Helper()
	rs, err := a.Routes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("Routes() = %+v, want one", rs)
	}
	return rs[0]
}

func TestApplyPublishesOnce(t *testing.T) {
	a, js := newActuator(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 26, 10, 3, 12, 0, time.UTC)
	d, r := decision(7, 5)
	for range 2 {
		if err := a.Apply(ctx, d, at, r); err != nil {
			t.Fatalf("Apply = %v", err)
		}
	}
	s, err := js.Stream(ctx, "VERDICT_DECISIONS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("decision stream has %d messages after two Applies, want 1", info.State.Msgs)
	}
	m, err := s.GetLastMsgForSubject(ctx, "verdict.decisions.checkout-42")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Header.Get(jetstream.MsgIDHeader), "checkout-42/7"; got != want {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, want)
	}
	var ce engine.CloudEvent
	if err := json.Unmarshal(m.Data, &ce); err != nil {
		t.Fatal(err)
	}
	want := d.CloudEvent(at)
	if ce.ID != "checkout-42/7" || ce.SpecVersion != "1.0" || ce.Type != "verdict.decision" ||
		!ce.Time.Equal(at) || ce.Data.Seq != 7 || ce.Data.Action != engine.ActionPromote ||
		len(ce.Data.Metrics) != 1 || ce.Data.Metrics[0] != want.Data.Metrics[0] {
		t.Errorf("published %+v, want %+v", ce, want)
	}
	if got := route(t, a); got != r {
		t.Errorf("route = %+v, want %+v", got, r)
	}
}

func TestApplyStaleRouteDoesNotOverwrite(t *testing.T) {
	a, _ := newActuator(t)
	ctx := context.Background()
	d9, r9 := decision(9, 50)
	d8, r8 := decision(8, 25)
	if err := a.Apply(ctx, d9, time.Unix(9, 0), r9); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, d8, time.Unix(8, 0), r8); err != nil {
		t.Fatalf("stale Apply = %v, want nil (nothing to do)", err)
	}
	if got := route(t, a); got != r9 {
		t.Fatalf("route after a stale Apply = %+v, want %+v", got, r9)
	}
}

func TestConcurrentRouteWritersEndAtHighestSeq(t *testing.T) {
	a, _ := newActuator(t)
	ctx := context.Background()
	const n = 24
	seqs := rand.New(rand.NewPCG(1, 2)).Perm(n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, s := range seqs {
		wg.Go(func() {
			_, r := decision(uint64(s+1), float64(s))
			errs <- a.putRoute(ctx, r)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("putRoute = %v", err)
		}
	}
	if got := route(t, a); got.Seq != n || got.Weight != n-1 {
		t.Fatalf("route = %+v, want seq %d", got, n)
	}
}

func TestSpecs(t *testing.T) {
	a, _ := newActuator(t)
	ctx := context.Background()
	if _, _, err := a.GetSpec(ctx, "checkout-42"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSpec(missing) = %v, want ErrNotFound", err)
	}
	if err := a.UpdateSpec(ctx, "checkout-42", func(*engine.Spec) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateSpec(missing) = %v, want ErrNotFound", err)
	}
	if err := a.PutSpec(ctx, engine.Spec{Rollout: "bad.id"}); err == nil {
		t.Fatal("PutSpec(bad.id) succeeded")
	}
	spec := engine.Spec{Rollout: "checkout-42", Policy: "checkout", Baseline: "v41", Canary: "v42"}
	if err := a.PutSpec(ctx, spec); err != nil {
		t.Fatal(err)
	}
	got, rev1, err := a.GetSpec(ctx, "checkout-42")
	if err != nil || got != spec {
		t.Fatalf("GetSpec = %+v, %v, want %+v", got, err, spec)
	}
	// Concurrent pause and abort both land.
	var wg sync.WaitGroup
	for _, f := range []func(*engine.Spec){func(s *engine.Spec) { s.Paused = true }, func(s *engine.Spec) { s.Abort = true }} {
		wg.Go(func() {
			if err := a.UpdateSpec(ctx, "checkout-42", func(s *engine.Spec) error { f(s); return nil }); err != nil {
				t.Errorf("UpdateSpec = %v", err)
			}
		})
	}
	wg.Wait()
	got, rev2, err := a.GetSpec(ctx, "checkout-42")
	if err != nil || !got.Paused || !got.Abort || rev2 <= rev1 {
		t.Fatalf("after pause and abort: %+v rev %d (was %d), %v", got, rev2, rev1, err)
	}
	boom := errors.New("boom")
	if err := a.UpdateSpec(ctx, "checkout-42", func(*engine.Spec) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("UpdateSpec(fn fails) = %v, want boom", err)
	}
}

func TestState(t *testing.T) {
	a, _ := newActuator(t)
	ctx := context.Background()
	if _, err := a.LoadState(ctx, "r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadState(missing) = %v, want ErrNotFound", err)
	}
	if err := a.SaveState(ctx, "r1", []byte("checkpoint-1")); err != nil {
		t.Fatal(err)
	}
	if err := a.SaveState(ctx, "r1", []byte("checkpoint-2")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.LoadState(ctx, "r1"); err != nil || string(got) != "checkpoint-2" {
		t.Fatalf("LoadState = %q, %v, want checkpoint-2", got, err)
	}
}

type seen struct {
	spec    engine.Spec
	deleted bool
}

func TestWatchSpecs(t *testing.T) {
	a, _ := newActuator(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1 := engine.Spec{Rollout: "r1", Policy: "p", Baseline: "a", Canary: "b"}
	if err := a.PutSpec(ctx, s1); err != nil {
		t.Fatal(err)
	}
	ch := make(chan seen, 16)
	done := make(chan error, 1)
	go func() {
		done <- a.WatchSpecs(ctx, func(s engine.Spec, deleted bool) { ch <- seen{s, deleted} })
	}()
	next := func() seen {
		t.Helper()
		select {
		case s := <-ch:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
			return seen{}
		}
	}
	if got := next(); got != (seen{s1, false}) {
		t.Fatalf("initial value = %+v, want %+v", got, s1)
	}
	s2 := engine.Spec{Rollout: "r2", Policy: "p", Baseline: "a", Canary: "b"}
	if err := a.PutSpec(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != (seen{s2, false}) {
		t.Fatalf("update = %+v, want %+v", got, s2)
	}
	if err := a.DeleteSpec(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != (seen{engine.Spec{Rollout: "r1"}, true}) {
		t.Fatalf("delete = %+v, want r1 deleted", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchSpecs = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchSpecs did not return after cancel")
	}
}

func TestRouteAndSpecsQueries(t *testing.T) {
	a, _ := newActuator(t)
	ctx := context.Background()
	if _, err := a.Route(ctx, "checkout-42"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Route(missing) = %v, want ErrNotFound", err)
	}
	d, r := decision(3, 25)
	if err := a.Apply(ctx, d, time.Unix(3, 0), r); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Route(ctx, "checkout-42"); err != nil || got != r {
		t.Fatalf("Route = %+v, %v, want %+v", got, err, r)
	}
	if specs, err := a.Specs(ctx); err != nil || len(specs) != 0 {
		t.Fatalf("Specs() of an empty bucket = %+v, %v", specs, err)
	}
	want := []engine.Spec{{Rollout: "a", Policy: "p"}, {Rollout: "b", Policy: "q", Paused: true}}
	for _, s := range want {
		if err := a.PutSpec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.DeleteSpec(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	specs, err := a.Specs(ctx)
	if err != nil || len(specs) != 1 || specs[0] != want[1] {
		t.Fatalf("Specs() = %+v, %v, want only %+v", specs, err, want[1])
	}
}
