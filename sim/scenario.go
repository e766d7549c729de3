package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// A Scenario describes a simulated service: how requests arrive and what
// each version would answer. Every request carries both potential outcomes,
// the baseline's and the canary's, drawn from common random numbers, so
// methods that route the same request differently (Verdict following its
// steps, the peers at a fixed share) still see the same stream.
type Scenario struct {
	Name    string
	Summary string // one line for people

	Rate float64 // mean requests per second

	ErrorRate  float64 // baseline per-request error probability
	ErrorRatio float64 // canary error probability / baseline's

	MedianMs     float64 // median of the lognormal latency body
	LogSD        float64 // sd of log latency of the lognormal body
	LatencyRatio float64 // canary latency = baseline latency * LatencyRatio
	TailRatio    float64 // canary latencies above the baseline's p95 are also multiplied by this

	ParetoShare float64 // fraction of requests whose latency is Pareto instead of lognormal
	ParetoMinMs float64 // Pareto scale x_m
	ParetoShape float64 // Pareto shape alpha (tail P(X > x) = (x_m/x)^alpha)

	// Diurnal is the relative amplitude of a sinusoidal traffic rate over a
	// "day" as long as the simulated rollout (the policy's total maximum
	// duration). When it is set, the load also moves both versions' latency
	// median by ±25% and their error rate by ±50% with the same phase: busy
	// hours are slower and fail more, for baseline and canary alike.
	Diurnal float64

	// BurstShare of the baseline error rate comes in bursts: one unit
	// (user, client) fails BurstLen requests in a row, on whichever version
	// it is routed to, like a broken client retrying.
	BurstShare float64
	BurstLen   int

	// SRM multiplies the canary share the router is told (1 = a correct
	// router): a sample ratio mismatch.
	SRM float64
}

// Effects of the load on the metrics in diurnal scenarios (see Diurnal).
const (
	diurnalLatency = 0.25 // relative swing of the latency median at full amplitude
	diurnalErrors  = 0.5  // relative swing of the error rate at full amplitude
)

// base returns the A/A service every scenario starts from: 100 requests
// per second, 1% errors, lognormal latency with median 50 ms and log-sd 1.
func base(name, summary string) Scenario {
	return Scenario{
		Name: name, Summary: summary, Rate: 100,
		ErrorRate: 0.01, ErrorRatio: 1,
		MedianMs: 50, LogSD: 1, LatencyRatio: 1, TailRatio: 1,
		SRM: 1,
	}
}

var scenarios = func() []Scenario {
	heavy := base("aa-heavy-tail", "A/A, heavy-tailed latency: lognormal sigma 1.5 with a 3% Pareto(500 ms, 1.1) tail")
	heavy.LogSD = 1.5
	heavy.ParetoShare, heavy.ParetoMinMs, heavy.ParetoShape = 0.03, 500, 1.1

	diurnal := base("aa-diurnal", "A/A, traffic 100/s ±80% over a day compressed to the rollout; busy hours slower and failing more on both")
	diurnal.Diurnal = 0.8

	bursty := base("aa-bursty", "A/A, half of the 1% errors come in bursts of 20 from one unit, on either version")
	bursty.BurstShare, bursty.BurstLen = 0.5, 20

	e15 := base("errors-x1.5", "canary error rate 1.5% vs 1%")
	e15.ErrorRatio = 1.5
	e3 := base("errors-x3", "canary error rate 3% vs 1%")
	e3.ErrorRatio = 3
	lat := base("latency-x1.2", "canary latency x1.2 (every request)")
	lat.LatencyRatio = 1.2
	p99 := base("p99-x1.5", "canary latencies above the baseline's p95 x1.5: p99 moves ~x1.5, the geometric mean ~2%")
	p99.TailRatio = 1.5
	srm := base("srm", "A/A, but the router sends the canary 1.4x the share it was told")
	srm.SRM = 1.4
	edge := base("at-margins", "canary errors x1.2 and latency x1.1: the edge of the null for margins of 20% and 10%")
	edge.ErrorRatio, edge.LatencyRatio = 1.2, 1.1

	return []Scenario{
		base("aa", "A/A: 1% errors, lognormal latency median 50 ms, log-sd 1, on both versions"),
		heavy, diurnal, bursty, e15, e3, lat, p99, srm, edge,
	}
}()

// Scenarios returns every scenario, in a fixed order.
func Scenarios() []Scenario { return slices.Clone(scenarios) }

// ScenarioNames returns the names of Scenarios, in the same order.
func ScenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.Name
	}
	return names
}

// ErrUnknownScenario is wrapped by the error Lookup returns for a name that
// is not a scenario.
var ErrUnknownScenario = errors.New("unknown scenario")

// Lookup returns the scenario called name.
func Lookup(name string) (Scenario, error) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("%w %q (valid: %s)", ErrUnknownScenario, name, strings.Join(ScenarioNames(), ", "))
}

// AA reports whether the scenario's versions behave the same, so that any
// rollback is a false one. A sample ratio mismatch is not a difference
// between the versions.
func (s *Scenario) AA() bool {
	return s.ErrorRatio == 1 && s.LatencyRatio == 1 && s.TailRatio == 1
}

// Response is what one version answers to one request.
type Response struct {
	LatencyMs float64
	Error     bool
}

// Request is one simulated request with both potential outcomes.
type Request struct {
	At     time.Duration // arrival, since the rollout started
	Unit   uint64        // the unit (user) it comes from, never 0
	Slot   float64       // the unit's sticky hash in [0, 100): canary when below the routed share
	Base   Response      // the answer if routed to the baseline
	Canary Response      // the answer if routed to the canary
}

// Canary reports whether a router told to send share percent of the
// traffic to the canary (and misrouting by the scenario's SRM factor) sends
// r there.
func (s *Scenario) Canary(r *Request, share float64) bool {
	return r.Slot < min(share*s.SRM, 100)
}

// Stream generates a scenario's requests. It is not safe for concurrent
// use.
type Stream struct {
	sc  *Scenario
	rng *rand.Rand
	day float64 // seconds
	t   float64 // seconds since start

	logMedian float64
	p95Log    float64 // log of the lognormal body's p95 at the median's current level, minus logMedian
	burstLeft int
	burstUnit uint64
	burstSlot float64
	errBg     float64 // per-request probability of a non-burst error
	burstP    float64 // per-request probability that a burst starts

	buf  [streamBlock]Request // the current block; buf[next:] not yet returned
	pend [streamBlock]pendingLatency
	next int
}

// NewStream returns the scenario's requests drawn from rng. day is the
// length of a diurnal scenario's day; it is ignored otherwise.
func (s *Scenario) NewStream(rng *rand.Rand, day time.Duration) *Stream {
	st := &Stream{sc: s, rng: rng, day: day.Seconds(), logMedian: math.Log(s.MedianMs), next: streamBlock}
	st.p95Log = s.LogSD * 1.6448536269514722
	st.errBg = s.ErrorRate * (1 - s.BurstShare)
	if s.BurstLen > 0 {
		st.burstP = s.ErrorRate * s.BurstShare / float64(s.BurstLen)
	}
	return st
}

// load returns the diurnal phase in [-1, 1] at t seconds (0 when flat).
func (st *Stream) load(t float64) float64 {
	if st.sc.Diurnal == 0 || st.day <= 0 {
		return 0
	}
	return math.Sin(2 * math.Pi * t / st.day)
}

// streamBlock is how many requests a Stream generates at a time. The
// lognormal latencies' exponentials of a block are computed in one loop,
// where the processor overlaps them, instead of one in each request's
// chain of dependent work: the same values, in less time.
const streamBlock = 64

// pendingLatency is what a request's latency is made from once its block
// is drawn.
type pendingLatency struct {
	logMs float64 // the lognormal draw's log latency; NaN when Pareto
	tail  bool    // above the body's p95 (or Pareto): TailRatio applies
	swing float64 // diurnal phase at arrival
}

// Next fills r with the next request.
func (st *Stream) Next(r *Request) {
	if st.next == len(st.buf) {
		st.fill()
	}
	*r = st.buf[st.next]
	st.next++
}

// fill generates the next block of requests: every random draw in the
// order one request at a time would make them, then the latencies.
func (st *Stream) fill() {
	sc := st.sc
	for i := range st.buf {
		st.draw(&st.buf[i], &st.pend[i])
	}
	for i := range st.buf {
		r, p := &st.buf[i], &st.pend[i]
		lat := r.Base.LatencyMs // Pareto
		if !math.IsNaN(p.logMs) {
			lat = math.Exp(p.logMs)
		}
		lat *= 1 + diurnalLatency*p.swing
		r.Base.LatencyMs = lat
		c := lat * sc.LatencyRatio
		if p.tail && sc.TailRatio != 1 {
			c *= sc.TailRatio
		}
		r.Canary.LatencyMs = c
	}
	st.next = 0
}

// draw makes r's random draws; fill completes its latencies from p.
func (st *Stream) draw(r *Request, p *pendingLatency) {
	sc, rng := st.sc, st.rng
	phase := st.load(st.t)
	rate := sc.Rate * (1 + sc.Diurnal*phase)
	st.t += rng.ExpFloat64() / math.Max(rate, sc.Rate*0.01)
	r.At = time.Duration(st.t * float64(time.Second))

	p.swing = phase // 0 unless diurnal
	// Latency: the same draw for both versions.
	if sc.ParetoShare > 0 && rng.Float64() < sc.ParetoShare {
		r.Base.LatencyMs = sc.ParetoMinMs * math.Pow(1-rng.Float64(), -1/sc.ParetoShape)
		p.logMs, p.tail = math.NaN(), true
	} else {
		z := rng.NormFloat64()
		p.logMs = st.logMedian + sc.LogSD*z
		p.tail = sc.LogSD*z > st.p95Log
	}

	// Errors and units.
	if st.burstLeft == 0 && st.burstP > 0 && rng.Float64() < st.burstP {
		st.burstLeft = sc.BurstLen
		st.burstUnit = rng.Uint64() | 1
		st.burstSlot = rng.Float64() * 100
	}
	if st.burstLeft > 0 {
		st.burstLeft--
		r.Unit, r.Slot = st.burstUnit, st.burstSlot
		r.Base.Error, r.Canary.Error = true, true
		return
	}
	r.Unit = rng.Uint64() | 1
	r.Slot = rng.Float64() * 100
	pe := st.errBg * (1 + diurnalErrors*p.swing)
	u := rng.Float64()
	r.Base.Error = u < pe
	r.Canary.Error = u < pe*sc.ErrorRatio
}
