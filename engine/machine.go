package engine

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/internal/prefetch"
	"github.com/verdict-dev/verdict/policy"
)

// EvalEvery is how many observations a rollout takes between two
// evaluations of the decision rule. Anytime-valid tests allow any schedule
// of looks; a count-based one keeps serve and replay identical.
const EvalEvery = 100

// SRMGrace is how long after a step starts (rollout time) the routers have
// to apply the new weight: the sample ratio mismatch test of a step counts
// only the requests after it (or after half the step's minimum duration,
// when that is shorter), so requests still routed at the old weight during
// the switch are not taken for a mismatch.
const SRMGrace = 10 * time.Second

// Machine is one rollout's state machine: it walks the rollout through the
// policy's steps, asks the analyzer at each evaluation and emits numbered
// decisions with their evidence. It is pure: no I/O, no wall clock. Time
// comes in with the observations (event time) and through Advance, so the
// same inputs give the same decisions, byte for byte. serve, replay and
// simulate all drive a Machine.
//
// A Machine is not safe for concurrent use; one goroutine owns it.
type Machine struct {
	spec Spec
	pol  *policy.Policy
	an   *analyzer.Analyzer

	state     State
	paused    bool
	step      int
	weight    float64
	seq       uint64
	stepStart time.Time
	now       time.Time
	started   bool

	sinceEval int
	srmAt     time.Time // when the step's SRM test restarts; zero once it has
	evalAt    time.Time // earliest rollout time at which a deadline needs an evaluation
	held      string    // cause of the last hold decision in this step, to say it once

	requests [2]int64 // requests counted per variant over the whole rollout

	fields []string           // custom fields, in analyzer order
	valbuf []float64          // reused for Observation.Values
	sumbuf []analyzer.Summary // reused for Batch.Values
}

// prefetch asks the processor to start loading the machine (see
// Engine.Deliver).
func (m *Machine) prefetch() { prefetch.Range(unsafe.Pointer(m), unsafe.Sizeof(*m)) }

// ErrTerminal is returned when an operation needs a rollout that has not ended.
var ErrTerminal = errors.New("rollout has ended")

// NewMachine returns the state machine of a rollout that has not started.
func NewMachine(spec Spec, pol *policy.Policy) (*Machine, error) {
	mm := new(machineMem)
	if err := mm.init(spec, pol); err != nil {
		return nil, err
	}
	return &mm.m, nil
}

// machineMem is a machine and its analyzer in one allocation: with many
// rollouts each event's state is out of cache, and one allocation puts
// the fields an event touches on one or two pages instead of one each,
// next to one another (the processor fetches neighbouring lines too).
// The analyzer goes last: its unit table ends it, which few events touch.
type machineMem struct {
	m Machine
	a analyzer.Analyzer
}

// init makes mm.m the state machine of a rollout that has not started,
// with mm.a as its analyzer.
func (mm *machineMem) init(spec Spec, pol *policy.Policy) error {
	cfg, fields, err := AnalyzerConfig(pol)
	if err != nil {
		return err
	}
	if err := mm.a.Init(cfg); err != nil {
		return fmt.Errorf("policy %s: %w", pol.Name, err)
	}
	mm.m = Machine{spec: spec, pol: pol, an: &mm.a, state: StatePending, fields: fields}
	return nil
}

// AnalyzerConfig translates a policy into the analyzer's configuration and
// returns the custom value fields in the order Observation.Values uses.
func AnalyzerConfig(pol *policy.Policy) (analyzer.Config, []string, error) {
	cfg := analyzer.Config{Alpha: pol.Alpha, PromoteAlpha: pol.PromoteAlpha}
	var fields []string
	for _, pm := range pol.Metrics {
		m := analyzer.Metric{Name: pm.Name, MaxIncrease: pm.MaxIncrease, Quantile: pm.Quantile, Weight: pm.Weight}
		switch pm.Type {
		case policy.TypeErrors:
			m.Kind = analyzer.Errors
		case policy.TypeLatency:
			m.Kind = analyzer.Latency
		case policy.TypeLatencyQuantile:
			m.Kind = analyzer.LatencyQuantile
		case policy.TypeCustom:
			m.Kind = analyzer.Custom
			fields = append(fields, pm.Field)
			if pm.Direction == "decrease" {
				m.Direction = analyzer.Decrease
			}
		default:
			return analyzer.Config{}, nil, fmt.Errorf("policy %s: metric %s: unknown type %q", pol.Name, pm.Name, pm.Type)
		}
		cfg.Metrics = append(cfg.Metrics, m)
	}
	return cfg, fields, nil
}

// Fields returns the custom value fields, in the order of Observation.Values.
func (m *Machine) Fields() []string { return m.fields }

// Policy returns the policy the rollout runs under. A rollout keeps the
// policy it started with when the policy files change.
func (m *Machine) Policy() *policy.Policy { return m.pol }

// Spec returns the rollout's spec.
func (m *Machine) Spec() Spec { return m.spec }

// State returns where the rollout is.
func (m *Machine) State() State {
	if m.paused && !m.state.Terminal() {
		return StatePaused
	}
	return m.state
}

// Now returns the rollout's clock: the latest time it has seen.
func (m *Machine) Now() time.Time { return m.now }

// Route returns the routing entry for the rollout's current state.
func (m *Machine) Route() Route {
	return Route{
		Rollout: m.spec.Rollout, Baseline: m.spec.Baseline, Canary: m.spec.Canary,
		Weight: m.weight, State: m.State(), Step: m.step, Seq: m.seq,
	}
}

// Requests returns the requests counted per variant (baseline, canary)
// over the whole rollout.
func (m *Machine) Requests() (baseline, canary int64) { return m.requests[0], m.requests[1] }

// Metrics returns the evidence now: the analyzer's estimates, intervals
// and e-values over everything observed so far. It changes no state.
func (m *Machine) Metrics() []analyzer.MetricResult { return m.an.Evidence() }

// Start begins the rollout at its first step. Starting a started rollout
// does nothing.
func (m *Machine) Start(now time.Time) []Decision {
	if m.started {
		return nil
	}
	m.started = true
	m.now = now
	m.state = StateProgressing
	m.enterStep(0)
	steps := m.pol.Steps
	d := m.decide(ActionStart, 0, fmt.Sprintf("started at step %d of %d: canary %s%% (policy %s)",
		1, len(steps), fmtWeight(m.weight), m.pol.Name), nil)
	out := []Decision{d}
	if len(steps) == 1 { // AllAtOnce: nothing to compare against
		m.state = StateCompleted
		out = append(out, m.decide(ActionComplete, m.weight, "single-step policy: canary at 100%", nil))
	}
	return out
}

func (m *Machine) enterStep(i int) {
	m.step = i
	m.weight = m.pol.Steps[i].Weight
	m.stepStart = m.now
	m.held = ""
	m.sinceEval = 0
	m.an.StartStep(m.weight)
	s := m.pol.Steps[i]
	m.evalAt = m.stepStart.Add(s.MinDuration)
	m.srmAt = m.stepStart.Add(min(SRMGrace, s.MinDuration/2))
}

// Observe counts one request seen at time t. It returns the decisions the
// observation tipped, if any.
func (m *Machine) Observe(t time.Time, o *analyzer.Observation) []Decision {
	if !m.active() {
		return nil
	}
	m.an.Observe(o)
	m.requests[o.Variant&1]++
	return m.afterData(t, 1)
}

// ObserveBatch counts a batch of requests seen at time t.
func (m *Machine) ObserveBatch(t time.Time, b *analyzer.Batch) []Decision {
	if !m.active() {
		return nil
	}
	m.an.ObserveBatch(b)
	m.requests[b.Variant&1] += b.Requests
	n := int(b.Requests)
	if n < 1 {
		n = 1
	}
	return m.afterData(t, n)
}

// Advance moves the rollout's clock to now (if later) and evaluates when a
// step deadline has passed. serve calls it when a rollout is idle, so a
// silent canary still reaches its step's maximum duration.
func (m *Machine) Advance(now time.Time) []Decision {
	if !m.active() {
		return nil
	}
	m.tick(now)
	if !m.now.Before(m.evalAt) {
		return m.evaluate()
	}
	return nil
}

func (m *Machine) active() bool { return m.started && !m.state.Terminal() }

func (m *Machine) tick(t time.Time) {
	if t.After(m.now) {
		m.now = t
	}
	if !m.srmAt.IsZero() {
		// Until the grace ends the SRM test keeps restarting: it only
		// ever sees the requests since the last one.
		m.an.RestartSRM()
		if !m.now.Before(m.srmAt) {
			m.srmAt = time.Time{}
		}
	}
}

func (m *Machine) afterData(t time.Time, n int) []Decision {
	m.tick(t)
	m.sinceEval += n
	if m.sinceEval >= EvalEvery || !m.now.Before(m.evalAt) {
		return m.evaluate()
	}
	return nil
}

// evaluate runs the decision rule and turns its verdict into decisions.
// Most looks decide nothing, so they only Check; the evidence and the
// reason (Decide, which answers the same on the same state) are computed
// for the looks that emit a decision.
func (m *Machine) evaluate() []Decision {
	m.sinceEval = 0
	s := m.pol.Steps[m.step]
	elapsed := m.now.Sub(m.stepStart)
	step := analyzer.Step{
		Weight: m.weight, Elapsed: elapsed,
		MinDuration: s.MinDuration, MaxDuration: s.MaxDuration, MinRequests: s.MinRequests,
		OnTimeout: onTimeout(m.pol.OnTimeout),
	}
	act, cause := m.an.Check(step)
	m.evalAt = m.nextDeadline(elapsed, s)
	explain := func() (string, []analyzer.MetricResult) {
		v := m.an.Decide(step)
		return v.Reason, v.Metrics
	}
	switch act {
	case analyzer.Rollback:
		return m.rollback(explain())
	case analyzer.Promote:
		if m.paused {
			return m.hold("paused", func() (string, []analyzer.MetricResult) {
				_, ms := explain()
				return "ready to promote, but the rollout is paused", ms
			})
		}
		if !m.inWindow() {
			return m.hold("window", func() (string, []analyzer.MetricResult) {
				_, ms := explain()
				return fmt.Sprintf("ready to promote, waiting for the promote window %q", m.pol.PromoteWindow), ms
			})
		}
		return m.promote(explain())
	default:
		if m.paused {
			return nil
		}
		switch cause {
		case "srm", "timeout":
			return m.hold(cause, explain)
		}
		return nil
	}
}

// nextDeadline is the next rollout time at which an evaluation is due even
// without data: the step's minimum duration, its maximum, and then once a
// minute (promote windows, timeouts with onTimeout hold).
func (m *Machine) nextDeadline(elapsed time.Duration, s policy.Step) time.Time {
	switch {
	case elapsed < s.MinDuration:
		return m.stepStart.Add(s.MinDuration)
	case elapsed < s.MaxDuration:
		return m.stepStart.Add(s.MaxDuration)
	default:
		return m.now.Add(time.Minute)
	}
}

// inWindow reports whether the rollout's clock is inside the policy's
// promote window.
func (m *Machine) inWindow() bool { return m.pol.InWindow(m.now) }

func (m *Machine) promote(reason string, metrics []analyzer.MetricResult) []Decision {
	prev := m.weight
	next := m.step + 1
	if next >= len(m.pol.Steps)-1 {
		// The last step is 100%: reaching it completes the rollout.
		m.step = len(m.pol.Steps) - 1
		m.weight = 100
		m.state = StateCompleted
		return []Decision{m.decide(ActionComplete, prev, reason, metrics)}
	}
	m.enterStep(next)
	return []Decision{m.decide(ActionPromote, prev, reason, metrics)}
}

func (m *Machine) rollback(reason string, metrics []analyzer.MetricResult) []Decision {
	prev := m.weight
	m.weight = 0
	m.state = StateRolledBack
	return []Decision{m.decide(ActionRollback, prev, reason, metrics)}
}

// hold says a hold once per cause and step; explain is only called then.
func (m *Machine) hold(cause string, explain func() (string, []analyzer.MetricResult)) []Decision {
	if m.held == cause {
		return nil
	}
	m.held = cause
	reason, metrics := explain()
	return []Decision{m.decide(ActionHold, m.weight, reason, metrics)}
}

// Pause stops promotions (and timeouts) until Resume. Rollbacks still
// happen: a paused rollout is still protected.
func (m *Machine) Pause(now time.Time, reason string) ([]Decision, error) {
	if !m.active() {
		return nil, ErrTerminal
	}
	if m.paused {
		return nil, nil
	}
	m.tick(now)
	m.paused = true
	return []Decision{m.decide(ActionPause, m.weight, orDefault(reason, "paused by operator"), m.evidence())}, nil
}

// Resume lets a paused rollout advance again.
func (m *Machine) Resume(now time.Time, reason string) ([]Decision, error) {
	if !m.active() {
		return nil, ErrTerminal
	}
	if !m.paused {
		return nil, nil
	}
	m.tick(now)
	m.paused = false
	m.held = ""
	return []Decision{m.decide(ActionResume, m.weight, orDefault(reason, "resumed by operator"), m.evidence())}, nil
}

// Abort ends the rollout and sends all traffic to the baseline.
func (m *Machine) Abort(now time.Time, reason string) ([]Decision, error) {
	if m.state.Terminal() {
		return nil, ErrTerminal
	}
	m.tick(now)
	m.started = true
	prev := m.weight
	m.weight = 0
	m.paused = false
	m.state = StateAborted
	return []Decision{m.decide(ActionAbort, prev, orDefault(reason, "aborted by operator"), m.evidence())}, nil
}

// evidence is what an operator's decision reports: the evidence now, or
// none before the first request.
func (m *Machine) evidence() []analyzer.MetricResult {
	if m.requests[0]+m.requests[1] == 0 {
		return nil
	}
	return m.an.Evidence()
}

func (m *Machine) decide(a Action, prev float64, reason string, metrics []analyzer.MetricResult) Decision {
	m.seq++
	if metrics == nil {
		metrics = []analyzer.MetricResult{}
	}
	return Decision{
		Rollout: m.spec.Rollout, Seq: m.seq, Action: a, Step: m.step,
		Weight: m.weight, PreviousWeight: prev,
		Policy: m.pol.Name, PolicyHash: m.pol.Hash,
		Reason: reason, Metrics: metrics, At: m.now,
	}
}

func onTimeout(s string) analyzer.Action {
	switch s {
	case "promote":
		return analyzer.Promote
	case "hold":
		return analyzer.Hold
	default:
		return analyzer.Rollback
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fmtWeight prints a weight without trailing zeros: 5, 12.5.
func fmtWeight(w float64) string { return fmt.Sprintf("%g", w) }
