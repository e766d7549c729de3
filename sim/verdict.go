package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
)

// epoch is the simulated rollouts' start time. Any fixed instant will do:
// promote windows are ignored in simulation.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// maxHolds bounds the hold reasons a Result keeps.
const maxHolds = 4

// stepsRunner drives an engine.Machine as serve would, the simulated
// router following the machine's weights.
type stepsRunner struct {
	m         *engine.Machine
	pol       *policy.Policy
	weight    float64
	stepStart time.Time
	obs       analyzer.Observation

	done bool
	res  Result
}

func newStepsRunner(pol *policy.Policy) (*stepsRunner, error) {
	m, err := engine.NewMachine(engine.Spec{Rollout: "sim", Policy: pol.Name, Baseline: "baseline", Canary: "canary"}, pol)
	if err != nil {
		return nil, err
	}
	s := &stepsRunner{m: m, pol: pol, stepStart: epoch}
	for _, d := range m.Start(epoch) {
		s.decision(0, &d)
	}
	s.weight = m.Route().Weight
	return s, nil
}

func (s *stepsRunner) observe(sc *Scenario, n int64, r *Request) {
	o := &s.obs
	*o = analyzer.Observation{HasLatency: true, HasOutcome: true, Unit: r.Unit}
	out := r.Base
	if sc.Canary(r, s.weight) {
		o.Variant, out = analyzer.Canary, r.Canary
	}
	o.Error, o.LatencyMs = out.Error, out.LatencyMs
	for _, d := range s.m.Observe(epoch.Add(r.At), o) {
		s.decision(n, &d)
	}
}

func (s *stepsRunner) decision(n int64, d *engine.Decision) {
	switch d.Action {
	case engine.ActionPromote:
		s.weight = d.Weight
		s.stepStart = d.At
	case engine.ActionComplete:
		s.finish(Result{Outcome: Promote, Requests: n, Reason: d.Reason})
	case engine.ActionRollback:
		cause := topMetric(d.Metrics)
		if s.pol.OnTimeout == policy.OnTimeoutRollback && d.Step < len(s.pol.Steps) &&
			d.At.Sub(s.stepStart) >= s.pol.Steps[d.Step].MaxDuration {
			cause = causeTimeout
		}
		s.finish(Result{Outcome: Rollback, Requests: n, Cause: cause, Reason: d.Reason})
	case engine.ActionHold:
		if len(s.res.Holds) < maxHolds {
			s.res.Holds = append(s.res.Holds, d.Reason)
		}
	}
}

func (s *stepsRunner) finish(r Result) {
	r.Holds = s.res.Holds
	s.res, s.done = r, true
}

// causeTimeout is the cause of a rollback decided by the policy's
// onTimeout rather than by evidence.
const causeTimeout = "timeout"

// topMetric names the metric with the largest rollback e-value: the cause
// of a rollback (STATS.md §5).
func topMetric(ms []analyzer.MetricResult) string {
	best, name := -1.0, ""
	for _, m := range ms {
		if m.EValue > best {
			best, name = m.EValue, m.Name
		}
	}
	return name
}

// pinnedRunner runs the analyzer directly at a fixed canary share with
// the first step's durations and minimum requests, deciding every
// lookEvery requests, until the first rollback or promote.
type pinnedRunner struct {
	an    *analyzer.Analyzer
	share float64
	step  analyzer.Step
	obs   analyzer.Observation
	held  []string // hold causes already reported

	done bool
	res  Result
}

func newPinnedRunner(pol *policy.Policy, share float64) (*pinnedRunner, error) {
	cfg, _, err := engine.AnalyzerConfig(pol)
	if err != nil {
		return nil, err
	}
	an, err := analyzer.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", pol.Name, err)
	}
	an.StartStep(share)
	s0 := pol.Steps[0]
	onTimeout := analyzer.Rollback
	switch pol.OnTimeout {
	case policy.OnTimeoutHold:
		onTimeout = analyzer.Hold
	case policy.OnTimeoutPromote:
		onTimeout = analyzer.Promote
	}
	return &pinnedRunner{an: an, share: share, step: analyzer.Step{
		Weight: share, MinDuration: s0.MinDuration, MaxDuration: s0.MaxDuration,
		MinRequests: s0.MinRequests, OnTimeout: onTimeout,
	}}, nil
}

func (p *pinnedRunner) observe(sc *Scenario, n int64, r *Request) {
	o := &p.obs
	*o = analyzer.Observation{HasLatency: true, HasOutcome: true, Unit: r.Unit}
	out := r.Base
	if sc.Canary(r, p.share) {
		o.Variant, out = analyzer.Canary, r.Canary
	}
	o.Error, o.LatencyMs = out.Error, out.LatencyMs
	p.an.Observe(o)
	if n%lookEvery != 0 {
		return
	}
	p.step.Elapsed = r.At
	// Like the machine: Check at every look, Decide (same answer, with the
	// evidence and reason) only at the looks that report.
	act, cause := p.an.Check(p.step)
	report := act != analyzer.Hold ||
		((cause == "srm" || cause == causeTimeout) && !slices.Contains(p.held, cause))
	if !report {
		return
	}
	v := p.an.Decide(p.step)
	switch v.Action {
	case analyzer.Rollback:
		cause := topMetric(v.Metrics)
		if r.At >= p.step.MaxDuration && p.step.OnTimeout == analyzer.Rollback && v.Cause == causeTimeout {
			cause = causeTimeout
		}
		p.finish(Result{Outcome: Rollback, Requests: n, Cause: cause, Reason: v.Reason})
	case analyzer.Promote:
		p.finish(Result{Outcome: Promote, Requests: n, Reason: v.Reason})
	default:
		// Like the machine, say each hold cause once.
		p.held = append(p.held, v.Cause)
		if len(p.res.Holds) < maxHolds {
			p.res.Holds = append(p.res.Holds, v.Reason)
		}
	}
}

func (p *pinnedRunner) finish(r Result) {
	r.Holds = p.res.Holds
	p.res, p.done = r, true
}
