package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

const e2ePolicy = `apiVersion: verdict/v1
kind: Policy
name: e2e
steps: [5, 25, 50, 100]
stepDefaults:
  minDuration: 10s
  maxDuration: 5m
  minRequests: 500
onTimeout: rollback
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 50%
  - name: latency
    type: latency
    maxIncrease: 10%
`

var e2eStart = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// e2e is an in-process JetStream server with the engine running on it.
type e2e struct {
	t   *testing.T
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	st  *stack
	pol policy.Set
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	ns, nc, err := startEmbedded(embeddedOptions{dir: t.TempDir(), inProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	t.Cleanup(nc.Close)
	pols, err := policy.Parse("e2e.yaml", []byte(e2ePolicy))
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, ns: ns, nc: nc, pol: policy.Set{"e2e": pols[0]}}
	e.start()
	return e
}

// start runs a (new) engine on the server. Its wall clock stands still at
// e2eStart: time moves with the events only.
func (e *e2e) start() {
	e.t.Helper()
	st, err := startStack(e.nc, stackConfig{policies: e.pol, now: func() time.Time { return e2eStart }})
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, e.js = st, st.js
	e.t.Cleanup(func() { _ = st.shutdown(10 * time.Second) })
}

func (e *e2e) stop() {
	e.t.Helper()
	if err := e.st.shutdown(10 * time.Second); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) startRollout(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.st.act.PutSpec(ctx, engine.Spec{Rollout: id, Policy: "e2e", Baseline: "v1", Canary: "v2"}); err != nil {
		e.t.Fatal(err)
	}
	e.waitRoute(id, func(r engine.Route) bool { return r.Seq >= 1 })
}

func (e *e2e) route(id string) (engine.Route, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := e.st.act.Route(ctx, id)
	if err != nil {
		return engine.Route{}, false
	}
	return r, true
}

func (e *e2e) waitRoute(id string, ok func(engine.Route) bool) engine.Route {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, found := e.route(id); found && ok(r) {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, _ := e.route(id)
	e.t.Fatalf("route of %s never reached the wanted state; last %+v", id, r)
	return r
}

// decisions returns every decision published for a rollout.
func (e *e2e) decisions(id string) []engine.Decision {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.js.OrderedConsumer(ctx, "VERDICT_DECISIONS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"verdict.decisions." + id},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []engine.Decision
	for {
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev engine.CloudEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				e.t.Fatalf("decision %s: %v", m.Data(), err)
			}
			if got, want := m.Headers().Get(jetstream.MsgIDHeader), ev.ID; got != want {
				e.t.Errorf("decision Nats-Msg-Id = %q, want %q", got, want)
			}
			out = append(out, ev.Data)
		}
		if n == 0 {
			return out
		}
	}
}

// status reads a rollout's checkpoint.
func (e *e2e) status(id string) engine.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	data, err := e.st.act.LoadState(ctx, id)
	if err != nil {
		e.t.Fatalf("checkpoint of %s: %v", id, err)
	}
	s, err := engine.DecodeStatus(data)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// router simulates one rollout's router: each simulated second it sends
// rate requests split by the current route weight, as batches or single
// events, and returns how many it sent per variant.
type simRouter struct {
	e       *e2e
	id      string
	canary  version
	rate    int
	singles bool
	rng     *rand.Rand
	sent    [2]int64
	n       int
	msgs    [][2]int64 // per message published: variant, requests
}

// counted is what the engine must have counted: everything sent except the
// last ignored messages, which came after the rollout ended.
func (r *simRouter) counted(ignored int64) [2]int64 {
	var c [2]int64
	for _, m := range r.msgs[:len(r.msgs)-int(ignored)] {
		c[m[0]] += m[1]
	}
	return c
}

func newSimRouter(e *e2e, id string, canary version, rate int) *simRouter {
	return &simRouter{e: e, id: id, canary: canary, rate: rate, rng: rand.New(rand.NewPCG(7, uint64(len(id))))}
}

// run sends seconds of traffic starting at simulated second from, waiting
// for the engine to catch up each second so weights are followed.
func (r *simRouter) run(from, seconds int, stop func(engine.Route) bool) int {
	r.e.t.Helper()
	base := version{errRate: 0.02, medianMs: 40, logSD: 0.5}
	ctx := context.Background()
	for s := from; s < from+seconds; s++ {
		rt, _ := r.e.route(r.id)
		if stop != nil && stop(rt) {
			return s
		}
		b := [2]*telemetry.Builder{telemetry.NewBuilder(r.id, analyzer.Baseline), telemetry.NewBuilder(r.id, analyzer.Canary)}
		for i := 0; i < r.rate; i++ {
			v, prof := analyzer.Baseline, base
			if r.rng.Float64()*100 < rt.Weight {
				v, prof = analyzer.Canary, r.canary
			}
			ms, failed := prof.sample(r.rng)
			if r.singles {
				at := e2eStart.Add(time.Duration(s)*time.Second + time.Duration(i)*time.Second/time.Duration(r.rate))
				r.publishSingle(ctx, v, at, ms, failed)
				continue
			}
			b[v].Add(ms, failed)
		}
		for v := range b {
			if b[v].Count() == 0 {
				continue
			}
			r.n++
			rec := b[v].Record(fmt.Sprintf("%s-b%d", r.id, r.n), e2eStart.Add(time.Duration(s+1)*time.Second))
			data, err := telemetry.Encode(&rec)
			if err != nil {
				r.e.t.Fatal(err)
			}
			r.publish(ctx, data, rec.ID)
			r.sent[v] += b[v].Count()
			r.msgs = append(r.msgs, [2]int64{int64(v), b[v].Count()})
		}
		r.waitCounted()
	}
	return from + seconds
}

func (r *simRouter) publishSingle(ctx context.Context, v analyzer.Variant, at time.Time, ms float64, failed bool) {
	r.n++
	status := 200
	if failed {
		status = 503
	}
	variant := [2]string{"baseline", "canary"}[v]
	id := fmt.Sprintf("%s-e%d", r.id, r.n)
	data := fmt.Sprintf(`{"rollout":%q,"variant":%q,"time":%q,"latency_ms":%.3f,"status":%d,"id":%q}`,
		r.id, variant, at.Format(time.RFC3339Nano), ms, status, id)
	r.publish(ctx, []byte(data), id)
	r.sent[v]++
	r.msgs = append(r.msgs, [2]int64{int64(v), 1})
}

func (r *simRouter) publish(ctx context.Context, data []byte, id string) {
	r.e.t.Helper()
	if _, err := r.e.js.Publish(ctx, "verdict.events."+r.id, data, jetstream.WithMsgID(id)); err != nil {
		r.e.t.Fatalf("publish: %v", err)
	}
}

// waitCounted waits until the engine has consumed everything published.
func (r *simRouter) waitCounted() {
	r.e.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		// The ack floor at the stream's last message as well: the
		// server's pending count alone can lag (nats-server#6297), and
		// once let TestE2EBadInput look before anything was handled.
		c, err := r.e.js.Consumer(ctx, "VERDICT_EVENTS", "verdict-engine")
		s, serr := r.e.js.Stream(ctx, "VERDICT_EVENTS")
		if err == nil && serr == nil {
			info, err := c.Info(ctx)
			sinfo, serr := s.Info(ctx)
			if err == nil && serr == nil && info.NumPending == 0 && info.NumAckPending == 0 &&
				info.AckFloor.Stream >= sinfo.State.LastSeq {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.e.t.Fatal("engine did not consume the telemetry within 20s")
}

var goodVersion = version{errRate: 0.02, medianMs: 40, logSD: 0.5}

func terminal(r engine.Route) bool { return r.State.Terminal() }

func actionsOf(ds []engine.Decision) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Action.String())
	}
	return strings.Join(s, " ")
}

func checkSeqs(t *testing.T, ds []engine.Decision) {
	t.Helper()
	for i, d := range ds {
		if d.Seq != uint64(i+1) {
			t.Fatalf("decision %d has seq %d, want %d (actions %s)", i, d.Seq, i+1, actionsOf(ds))
		}
	}
}

func TestE2EGoodCanaryCompletes(t *testing.T) {
	e := newE2E(t)
	e.startRollout("good")
	r := newSimRouter(e, "good", goodVersion, 4000)
	r.run(0, 600, terminal)
	e.waitRoute("good", terminal)
	ds := e.decisions("good")
	checkSeqs(t, ds)
	if got, want := actionsOf(ds), "start promote promote complete"; got != want {
		t.Fatalf("decisions %q, want %q", got, want)
	}
	rt, _ := e.route("good")
	if rt.Weight != 100 || rt.State != engine.StateCompleted || rt.Seq != 4 {
		t.Errorf("final route %+v, want weight 100, completed, seq 4", rt)
	}
	st := e.status("good")
	if want := r.counted(e.st.eng.Ignored()); st.Requests != want {
		t.Errorf("engine counted %v requests, router sent %v before the end (%v in all)", st.Requests, want, r.sent)
	}
}

func TestE2EBadCanaryRollsBack(t *testing.T) {
	e := newE2E(t)
	e.startRollout("bad")
	r := newSimRouter(e, "bad", version{errRate: 0.08, medianMs: 40, logSD: 0.5}, 2000)
	r.singles = true
	r.run(0, 120, terminal)
	rt := e.waitRoute("bad", terminal)
	if rt.State != engine.StateRolledBack || rt.Weight != 0 {
		t.Fatalf("route %+v, want rolled back at weight 0", rt)
	}
	ds := e.decisions("bad")
	checkSeqs(t, ds)
	last := ds[len(ds)-1]
	if last.Action != engine.ActionRollback || !strings.Contains(last.Reason, "error-rate") {
		t.Errorf("last decision %s %q, want a rollback naming error-rate", last.Action, last.Reason)
	}
}

func TestE2EPauseResumeAbort(t *testing.T) {
	e := newE2E(t)
	e.startRollout("p")
	ctx := context.Background()
	set := func(f func(*engine.Spec)) {
		t.Helper()
		if err := e.st.act.UpdateSpec(ctx, "p", func(s *engine.Spec) error { f(s); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set(func(s *engine.Spec) { s.Paused = true })
	e.waitRoute("p", func(r engine.Route) bool { return r.State == engine.StatePaused })
	r := newSimRouter(e, "p", goodVersion, 4000)
	next := r.run(0, 60, nil)
	if rt, _ := e.route("p"); rt.Weight != 5 || rt.State != engine.StatePaused {
		t.Fatalf("paused rollout moved: %+v", rt)
	}
	set(func(s *engine.Spec) { s.Paused = false })
	next = r.run(next, 60, func(rt engine.Route) bool { return rt.Weight > 5 })
	rt := e.waitRoute("p", func(r engine.Route) bool { return r.Weight > 5 })
	if rt.State != engine.StateProgressing {
		t.Fatalf("resumed rollout state %v", rt.State)
	}
	set(func(s *engine.Spec) { s.Abort = true })
	rt = e.waitRoute("p", terminal)
	if rt.State != engine.StateAborted || rt.Weight != 0 {
		t.Fatalf("aborted route %+v", rt)
	}
	ds := e.decisions("p")
	checkSeqs(t, ds)
	got := actionsOf(ds)
	if !strings.HasPrefix(got, "start pause") || !strings.Contains(got, "resume promote") || !strings.HasSuffix(got, "abort") {
		t.Errorf("decisions %q, want start pause ... resume promote ... abort", got)
	}
}

// TestE2EBadInput interleaves malformed messages with good events: each bad
// one lands in VERDICT_REJECTED with its reason, and every good one counts.
func TestE2EBadInput(t *testing.T) {
	e := newE2E(t)
	e.startRollout("mixed")
	ctx := context.Background()
	bad := []struct {
		subject, data string
		reason        telemetry.Reason
	}{
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary","latency_ms":`, telemetry.ReasonBadJSON},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary","latency_ms":"fast"}`, telemetry.ReasonBadJSON},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary"}`, telemetry.ReasonMissingField},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"green","latency_ms":3}`, telemetry.ReasonBadVariant},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary","latency_ms":-3}`, telemetry.ReasonBadValue},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary","latency_ms":1e300}`, telemetry.ReasonBadValue},
		{"verdict.events.nobody", `{"rollout":"nobody","variant":"canary","latency_ms":3}`, telemetry.ReasonUnknownRollout},
		{"verdict.events.mixed", `{"rollout":"other","variant":"canary","latency_ms":3}`, telemetry.ReasonSubjectMismatch},
		{"verdict.events.mixed", "{\"rollout\":\"mixed\",\"variant\":\"canary\",\"unit\":\"\xff\xfe\",\"latency_ms\":3}", telemetry.ReasonBadEncoding},
		{"verdict.events.mixed", `{"rollout":"mixed","variant":"canary","latency_ms":3,"unit":"` + strings.Repeat("x", 70_000) + `"}`, telemetry.ReasonTooLarge},
	}
	want := map[string]int{}
	good := 0
	for i, b := range bad {
		for j := 0; j < 3; j++ {
			ev := fmt.Sprintf(`{"rollout":"mixed","variant":"baseline","time":"2026-11-26T10:00:%02d.%03dZ","latency_ms":10,"status":200,"id":"g%d-%d"}`, i, j, i, j)
			if _, err := e.js.Publish(ctx, "verdict.events.mixed", []byte(ev), jetstream.WithMsgID(fmt.Sprintf("g%d-%d", i, j))); err != nil {
				t.Fatal(err)
			}
			good++
		}
		if _, err := e.js.Publish(ctx, b.subject, []byte(b.data)); err != nil {
			t.Fatalf("publish %s: %v", b.reason, err)
		}
		want[string(b.reason)]++
	}
	r := &simRouter{e: e, id: "mixed"}
	r.waitCounted()

	got := map[string]int{}
	c, err := e.js.OrderedConsumer(ctx, "VERDICT_REJECTED", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			reason := m.Headers().Get("Verdict-Reason")
			got[reason]++
			if !strings.HasSuffix(m.Subject(), "."+reason) {
				t.Errorf("rejected message on %s has reason %s", m.Subject(), reason)
			}
			if m.Headers().Get("Verdict-Stream-Seq") == "" || m.Headers().Get("Verdict-Error") == "" {
				t.Errorf("rejected message lacks headers: %v", m.Headers())
			}
		}
		if n == 0 {
			break
		}
	}
	for reason, n := range want {
		if got[reason] != n {
			t.Errorf("rejected[%s] = %d, want %d", reason, got[reason], n)
		}
	}
	stats := e.st.in.Stats()
	for reason, n := range want {
		if c := stats.Rejected[telemetry.Reason(reason)]; c != uint64(n) {
			t.Errorf("counter rejected[%s] = %d, want %d", reason, c, n)
		}
	}
	// Every good event counted: one checkpoint after the last delivery.
	deadline := time.Now().Add(5 * time.Second)
	var st engine.Status
	for time.Now().Before(deadline) {
		st = e.status("mixed")
		if st.Requests[0] == int64(good) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Requests[0] != int64(good) || st.Requests[1] != 0 {
		t.Errorf("engine counted %v, want [%d 0]", st.Requests, good)
	}
}

// TestE2EDuplicates publishes every event twice with the same Nats-Msg-Id:
// JetStream drops the copies and nothing is counted twice.
func TestE2EDuplicates(t *testing.T) {
	e := newE2E(t)
	e.startRollout("dup")
	ctx := context.Background()
	const n = 500
	for i := 0; i < n; i++ {
		ev := fmt.Sprintf(`{"rollout":"dup","variant":"baseline","time":"2026-11-26T10:00:01Z","latency_ms":10,"status":200,"id":"d%d"}`, i)
		for k := 0; k < 2; k++ {
			ack, err := e.js.Publish(ctx, "verdict.events.dup", []byte(ev), jetstream.WithMsgID(fmt.Sprintf("d%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			if k == 1 && !ack.Duplicate {
				t.Fatalf("second publish of d%d not flagged duplicate", i)
			}
		}
	}
	(&simRouter{e: e, id: "dup"}).waitCounted()
	deadline := time.Now().Add(5 * time.Second)
	var st engine.Status
	for time.Now().Before(deadline) {
		if st = e.status("dup"); st.Requests[0] == n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Requests[0] != n {
		t.Errorf("engine counted %d requests, want %d", st.Requests[0], n)
	}
}

// TestE2ERestart stops the engine mid-rollout and starts a new one on the
// same server: the decision sequence goes on without a gap or a repeat.
func TestE2ERestart(t *testing.T) {
	e := newE2E(t)
	e.startRollout("rs")
	r := newSimRouter(e, "rs", goodVersion, 4000)
	next := r.run(0, 300, func(rt engine.Route) bool { return rt.Step >= 1 })
	e.stop()
	e.start()
	r.run(next, 600, terminal)
	checkCompletedAcross(t, e, r, "the restart")
}

// checkCompletedAcross checks that the router's rollout completed with
// every step's decision, numbered without a gap or a repeat, and that the
// engine counted exactly what was sent before the end, across what.
func checkCompletedAcross(t *testing.T, e *e2e, r *simRouter, what string) {
	t.Helper()
	e.waitRoute(r.id, terminal)
	ds := e.decisions(r.id)
	checkSeqs(t, ds)
	if got, want := actionsOf(ds), "start promote promote complete"; got != want {
		t.Fatalf("decisions %q, want %q", got, want)
	}
	if st, want := e.status(r.id), r.counted(e.st.eng.Ignored()); st.Requests != want {
		t.Errorf("engine counted %v requests across %s, router sent %v before the end", st.Requests, what, want)
	}
}
