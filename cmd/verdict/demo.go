package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("demo", command{
		summary: "run a live demo: a good and a bad canary on an embedded JetStream server",
		run:     runDemo,
	})
}

const demoUsage = `Usage: verdict demo [--speed X] [--seed N] [--timeout D] [--http]

Starts an embedded JetStream server and the engine, creates two rollouts
under the policy below, and simulates their routers: "checkout" ships a good
canary, "search" a canary with 3x the errors and a slower tail. The routers
follow the weights the engine writes to KV verdict_routes and stream their
traffic as batch telemetry, with simulated time running --speed times faster
than the wall clock. Progress is shown live; at the end a short report says
what was decided, after how many requests, and why. Exits 0 when the good
canary completed and the bad one rolled back.

With --http the demo runs on real HTTP traffic in real time instead: a good
and a bad backend on loopback, the Verdict proxy (the router SDK) in front of
them, and a load generator through it. The proxy's own telemetry makes the
engine roll the bad canary back, and the demo checks that no request reaches
the canary once the rollback has reached the proxy.

Flags:
`

// demoPolicy is the policy both demo rollouts run under.
const demoPolicy = `apiVersion: verdict/v1
kind: Policy
name: demo
steps: [5, 25, 50, 100]
stepDefaults:
  minDuration: 20s
  maxDuration: 10m
  minRequests: 1000
onTimeout: rollback
alpha: 0.05
promoteAlpha: 0.05
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 50%
  - name: latency
    type: latency
    maxIncrease: 10%
  - name: p99
    type: latency-quantile
    quantile: 0.99
    maxIncrease: 25%
`

// version is how a simulated service version behaves.
type version struct {
	errRate  float64 // P(request fails)
	medianMs float64 // median latency
	logSD    float64 // sd of log latency
	tailQ    float64 // latencies above this quantile of the log-normal...
	tailMult float64 // ...are multiplied by this
}

func (v version) sample(r *rand.Rand) (ms float64, failed bool) {
	z := r.NormFloat64()
	ms = v.medianMs * math.Exp(v.logSD*z)
	if v.tailMult > 1 && z > v.tailQ {
		ms *= v.tailMult
	}
	return ms, r.Float64() < v.errRate
}

type demoRollout struct {
	spec     engine.Spec
	baseline version
	canary   version
	rate     float64 // requests per simulated second
	steps    int     // steps of its policy
	expect   engine.State

	weight   atomic.Uint64 // math.Float64bits of the current canary weight
	state    atomic.Uint32 // engine.State
	requests [2]atomic.Int64
	final    atomic.Pointer[engine.Decision]
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	speed := fs.Float64("speed", 5, "simulated seconds per wall-clock second")
	seed := fs.Uint64("seed", 1, "random seed of the simulated traffic")
	timeout := fs.Duration("timeout", 55*time.Second, "give up after this much wall-clock time")
	verbose := fs.Bool("v", false, "log the engine's structured logs to stderr")
	httpMode := fs.Bool("http", false, "real HTTP instead: two backends, the Verdict proxy and a load generator; the bad canary is rolled back on the proxy's telemetry")
	fs.Usage = func() { fmt.Fprint(stderr, demoUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 || *speed <= 0 || *timeout <= 0 {
		fs.Usage()
		return 2
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	run := demo
	if *httpMode {
		run = demoHTTP
	}
	if err := run(ctx, demoOptions{speed: *speed, seed: *seed, timeout: *timeout, log: log}, stdout); err != nil {
		fmt.Fprintln(stderr, "verdict demo:", err)
		return 1
	}
	return 0
}

type demoOptions struct {
	speed   float64
	seed    uint64
	timeout time.Duration
	log     *slog.Logger
}

// startDemoStack parses a demo's policy and runs the engine under it on a
// fresh in-process JetStream server; stop tears all of it down.
func startDemoStack(file, src string, log *slog.Logger) (st *stack, pol *policy.Policy, stop func(), err error) {
	pols, err := policy.Parse(file, []byte(src))
	if err != nil {
		return nil, nil, nil, err
	}
	pol = pols[0]
	dir, err := os.MkdirTemp("", "verdict-demo-")
	if err != nil {
		return nil, nil, nil, err
	}
	ns, nc, err := startEmbedded(embeddedOptions{dir: dir, inProcess: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	st, err = startStack(nc, stackConfig{policies: policy.Set{pol.Name: pol}, log: log})
	if err != nil {
		nc.Close()
		ns.Shutdown()
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	stop = func() {
		_ = st.shutdown(10 * time.Second)
		nc.Close()
		ns.Shutdown()
		os.RemoveAll(dir)
	}
	return st, pol, stop, nil
}

func demo(ctx context.Context, o demoOptions, out io.Writer) error {
	st, pol, stop, err := startDemoStack("demo.yaml", demoPolicy, o.log)
	if err != nil {
		return err
	}
	defer stop()

	good := version{errRate: 0.01, medianMs: 40, logSD: 0.5}
	rollouts := []*demoRollout{
		{spec: engine.Spec{Rollout: "checkout", Policy: "demo", Baseline: "v41", Canary: "v42"},
			baseline: good, canary: good, rate: 4000, expect: engine.StateCompleted},
		{spec: engine.Spec{Rollout: "search", Policy: "demo", Baseline: "v7", Canary: "v8"},
			baseline: good, canary: version{errRate: 0.03, medianMs: 40, logSD: 0.5, tailQ: 1.64, tailMult: 1.6},
			rate: 4000, expect: engine.StateRolledBack},
	}
	for _, r := range rollouts {
		r.steps = len(pol.Steps)
	}
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	decisions := make(chan engine.Decision, 64)
	if err := followDecisions(runCtx, st.js, decisions); err != nil {
		return err
	}
	if err := watchDemoRoutes(runCtx, st.js, rollouts); err != nil {
		return err
	}
	for _, r := range rollouts {
		if err := st.act.PutSpec(runCtx, r.spec); err != nil {
			return fmt.Errorf("start rollout %s: %w", r.spec.Rollout, err)
		}
	}
	start := time.Now()
	clock := func() time.Time {
		return start.Add(time.Duration(float64(time.Since(start)) * o.speed))
	}
	var wg sync.WaitGroup
	for i, r := range rollouts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			simulateRouter(runCtx, st.js, r, clock, rand.New(rand.NewPCG(o.seed, uint64(i))))
		}()
	}
	fmt.Fprintf(out, "verdict demo: two rollouts under policy %q (steps 5%% 25%% 50%% 100%%), simulated time x%g\n", "demo", o.speed)
	fmt.Fprintln(out, "  checkout: v41 -> v42, a good canary")
	fmt.Fprintln(out, "  search:   v7 -> v8, a canary with 3x the errors and a slower tail")
	fmt.Fprintln(out)
	view := newDemoView(out, st, rollouts, clock, start)
	view.run(runCtx, decisions, func() bool {
		for _, r := range rollouts {
			if !engine.State(r.state.Load()).Terminal() {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	return view.report(time.Since(start))
}

// simulateRouter plays one rollout's router: every tick it sends the
// simulated requests of that slice of simulated time, split by the current
// weight with sticky units, as one batch per variant.
func simulateRouter(ctx context.Context, js jetstream.JetStream, r *demoRollout, clock func() time.Time, rng *rand.Rand) {
	const tick = 50 * time.Millisecond
	subject := "verdict.events." + r.spec.Rollout
	builders := [2]*telemetry.Builder{
		telemetry.NewBuilder(r.spec.Rollout, analyzer.Baseline),
		telemetry.NewBuilder(r.spec.Rollout, analyzer.Canary),
	}
	last := clock()
	var n int64
	var carry float64
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := engine.State(r.state.Load())
		if st == 0 || st.Terminal() {
			last = clock()
			if st.Terminal() {
				return
			}
			continue // the engine has not started the rollout yet
		}
		now := clock()
		want := r.rate*now.Sub(last).Seconds() + carry
		count := int(want)
		carry = want - float64(count)
		last = now
		w := math.Float64frombits(r.weight.Load())
		for range count {
			unit := rng.Uint64N(1_000_000)
			v := analyzer.Baseline
			if float64(unit%10_000)/100 < w { // sticky: a unit's slot is fixed
				v = analyzer.Canary
			}
			prof := r.baseline
			if v == analyzer.Canary {
				prof = r.canary
			}
			ms, failed := prof.sample(rng)
			builders[v].Add(ms, failed)
		}
		for v, b := range builders {
			if b.Count() == 0 {
				continue
			}
			n++
			rec := b.Record(fmt.Sprintf("%s-%d", r.spec.Rollout, n), now)
			data, err := telemetry.Encode(&rec)
			if err == nil {
				msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, rec.ID)
				if _, err = js.PublishMsg(ctx, msg); err == nil {
					r.requests[v].Add(b.Count())
				}
			}
			b.Reset()
		}
	}
}

// watchDemoRoutes follows KV verdict_routes, as a router does, and keeps
// each demo rollout's weight and state current.
func watchDemoRoutes(ctx context.Context, js jetstream.JetStream, rs []*demoRollout) error {
	kv, err := js.KeyValue(ctx, "verdict_routes")
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	byID := map[string]*demoRollout{}
	for _, r := range rs {
		byID[r.spec.Rollout] = r
	}
	go func() {
		defer w.Stop()
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rt engine.Route
			if json.Unmarshal(e.Value(), &rt) != nil {
				continue
			}
			if r := byID[rt.Rollout]; r != nil {
				r.weight.Store(math.Float64bits(rt.Weight))
				r.state.Store(uint32(rt.State))
			}
		}
	}()
	return nil
}

// followDecisions sends every decision published from now on to ch.
func followDecisions(ctx context.Context, js jetstream.JetStream, ch chan<- engine.Decision) error {
	c, err := js.OrderedConsumer(ctx, "VERDICT_DECISIONS", jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return err
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		var ev engine.CloudEvent
		if json.Unmarshal(m.Data(), &ev) == nil {
			ev.Data.At = ev.Time
			select {
			case ch <- ev.Data:
			case <-ctx.Done():
			}
		}
	})
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); cc.Stop() }()
	return nil
}

func fmtCount(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
