package engine

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// snapshot is a Machine's whole state, as checkpointed in KV verdict_state.
type snapshot struct {
	Version    int                     `json:"v"`
	Spec       Spec                    `json:"spec"`
	PolicyHash string                  `json:"policyHash"`
	State      State                   `json:"state"`
	Paused     bool                    `json:"paused,omitempty"`
	Step       int                     `json:"step"`
	Weight     float64                 `json:"weight"`
	Seq        uint64                  `json:"seq"`
	StepStart  time.Time               `json:"stepStart"`
	Now        time.Time               `json:"now"`
	EvalAt     time.Time               `json:"evalAt"`
	SRMAt      time.Time               `json:"srmAt"`
	SinceEval  int                     `json:"sinceEval"`
	Held       string                  `json:"held,omitempty"`
	Last       []analyzer.MetricResult `json:"last,omitempty"` // the evidence when written, for status; not restored
	Requests   [2]int64                `json:"requests"`
	Analyzer   []byte                  `json:"analyzer"`
	StreamSeq  uint64                  `json:"streamSeq"` // last telemetry stream sequence included
}

// MarshalState encodes the machine's state, with streamSeq the last
// telemetry stream sequence it includes.
func (m *Machine) MarshalState(streamSeq uint64) ([]byte, error) {
	ab, err := m.an.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(snapshot{
		Version: 1, Spec: m.spec, PolicyHash: m.pol.Hash, State: m.state, Paused: m.paused,
		Step: m.step, Weight: m.weight, Seq: m.seq, StepStart: m.stepStart, Now: m.now,
		EvalAt: m.evalAt, SRMAt: m.srmAt, SinceEval: m.sinceEval, Held: m.held, Last: m.evidence(),
		Requests: m.requests, Analyzer: ab, StreamSeq: streamSeq,
	})
}

// UnmarshalState restores a state written by MarshalState into a machine
// made by NewMachine with the same policy, and returns the stream sequence
// it includes.
func (m *Machine) UnmarshalState(data []byte) (uint64, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return 0, fmt.Errorf("decode checkpoint: %w", err)
	}
	if s.Version != 1 {
		return 0, fmt.Errorf("checkpoint version %d not supported", s.Version)
	}
	if s.PolicyHash != m.pol.Hash {
		return 0, fmt.Errorf("checkpoint is for policy %s, have %s", s.PolicyHash, m.pol.Hash)
	}
	if s.Step < 0 || s.Step >= len(m.pol.Steps) {
		return 0, fmt.Errorf("checkpoint step %d out of range", s.Step)
	}
	// A checkpoint without a valid state (absent: zero) would restore a
	// machine whose next checkpoint cannot be written.
	if _, err := s.State.MarshalText(); err != nil {
		return 0, fmt.Errorf("checkpoint state: %w", err)
	}
	if err := m.an.UnmarshalBinary(s.Analyzer); err != nil {
		return 0, fmt.Errorf("restore analyzer: %w", err)
	}
	m.spec.Paused, m.spec.Abort = s.Spec.Paused, s.Spec.Abort
	m.state, m.paused, m.step, m.weight, m.seq = s.State, s.Paused, s.Step, s.Weight, s.Seq
	m.stepStart, m.now, m.evalAt, m.srmAt, m.sinceEval = s.StepStart, s.Now, s.EvalAt, s.SRMAt, s.SinceEval
	m.held, m.started, m.requests = s.Held, true, s.Requests
	return s.StreamSeq, nil
}

// ResumeFrom continues a rollout whose analyzer state is lost, from the
// route it last published: same step, weight and decision sequence, with
// the analysis of the current step started afresh at now.
func (m *Machine) ResumeFrom(r Route, now time.Time) {
	m.started = true
	m.now = now
	m.seq = r.Seq
	switch {
	case r.State.Terminal():
		m.state, m.step, m.weight = r.State, r.Step, r.Weight
		return
	case r.Step < 0 || r.Step >= len(m.pol.Steps):
		m.state = StateProgressing
		m.enterStep(0)
	default:
		m.state = StateProgressing
		m.enterStep(r.Step)
	}
	m.paused = r.State == StatePaused
}

// ObserveRecord counts one decoded telemetry record seen at time t,
// mapping its custom values to the policy's fields.
func (m *Machine) ObserveRecord(t time.Time, rec *telemetry.Record) []Decision {
	if rec.Batch != nil {
		b := rec.Batch.Batch
		if len(m.fields) > 0 {
			if cap(m.sumbuf) < len(m.fields) {
				m.sumbuf = make([]analyzer.Summary, len(m.fields))
			}
			vals := m.sumbuf[:len(m.fields)]
			for i, f := range m.fields {
				vals[i] = rec.Batch.Values[f]
			}
			b.Values = vals
		}
		return m.ObserveBatch(t, &b)
	}
	o := rec.Single
	if len(m.fields) > 0 {
		if cap(m.valbuf) < len(m.fields) {
			m.valbuf = make([]float64, len(m.fields))
		}
		vals := m.valbuf[:len(m.fields)]
		for i, f := range m.fields {
			v, ok := rec.Value(f)
			if !ok {
				v = math.NaN()
			}
			vals[i] = v
		}
		o.Values = vals
	}
	return m.Observe(t, &o)
}

// Status is what a checkpoint tells about a rollout, for `verdict rollout status`.
type Status struct {
	Route  Route
	Policy string
	Now    time.Time
	// Requests counted per variant: baseline, canary.
	Requests [2]int64
	Metrics  []analyzer.MetricResult
}

// DecodeStatus reads the status out of a checkpoint written by MarshalState.
func DecodeStatus(data []byte) (Status, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return Status{}, fmt.Errorf("decode checkpoint: %w", err)
	}
	st := s.State
	if s.Paused && !st.Terminal() {
		st = StatePaused
	}
	return Status{
		Route: Route{Rollout: s.Spec.Rollout, Baseline: s.Spec.Baseline, Canary: s.Spec.Canary,
			Weight: s.Weight, State: st, Step: s.Step, Seq: s.Seq},
		Policy: s.Spec.Policy, Now: s.Now, Requests: s.Requests, Metrics: s.Last,
	}, nil
}
