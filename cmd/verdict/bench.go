package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/bench"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("bench", command{summary: "measure ingest, decision latency and memory on an embedded server", run: runBench})
}

const benchUsage = `Usage: verdict bench [flags]

Measures, in one run on one embedded JetStream server (reached over
loopback TCP, as by verdict serve), each on fresh streams and buckets:

  - plain pull consumers with the engine's stream and consumer settings
    that only acknowledge: one on ingest's own pull protocol (two pull
    requests outstanding, AckAll per batch), the reference of the ratio;
    and, for comparison, Fetch with AckAll, with explicit acks and with
    decoding, and nats.go's Consumer.Messages;
  - the engine's whole path for single JSON events of about 200 bytes
    (consume, decode, validate, analyse, acknowledge) with several numbers
    of active rollouts, and its ratio to the plain consumer (each run of
    that consumer is followed by ingest's runs, so the two sides of a
    ratio are measured back to back), with the process's CPU time per
    event and the garbage collections completed in each;
  - observations per second through the batch form;
  - decision latency: from publishing the event that tips a rollback to
    the decision reaching a subscriber, under background telemetry that
    stands in for routers (each event acknowledged by the stream, the
    acknowledgements only counted, so the publisher costs little CPU);
  - memory per active rollout;
  - the router-side emitter's publish rate.
The full run takes two to three minutes; --quick takes seconds.
Telemetry is published before a consume measurement starts, so the figures
are not bounded by publishing. Progress goes to stderr.

Flags:
`

// benchPolicy runs every bench rollout. With steps [50, 100] the variants'
// 50/50 split matches the weight, so the sample ratio test stays quiet;
// an hour's minimum duration keeps the synthetic A/A telemetry from
// promoting, so every rollout stays active for the whole run.
const benchPolicy = `apiVersion: verdict/v1
kind: Policy
name: bench
steps: [50, 100]
stepDefaults:
  minDuration: 1h
  maxDuration: 2h
  minRequests: 1000
onTimeout: hold
alpha: 0.05
promoteAlpha: 0.05
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 20%
  - name: latency
    type: latency
    maxIncrease: 10%
  - name: p99
    type: latency-quantile
    quantile: 0.99
    maxIncrease: 25%
`

type benchOptions struct {
	events     int     // single events per consume measurement
	counts     []int   // active rollouts of the ingest measurements
	batches    int     // batch messages of the batched measurement
	obsPerMsg  int     // observations per batch message
	samples    int     // decision latency samples
	background float64 // background telemetry during the latency run, events/s
	emit       int     // events through the router emitter
	warmup     int     // events per rollout consumed before an ingest measurement
	cpuprofile string  // profiles of the single-event ingest windows, the first raw pull and the live run
	memprofile string  // heap profile with the most rollouts active
	only       map[string]bool
	liveFor    time.Duration // duration of the live measurement
	reps       int           // repetitions of the cheap consume measurements; the median counts
	progress   io.Writer
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	events := fs.Int("events", 200000, "single events per consume measurement")
	warmup := fs.Int("warmup", 0, "single events per rollout consumed before each ingest measurement")
	quick := fs.Bool("quick", false, "small sizes (seconds, for tests): 5000 events, 1/10/100 rollouts")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cpuprofile := fs.String("cpuprofile", "", "write CPU profiles of the single-event ingest windows to `FILE`.<rollouts>, of the first run of the plain consumer with ingest's pull to FILE.raw, and of the live run to FILE.live")
	memprofile := fs.String("memprofile", "", "write a heap profile with the most rollouts active to `FILE`")
	rollouts := fs.String("rollouts", "", "comma-separated active rollout `counts` of the ingest measurements (default 1,100,10000)")
	background := fs.Float64("background", 50000, "background telemetry during the latency measurement, `events/s`")
	reps := fs.Int("reps", 5, "repeat each plain-consumer measurement and each ingest measurement `N` times and report the median")
	only := fs.String("only", "", "run only these comma-separated `measurements`: raw, ingest, batched, latency, live, emitter")
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 || *events <= 0 || *warmup < 0 {
		fs.Usage()
		return 2
	}
	o := benchOptions{
		events: *events, warmup: *warmup, counts: []int{1, 100, 10000}, batches: 20000, obsPerMsg: 1000,
		samples: 200, background: 50000, emit: 200000, liveFor: 10 * time.Second, cpuprofile: *cpuprofile, progress: stderr,
	}
	o.memprofile = *memprofile
	o.reps = max(*reps, 1)
	if *quick {
		o.counts, o.batches, o.samples, o.background, o.emit = []int{1, 10, 100}, 500, 10, 5000, 5000
		o.liveFor = time.Second
		if !flagSet(fs, "reps") {
			o.reps = 1
		}
		if !flagSet(fs, "events") {
			o.events = 5000
		}
	}
	if flagSet(fs, "background") {
		o.background = *background
	}
	if *rollouts != "" {
		o.counts = nil
		for _, f := range strings.Split(*rollouts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				fmt.Fprintf(stderr, "verdict bench: --rollouts %q: want positive counts\n", *rollouts)
				return 2
			}
			o.counts = append(o.counts, n)
		}
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, f := range strings.Split(*only, ",") {
			name := strings.TrimSpace(f)
			if !slices.Contains(benchSteps, name) {
				fmt.Fprintf(stderr, "verdict bench: --only %q: want some of %s\n", *only, strings.Join(benchSteps, ", "))
				return 2
			}
			o.only[name] = true
		}
	}
	res, err := runBenchmarks(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "verdict bench:", err)
		return 1
	}
	if *asJSON {
		if err := bench.WriteJSON(stdout, res); err != nil {
			fmt.Fprintln(stderr, "verdict bench:", err)
			return 1
		}
		return 0
	}
	bench.WriteTable(stdout, res, o.counts)
	return 0
}

// benchSteps are the measurements, in the order they run.
var benchSteps = []string{"raw", "ingest", "batched", "latency", "live", "emitter"}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// bencher holds what every measurement shares: one embedded server, the
// engine's connection and a separate publisher connection (a router).
type bencher struct {
	o      benchOptions
	nc     *nats.Conn // the engine's, as in serve
	pub    *nats.Conn // publishers'
	pubJS  jetstream.JetStream
	pol    policy.Set
	serial int // names each measurement's streams and buckets
}

func runBenchmarks(ctx context.Context, o benchOptions) (*bench.Result, error) {
	start := time.Now()
	res := &bench.Result{Machine: bench.DescribeMachine(), Events: o.events, Reps: o.reps, Warmup: o.warmup,
		IngestPerSec: map[string]float64{}, IngestCPUPerEventUs: map[string]float64{}, Ratio: map[string]float64{}, RatioRuns: map[string][]float64{}, IngestGCRuns: map[string][]int{},
		IngestGCCPURuns:  map[string][]float64{},
		RatioExplicitAck: map[string]float64{}, IngestIgnored: map[string]int64{},
		IngestMsgsPerBatch: map[string]float64{}}
	res.MessageBytes = len(bench.SingleEvent(nil, "bench-00001", 0, time.Now()))
	pols, err := policy.Parse("bench.yaml", []byte(benchPolicy))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "verdict-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ns, nc, err := startEmbedded(embeddedOptions{dir: dir, listen: "127.0.0.1:-1"})
	if err != nil {
		return nil, err
	}
	defer ns.Shutdown()
	defer nc.Close()
	ns.SetLoggerV2(bench.ServerLog{W: o.progress}, false, false, false)
	pub, err := nats.Connect(ns.ClientURL(), nats.Name("verdict-bench-publisher"))
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	pubJS, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	b := &bencher{o: o, nc: nc, pub: pub, pubJS: pubJS, pol: policy.Set{"bench": pols[0]}}

	steps := map[string]func(context.Context, *bench.Result) error{
		"raw": b.raw, "ingest": b.ingest, "batched": b.batched,
		"latency": b.latency, "live": b.live, "emitter": b.emitter,
	}
	for _, name := range benchSteps {
		if o.only != nil && !o.only[name] {
			continue
		}
		b.logf("%s... (load %v)", name, bench.LoadAvg())
		if err := steps[name](ctx, res); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for k, v := range res.IngestPerSec {
		if res.RawConsumePerSec > 0 {
			res.Ratio[k] = bench.Rounded(v / res.RawConsumePerSec)
		}
		if res.RawConsumeExplicitAckPerSec > 0 {
			res.RatioExplicitAck[k] = bench.Rounded(v / res.RawConsumeExplicitAckPerSec)
		}
	}
	res.Machine.LoadAfter = bench.LoadAvg()
	res.Revision = bench.Revision()
	res.Seconds = bench.Rounded(time.Since(start).Seconds())
	return res, nil
}

func (b *bencher) logf(format string, args ...any) {
	fmt.Fprintf(b.o.progress, "bench: "+format+"\n", args...)
}

// names returns fresh stream and bucket names for one measurement.
func (b *bencher) names() (ingest.Config, actuator.Config) {
	b.serial++
	n := strconv.Itoa(b.serial)
	ic := ingest.DefaultConfig()
	ic.Stream, ic.SubjectPrefix = "BENCH_EVENTS_"+n, "bench"+n+".events"
	ic.RejectedStream, ic.RejectedPrefix = "BENCH_REJECTED_"+n, "bench"+n+".rejected"
	ac := actuator.DefaultConfig()
	ac.DecisionStream, ac.DecisionPrefix = "BENCH_DECISIONS_"+n, "bench"+n+".decisions"
	ac.RoutesBucket, ac.RolloutsBucket, ac.StateBucket = "bench_routes_"+n, "bench_rollouts_"+n, "bench_state_"+n
	return ic, ac
}

// drop deletes a measurement's streams and buckets, so that the next one
// starts on an empty server and memory figures do not include them.
func (b *bencher) drop(ctx context.Context, ic ingest.Config, ac *actuator.Config) {
	js, _ := jetstream.New(b.nc)
	_ = js.DeleteStream(ctx, ic.Stream)
	_ = js.DeleteStream(ctx, ic.RejectedStream)
	if ac != nil {
		_ = js.DeleteStream(ctx, ac.DecisionStream)
		for _, kv := range []string{ac.RoutesBucket, ac.RolloutsBucket, ac.StateBucket} {
			_ = js.DeleteKeyValue(ctx, kv)
		}
	}
}

// publishSingles pre-publishes n single events, round robin over ids.
func (b *bencher) publishSingles(ctx context.Context, ic ingest.Config, ids []string, n int) error {
	t := time.Now()
	return bench.Publish(ctx, b.pubJS, n, func(i int) (string, []byte) {
		id := ids[i%len(ids)]
		return ic.SubjectPrefix + "." + id, bench.SingleEvent(nil, id, i/len(ids), t.Add(time.Duration(i)*time.Microsecond))
	})
}

// raw measures the plain consumers (ingest's pull, Fetch with AckAll or
// explicit acks, Fetch and decode, Consumer.Messages), each on a
// fresh stream created with the engine's stream settings.
func (b *bencher) raw(ctx context.Context, res *bench.Result) error {
	decode := func(m jetstream.Msg) {
		if _, err := telemetry.Decode(m.Data()); err != nil {
			panic(err) // the bench's own events
		}
	}
	for _, v := range []struct {
		name string
		out  *float64
		run  func(context.Context, jetstream.JetStream, ingest.Config, int) (float64, error)
	}{
		{"ingest's pull, AckAll", &res.RawConsumePerSec, bench.RawPull},
		{"Fetch, AckAll", &res.RawConsumeFetchPerSec, func(ctx context.Context, js jetstream.JetStream, ic ingest.Config, n int) (float64, error) {
			return bench.RawConsume(ctx, js, ic, n, false, nil)
		}},
		{"Fetch, explicit acks", &res.RawConsumeExplicitAckPerSec, func(ctx context.Context, js jetstream.JetStream, ic ingest.Config, n int) (float64, error) {
			return bench.RawConsume(ctx, js, ic, n, true, nil)
		}},
		{"Fetch, AckAll + decode", &res.RawConsumeDecodePerSec, func(ctx context.Context, js jetstream.JetStream, ic ingest.Config, n int) (float64, error) {
			return bench.RawConsume(ctx, js, ic, n, false, decode)
		}},
		{"Consumer.Messages", &res.RawConsumeStreamPerSec, bench.RawStream},
	} {
		if v.out == &res.RawConsumePerSec && b.paired() {
			continue // measured by ingest, each run next to ingest's
		}
		var rates, cpus []float64
		for rep := range b.o.reps {
			profile := ""
			if rep == 0 && v.out == &res.RawConsumePerSec && b.o.cpuprofile != "" {
				profile = b.o.cpuprofile + ".raw"
			}
			rate, cpu, err := b.rawOnce(ctx, v.run, profile)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			rates, cpus = append(rates, rate), append(cpus, cpu)
			b.logf("  raw consume, %s: %.0f msgs/s, %.2f µs CPU/event (load %v)", v.name, rate, cpu, bench.LoadAvg())
		}
		*v.out = bench.Rounded(bench.Percentile(rates, 0.5))
		if v.out == &res.RawConsumePerSec {
			res.RawCPUPerEventUs = bench.Rounded(bench.Percentile(cpus, 0.5))
		}
	}
	return nil
}

// rawOnce runs one plain consumer on a fresh stream created with the
// engine's stream settings and holding the bench's single events, with a
// CPU profile of the consumer's run into profile unless it is "". It
// returns the rate and the process's CPU time per event during the run,
// in µs.
func (b *bencher) rawOnce(ctx context.Context, run func(context.Context, jetstream.JetStream, ingest.Config, int) (float64, error), profile string) (rate, cpuPerEvent float64, err error) {
	js, ic, drop, err := b.freshStream(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer drop()
	if err := b.publishSingles(ctx, ic, bench.RolloutIDs("bench", 1), b.o.events); err != nil {
		return 0, 0, err
	}
	if profile != "" {
		stopProfile, err := cpuProfile(profile)
		if err != nil {
			return 0, 0, err
		}
		defer stopProfile()
	}
	c0 := bench.ProcessCPU()
	rate, err = run(ctx, js, ic, b.o.events)
	return rate, usPerEvent(bench.ProcessCPU()-c0, b.o.events), err
}

// usPerEvent is d spread over n events, in µs.
func usPerEvent(d time.Duration, n int) float64 {
	return float64(d) / float64(time.Microsecond) / float64(n)
}

// freshStream sets up a telemetry stream of its own, with the engine's
// stream settings; drop deletes it.
func (b *bencher) freshStream(ctx context.Context) (js jetstream.JetStream, ic ingest.Config, drop func(), err error) {
	ic, _ = b.names()
	if js, err = jetstream.New(b.nc); err != nil {
		return nil, ic, nil, err
	}
	if err := ingest.Setup(ctx, js, ic); err != nil {
		return nil, ic, nil, err
	}
	return js, ic, func() { b.drop(ctx, ic, nil) }, nil
}

// engineRun is one engine, started with startStack on fresh streams and
// buckets, whose rollouts have all started.
type engineRun struct {
	st        *stack
	ic        ingest.Config
	ac        actuator.Config
	sub       *nats.Subscription // every decision
	decisions chan bench.Arrival // decisions other than start
	started   time.Duration      // until every rollout published its start decision
}

// startEngine writes a spec per id with the actuator, starts the engine
// the way serve does, waits until every rollout has published its start
// decision (so its owner runs) and stops ingest, so the caller can
// pre-publish telemetry and then call consume.
func (b *bencher) startEngine(ctx context.Context, ids []string) (*engineRun, error) {
	ic, ac := b.names()
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, err
	}
	if err := actuator.Setup(ctx, js, ac); err != nil {
		return nil, err
	}
	act, err := actuator.New(js, ac)
	if err != nil {
		return nil, err
	}
	r := &engineRun{ic: ic, ac: ac, decisions: make(chan bench.Arrival, 1024)}
	var starts atomic.Int64
	r.sub, err = b.pub.Subscribe(ac.DecisionPrefix+".>", func(m *nats.Msg) {
		at := time.Now()
		var ev engine.CloudEvent
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		if ev.Data.Action == engine.ActionStart {
			starts.Add(1)
			return
		}
		select {
		case r.decisions <- bench.Arrival{Decision: ev.Data, At: at}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := bench.PutSpecs(ctx, act, "bench", ids); err != nil {
		return nil, err
	}
	r.st, err = startStack(b.nc, stackConfig{ingest: ic, actuator: ac, policies: b.pol})
	if err != nil {
		return nil, err
	}
	for starts.Load() < int64(len(ids)) {
		if time.Since(t0) > 5*time.Minute || ctx.Err() != nil {
			r.stop(ctx, b)
			return nil, fmt.Errorf("%d of %d rollouts started", starts.Load(), len(ids))
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.started = time.Since(t0)
	for _, id := range ids {
		if !r.st.eng.Known(id) {
			return nil, fmt.Errorf("rollout %s not known to the engine", id)
		}
	}
	// Stop the ingester that startStack started on the empty stream; a
	// fresh one is started by consume once the telemetry is in.
	r.st.stopIngest()
	if err := <-r.st.ingestDone; err != nil {
		return nil, fmt.Errorf("stop ingest: %w", err)
	}
	r.st.ingestDone <- nil // for shutdown
	return r, nil
}

// pause stops the running ingester; resume starts the next.
func (r *engineRun) pause() {
	r.st.stopIngest()
	err := <-r.st.ingestDone
	r.st.ingestDone <- err
}

// resume starts a fresh ingester on the engine, as startStack does.
func (r *engineRun) resume() *ingest.Ingester {
	in := ingest.New(r.st.js, r.ic, r.st.eng, nil)
	ictx, cancel := context.WithCancel(context.Background())
	r.st.in, r.st.stopIngest = in, cancel
	<-r.st.ingestDone
	done := r.st.ingestDone
	go func() { done <- in.Run(ictx) }()
	return in
}

// window is what consume measured: the messages per second, the process's
// CPU time per message meanwhile, in µs, the garbage collections completed
// meanwhile and the collector's share of that CPU time per message, in µs.
type window struct {
	rate, cpu float64
	gcs       int
	gcCPU     float64
}

// consume starts a fresh ingester on the engine and measures it until it
// has accepted (delivered and acknowledged) n messages.
func (r *engineRun) consume(ctx context.Context, n int, profile string) (window, error) {
	if profile != "" {
		stopProfile, err := cpuProfile(profile)
		if err != nil {
			return window{}, err
		}
		defer stopProfile()
	}
	start, c0, g0, gc0 := time.Now(), bench.ProcessCPU(), bench.GCCycles(), bench.GCCPU()
	in := r.resume()
	if err := bench.WaitHandled(ctx, in, n); err != nil {
		return window{}, err
	}
	return window{
		rate:  float64(n) / time.Since(start).Seconds(),
		cpu:   usPerEvent(bench.ProcessCPU()-c0, n),
		gcs:   int(bench.GCCycles() - g0),
		gcCPU: usPerEvent(bench.GCCPU()-gc0, n),
	}, nil
}

// cpuProfile starts a CPU profile into the file name; call the function
// it returns to stop it.
func cpuProfile(name string) (func(), error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func (r *engineRun) stop(ctx context.Context, b *bencher) {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	if r.st != nil {
		if err := r.st.shutdown(time.Minute); err != nil {
			b.logf("  engine shutdown: %v", err)
		}
	}
	b.drop(ctx, r.ic, &r.ac)
}

// paired reports whether both the plain consumers and ingest run: then
// ingest measures the ratio's denominator itself, next to its own runs.
func (b *bencher) paired() bool {
	return b.o.only == nil || (b.o.only["raw"] && b.o.only["ingest"])
}

// ingest measures single events through the engine for each rollout
// count, and memory per rollout with the largest count. Repetition by
// repetition: the plain consumer with ingest's pull (when paired), then
// ingest at each rollout count, so each ratio's two sides are measured
// seconds apart, and a change in the machine's speed moves both.
func (b *bencher) ingest(ctx context.Context, res *bench.Result) error {
	largest := b.o.counts[len(b.o.counts)-1]
	var raw, rawCPU []float64
	rates, cpus := map[int][]float64{}, map[int][]float64{}
	for rep := range b.o.reps { // the memory figure is taken on the largest count's last
		rawRate := 0.0
		if b.paired() {
			profile := ""
			if rep == 0 && b.o.cpuprofile != "" {
				profile = b.o.cpuprofile + ".raw"
			}
			var err error
			var cpu float64
			if rawRate, cpu, err = b.rawOnce(ctx, bench.RawPull, profile); err != nil {
				return fmt.Errorf("ingest's pull, AckAll: %w", err)
			}
			raw, rawCPU = append(raw, rawRate), append(rawCPU, cpu)
			b.logf("  raw consume, ingest's pull, AckAll: %.0f msgs/s, %.2f µs CPU/event (load %v)", rawRate, cpu, bench.LoadAvg())
		}
		for _, n := range b.o.counts {
			rate, cpu, err := b.ingestOnce(ctx, res, n, n == largest && rep == b.o.reps-1)
			if err != nil {
				return err
			}
			rates[n], cpus[n] = append(rates[n], rate), append(cpus[n], cpu)
			if rawRate > 0 {
				k := strconv.Itoa(n)
				res.RatioRuns[k] = append(res.RatioRuns[k], bench.Rounded(rate/rawRate))
			}
		}
	}
	if len(raw) > 0 {
		res.RawConsumePerSec = bench.Rounded(bench.Percentile(raw, 0.5))
		res.RawCPUPerEventUs = bench.Rounded(bench.Percentile(rawCPU, 0.5))
	}
	for n, r := range rates {
		res.IngestPerSec[strconv.Itoa(n)] = bench.Rounded(bench.Percentile(r, 0.5))
		res.IngestCPUPerEventUs[strconv.Itoa(n)] = bench.Rounded(bench.Percentile(cpus[n], 0.5))
	}
	return nil
}

// ingestOnce measures n rollouts once on a fresh engine; with memory set
// it also takes the memory figures.
func (b *bencher) ingestOnce(ctx context.Context, res *bench.Result, n int, memory bool) (rate, cpuPerEvent float64, err error) {
	before, _ := bench.Heap()
	ids := bench.RolloutIDs("bench", n)
	r, err := b.startEngine(ctx, ids)
	if err != nil {
		return 0, 0, err
	}
	defer r.stop(ctx, b)
	if w := b.o.warmup * n; w > 0 {
		if err := b.publishSingles(ctx, r.ic, ids, w); err != nil {
			return 0, 0, err
		}
		if _, err := r.consume(ctx, w, ""); err != nil {
			return 0, 0, err
		}
		r.pause()
	}
	ignored := r.st.eng.Ignored()
	if err := b.publishSingles(ctx, r.ic, ids, b.o.events); err != nil {
		return 0, 0, err
	}
	profile := ""
	if b.o.cpuprofile != "" {
		profile = b.o.cpuprofile + "." + strconv.Itoa(n)
	}
	w, err := r.consume(ctx, b.o.events, profile)
	if err != nil {
		return 0, 0, err
	}
	rate, cpuPerEvent = w.rate, w.cpu
	k := strconv.Itoa(n)
	res.IngestGCRuns[k] = append(res.IngestGCRuns[k], w.gcs)
	res.IngestGCCPURuns[k] = append(res.IngestGCCPURuns[k], bench.Rounded(w.gcCPU))
	res.IngestIgnored[k] += r.st.eng.Ignored() - ignored
	if st := r.st.in.Stats(); st.Batches > 0 {
		res.IngestMsgsPerBatch[k] = bench.Rounded(float64(st.Accepted) / float64(st.Batches))
	}
	b.logf("  %d rollouts: started in %v, %.0f events/s, %.2f µs CPU/event (GC %.2f in %d cycles), %.0f msgs/batch (load %v)",
		n, r.started.Round(time.Millisecond), rate, cpuPerEvent, w.gcCPU, w.gcs, res.IngestMsgsPerBatch[k], bench.LoadAvg())
	if !memory {
		return rate, cpuPerEvent, nil
	}
	// Every rollout is active and has data. The telemetry stream goes
	// first, so its cached blocks are not counted.
	js, _ := jetstream.New(b.nc)
	_ = js.DeleteStream(ctx, r.ic.Stream)
	after, sys := bench.Heap()
	if b.o.memprofile != "" {
		if err := bench.WriteHeapProfile(b.o.memprofile); err != nil {
			return 0, 0, err
		}
	}
	res.ProcessRSSBytes = bench.RSS()
	res.Rollouts = n
	res.BytesPerRollout = bench.Rounded(float64(int64(after)-int64(before)) / float64(n))
	res.ProcessSysBytes = sys
	res.RolloutStartSec = bench.Rounded(r.started.Seconds())
	return rate, cpuPerEvent, nil
}

// batched measures observations per second through the batch form: one
// rollout, batch messages of alternating variants.
func (b *bencher) batched(ctx context.Context, res *bench.Result) error {
	ids := bench.RolloutIDs("batch", 1)
	r, err := b.startEngine(ctx, ids)
	if err != nil {
		return err
	}
	defer r.stop(ctx, b)
	var msgs [2][]byte
	for v := range msgs {
		if msgs[v], err = bench.BatchEvent(ids[0], analyzer.Variant(v), b.o.obsPerMsg, time.Now()); err != nil {
			return err
		}
	}
	err = bench.Publish(ctx, b.pubJS, b.o.batches, func(i int) (string, []byte) {
		return r.ic.SubjectPrefix + "." + ids[0], msgs[i&1]
	})
	if err != nil {
		return err
	}
	w, err := r.consume(ctx, b.o.batches, "")
	if err != nil {
		return err
	}
	rate := w.rate
	res.ObsPerBatch = b.o.obsPerMsg
	res.BatchedMsgsPerSec = bench.Rounded(rate)
	res.BatchedObsPerSec = bench.Rounded(rate * float64(b.o.obsPerMsg))
	b.logf("  %d-byte batches: %.0f msgs/s, %.0f obs/s (load %v)", len(msgs[0]), rate, rate*float64(b.o.obsPerMsg), bench.LoadAvg())
	return nil
}

// live runs the plain AckAll consumer for 10s while the background load
// of the latency measurement is published: whether this machine can carry
// that load in and out at all, before any of Verdict's work.
func (b *bencher) live(ctx context.Context, res *bench.Result) error {
	js, ic, drop, err := b.freshStream(ctx)
	if err != nil {
		return err
	}
	defer drop()
	stop := make(chan struct{})
	bgDone := make(chan backgroundDone, 1)
	go func() {
		load, err := bench.Background(b.pub, ic.SubjectPrefix, bench.RolloutIDs("bg", 100), b.o.background, stop)
		bgDone <- backgroundDone{load.PerSec, err}
	}()
	if b.o.cpuprofile != "" {
		stopProfile, err := cpuProfile(b.o.cpuprofile + ".live")
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	start := time.Now()
	time.AfterFunc(b.o.liveFor, func() { close(stop) })
	got, backlog, err := bench.RawLive(ctx, js, ic, stop)
	el := time.Since(start)
	bgRes := <-bgDone
	if err != nil {
		return err
	}
	if bgRes.err != nil {
		return bgRes.err
	}
	bg := bgRes.rate
	res.RawLivePerSec = bench.Rounded(float64(got) / el.Seconds())
	res.RawLiveBacklog = backlog
	res.RawLivePublishPerSec = bench.Rounded(bg)
	b.logf("  raw consumer under %.0f events/s published: %.0f msgs/s consumed, backlog %d (load %v)",
		bg, res.RawLivePerSec, backlog, bench.LoadAvg())
	return nil
}

// backgroundDone is what bench.Background returned.
type backgroundDone struct {
	rate float64
	err  error
}

// emitter measures the router-side Emitter on a fresh stream.
func (b *bencher) emitter(ctx context.Context, res *bench.Result) error {
	_, ic, drop, err := b.freshStream(ctx)
	if err != nil {
		return err
	}
	defer drop()
	rate, err := bench.Emit(ctx, b.nc.ConnectedUrl(), ic.SubjectPrefix, b.o.emit)
	if err != nil {
		return err
	}
	res.PublishPerSec = bench.Rounded(rate)
	b.logf("  emitter: %.0f events/s (load %v)", rate, bench.LoadAvg())
	return nil
}

// latency measures decision latency: rollouts primed up to one event
// before a rollback (bench.TipSequence), then tipped one at a time while
// background rollouts receive telemetry at the target rate.
func (b *bencher) latency(ctx context.Context, res *bench.Result) error {
	bg := bench.RolloutIDs("bg", 100)
	tips := bench.RolloutIDs("tip", b.o.samples)
	r, err := b.startEngine(ctx, append(slices.Clone(bg), tips...))
	if err != nil {
		return err
	}
	defer r.stop(ctx, b)
	var prime [][]byte
	var subjects []string
	tipMsgs := make([][]byte, len(tips))
	for i, id := range tips {
		evs, tip, err := bench.TipSequence(id, b.pol["bench"], time.Now(), 10000)
		if err != nil {
			return err
		}
		for _, e := range evs[:tip] {
			prime, subjects = append(prime, e), append(subjects, r.ic.SubjectPrefix+"."+id)
		}
		tipMsgs[i] = evs[tip]
	}
	err = bench.Publish(ctx, b.pubJS, len(prime), func(i int) (string, []byte) { return subjects[i], prime[i] })
	if err != nil {
		return err
	}
	in := r.resume()
	if err := bench.WaitHandled(ctx, in, len(prime)); err != nil {
		return err
	}
	primed := in.Stats()

	tipConn, err := nats.Connect(b.nc.ConnectedUrl(), nats.Name("verdict-bench-tip"))
	if err != nil {
		return err
	}
	defer tipConn.Close()
	tipJS, err := jetstream.New(tipConn)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	bgDone := make(chan backgroundDone, 1)
	go func() {
		load, err := bench.Background(b.pub, r.ic.SubjectPrefix, bg, b.o.background, stop)
		bgDone <- backgroundDone{load.PerSec, err}
	}()
	time.Sleep(time.Second) // steady state
	stream, err := r.st.js.Stream(ctx, r.ic.Stream)
	if err != nil {
		return err
	}
	lat, stored, missed, err := bench.Tip(ctx, tipJS, stream, r.ic.SubjectPrefix, tips, tipMsgs, r.decisions)
	close(stop)
	bgRes := <-bgDone
	if err != nil {
		return err
	}
	if bgRes.err != nil {
		return bgRes.err
	}
	bgRate := bgRes.rate
	if st := in.Stats(); st.Batches > primed.Batches {
		res.BackgroundMsgsPerBatch = bench.Rounded(float64(st.Accepted-primed.Accepted) / float64(st.Batches-primed.Batches))
	}
	res.BackgroundTargetPerSec = b.o.background
	res.BackgroundPerSec = bench.Rounded(bgRate)
	if c, err := r.st.js.Consumer(ctx, r.ic.Stream, r.ic.Consumer); err == nil {
		if info, err := c.Info(ctx); err == nil {
			res.BackgroundBacklog = info.NumPending + uint64(info.NumAckPending)
		}
	}
	res.DecisionSamples = len(lat)
	res.DecisionsMissed = missed
	res.DecisionLatencyP50Ms = bench.Rounded(bench.Percentile(lat, 0.50))
	res.DecisionLatencyP99Ms = bench.Rounded(bench.Percentile(lat, 0.99))
	res.DecisionLatencyMaxMs = bench.Rounded(bench.Percentile(lat, 1))
	res.TipStoredP50Ms = bench.Rounded(bench.Percentile(stored, 0.50))
	res.TipStoredP99Ms = bench.Rounded(bench.Percentile(stored, 0.99))
	b.logf("  decision latency p50 %.1fms p99 %.1fms (until stored: p50 %.1fms p99 %.1fms), %d missed, background %.0f/s, backlog %d, %.1f msgs/batch (load %v)",
		res.DecisionLatencyP50Ms, res.DecisionLatencyP99Ms, res.TipStoredP50Ms, res.TipStoredP99Ms, missed, res.BackgroundPerSec, res.BackgroundBacklog,
		res.BackgroundMsgsPerBatch, bench.LoadAvg())
	return nil
}
