package engine

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/policy"
)

const testPolicy = `apiVersion: verdict/v1
kind: Policy
name: test
steps: [5, 25, 50, 100]
stepDefaults:
  minDuration: 10s
  maxDuration: 10m
  minRequests: 300
onTimeout: %s
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 50%%
  - name: latency
    type: latency
    maxIncrease: 10%%
`

func mustPolicy(t testing.TB, onTimeout string, extra string) *policy.Policy {
	t.Helper()
	src := strings.Replace(testPolicy, "%s", onTimeout, 1)
	src = strings.ReplaceAll(src, "%%", "%")
	src += extra
	ps, err := policy.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return ps[0]
}

// service is how a simulated version behaves.
type service struct {
	errRate  float64
	medianMs float64
	logSD    float64
}

var good = service{errRate: 0.01, medianMs: 50, logSD: 0.5}

// traffic drives a machine with simulated requests at rate per second of
// rollout time, the router following the machine's weight, until the
// rollout ends or max requests have been sent. It returns the decisions.
type traffic struct {
	baseline, canary service
	rate             float64
	max              int
	seed             uint64
	silentCanary     bool
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func (tr traffic) run(m *Machine, start time.Time, from int) []Decision {
	r := rand.New(rand.NewPCG(tr.seed, 7))
	var out []Decision
	if from == 0 {
		out = append(out, m.Start(start)...)
	}
	step := time.Duration(float64(time.Second) / tr.rate)
	for i := from; i < tr.max && !m.State().Terminal(); i++ {
		now := start.Add(time.Duration(i) * step)
		o := tr.next(r, m.Route().Weight)
		if tr.silentCanary && o.Variant == analyzer.Canary {
			out = append(out, m.Advance(now)...)
			continue
		}
		out = append(out, m.Observe(now, &o)...)
	}
	return out
}

func (tr traffic) next(r *rand.Rand, weight float64) analyzer.Observation {
	v, s := analyzer.Baseline, tr.baseline
	if r.Float64()*100 < weight {
		v, s = analyzer.Canary, tr.canary
	}
	return analyzer.Observation{
		Variant: v, HasLatency: true, HasOutcome: true,
		LatencyMs: s.medianMs * math.Exp(s.logSD*r.NormFloat64()),
		Error:     r.Float64() < s.errRate,
	}
}

func actions(ds []Decision) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(d.Action.String())
	}
	return b.String()
}

func checkSeq(t *testing.T, ds []Decision) {
	t.Helper()
	for i, d := range ds {
		if d.Seq != uint64(i+1) {
			t.Fatalf("decision %d has seq %d, want %d", i, d.Seq, i+1)
		}
	}
}

func TestMachineGoodCanaryCompletes(t *testing.T) {
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, mustPolicy(t, "rollback", ""))
	if err != nil {
		t.Fatal(err)
	}
	ds := traffic{baseline: good, canary: good, rate: 2000, max: 3_000_000, seed: 1}.run(m, t0, 0)
	if got, want := actions(ds), "start promote promote complete"; got != want {
		for _, d := range ds {
			t.Logf("%d %s w=%v %s", d.Seq, d.Action, d.Weight, d.Reason)
		}
		t.Fatalf("actions = %q, want %q", got, want)
	}
	checkSeq(t, ds)
	wantW := []float64{5, 25, 50, 100}
	for i, d := range ds {
		if d.Weight != wantW[i] {
			t.Errorf("decision %d weight = %v, want %v", i, d.Weight, wantW[i])
		}
		if d.Policy != "test" || !strings.HasPrefix(d.PolicyHash, "sha256:") {
			t.Errorf("decision %d policy = %q %q", i, d.Policy, d.PolicyHash)
		}
	}
	if m.State() != StateCompleted || m.Route().Weight != 100 {
		t.Errorf("final state %v weight %v, want completed 100", m.State(), m.Route().Weight)
	}
	// Promotions wait for the step's minimum duration.
	for i := 1; i < len(ds); i++ {
		if gap := ds[i].At.Sub(ds[i-1].At); gap < 10*time.Second {
			t.Errorf("decision %d came %v after the previous, before minDuration 10s", i, gap)
		}
	}
}

func TestMachineBadCanaryRollsBack(t *testing.T) {
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, mustPolicy(t, "rollback", ""))
	if err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.errRate = 0.05
	ds := traffic{baseline: good, canary: bad, rate: 2000, max: 3_000_000, seed: 2}.run(m, t0, 0)
	if got, want := actions(ds), "start rollback"; got != want {
		t.Fatalf("actions = %q, want %q", got, want)
	}
	rb := ds[1]
	if rb.Weight != 0 || rb.PreviousWeight != 5 || rb.Step != 0 {
		t.Errorf("rollback weight %v previous %v step %d, want 0, 5, 0", rb.Weight, rb.PreviousWeight, rb.Step)
	}
	if !strings.Contains(rb.Reason, "error-rate") {
		t.Errorf("rollback reason %q does not name error-rate", rb.Reason)
	}
	if len(rb.Metrics) != 2 {
		t.Errorf("rollback carries %d metrics, want 2", len(rb.Metrics))
	}
	if m.State() != StateRolledBack {
		t.Errorf("state %v, want rolledback", m.State())
	}
}

func TestMachineSilentCanaryNeverPromotes(t *testing.T) {
	for _, onTimeout := range []string{"promote", "hold", "rollback"} {
		t.Run(onTimeout, func(t *testing.T) {
			m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, mustPolicy(t, onTimeout, ""))
			if err != nil {
				t.Fatal(err)
			}
			ds := traffic{baseline: good, canary: good, rate: 100, max: 100 * 60 * 15, seed: 3, silentCanary: true}.run(m, t0, 0)
			for _, d := range ds {
				if d.Action == ActionPromote || d.Action == ActionComplete {
					t.Fatalf("silent canary: %s (%s)", d.Action, d.Reason)
				}
			}
			// A silent canary is a sample ratio mismatch: the rollout holds
			// at once, then the step times out and onTimeout applies, except
			// that a timeout never promotes without data.
			want := map[string]string{"promote": "start hold hold", "hold": "start hold hold", "rollback": "start hold rollback"}[onTimeout]
			if got := actions(ds); got != want {
				t.Errorf("actions = %q, want %q", got, want)
			}
			if !strings.Contains(ds[1].Reason, "sample ratio mismatch") {
				t.Errorf("first hold reason %q does not name the sample ratio mismatch", ds[1].Reason)
			}
			if last := ds[len(ds)-1]; !strings.Contains(last.Reason, "timed out") {
				t.Errorf("last decision reason %q does not say the step timed out", last.Reason)
			}
		})
	}
}

func TestMachinePauseResumeAbort(t *testing.T) {
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, mustPolicy(t, "hold", ""))
	if err != nil {
		t.Fatal(err)
	}
	ds := m.Start(t0)
	p, err := m.Pause(t0, "")
	if err != nil {
		t.Fatal(err)
	}
	ds = append(ds, p...)
	if m.State() != StatePaused {
		t.Fatalf("state %v after pause", m.State())
	}
	tr := traffic{baseline: good, canary: good, rate: 2000, max: 2000 * 120, seed: 4}
	ds = append(ds, tr.run(m, t0, 1)...)
	for _, d := range ds[2:] {
		if d.Action == ActionPromote {
			t.Fatalf("promoted while paused: %s", d.Reason)
		}
	}
	r, err := m.Resume(m.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	ds = append(ds, r...)
	tr.max, tr.seed = 2000*15, 5 // one step's minimum duration and a bit
	ds = append(ds, tr.run(m, m.Now(), 1)...)
	a, err := m.Abort(m.Now(), "")
	if err != nil {
		t.Fatal(err)
	}
	ds = append(ds, a...)
	checkSeq(t, ds)
	got := actions(ds)
	if !strings.HasPrefix(got, "start pause") || !strings.Contains(got, "resume promote") || !strings.HasSuffix(got, "abort") {
		t.Fatalf("actions = %q, want start pause [hold] resume promote ... abort", got)
	}
	if m.State() != StateAborted || m.Route().Weight != 0 {
		t.Errorf("after abort: state %v weight %v", m.State(), m.Route().Weight)
	}
	if _, err := m.Abort(m.Now(), ""); err != ErrTerminal {
		t.Errorf("second Abort error = %v, want ErrTerminal", err)
	}
	o := analyzer.Observation{Variant: analyzer.Canary, HasOutcome: true, Error: true}
	if d := m.Observe(m.Now(), &o); d != nil {
		t.Errorf("Observe after abort = %v, want nothing", d)
	}
}

func TestMachineAllAtOnce(t *testing.T) {
	ps, err := policy.Parse("a.yaml", []byte("apiVersion: verdict/v1\nkind: Policy\nname: a\npreset: AllAtOnce\n"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "a"}, ps[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := actions(m.Start(t0)), "start complete"; got != want {
		t.Fatalf("actions = %q, want %q", got, want)
	}
}

func TestMachinePromoteWindow(t *testing.T) {
	// Only promote in the minute 10:30 of each hour... of any day: window "30 * * * *".
	pol := mustPolicy(t, "hold", "promoteWindow: \"30 * * * *\"\n")
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
	if err != nil {
		t.Fatal(err)
	}
	ds := traffic{baseline: good, canary: good, rate: 500, max: 500 * 60 * 45, seed: 6}.run(m, t0, 0)
	var sawWindowHold bool
	for _, d := range ds {
		if d.Action == ActionHold && strings.Contains(d.Reason, "window") {
			sawWindowHold = true
		}
		if d.Action == ActionPromote || d.Action == ActionComplete {
			if d.At.Minute() != 30 {
				t.Errorf("%s at %v, outside the window", d.Action, d.At)
			}
		}
	}
	if !sawWindowHold {
		t.Errorf("no hold naming the window; actions %q", actions(ds))
	}
	if got := actions(ds); !strings.Contains(got, "promote") {
		t.Errorf("never promoted inside the window: %q", got)
	}
}

// TestMachineDeterministic: the same events give the same decisions, byte
// for byte, and a machine restored from a checkpoint mid-way decides as an
// uninterrupted one does.
func TestMachineDeterministic(t *testing.T) {
	pol := mustPolicy(t, "rollback", "")
	tr := traffic{baseline: good, canary: good, rate: 2000, max: 3_000_000, seed: 9}
	encode := func(ds []Decision) []byte {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		for _, d := range ds {
			if err := enc.Encode(d.CloudEvent(d.At)); err != nil {
				t.Fatal(err)
			}
		}
		return b.Bytes()
	}
	run := func() []byte {
		m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
		if err != nil {
			t.Fatal(err)
		}
		return encode(tr.run(m, t0, 0))
	}
	a, b := run(), run()
	if !bytes.Equal(a, b) {
		t.Fatalf("two runs differ:\n%s\n%s", a, b)
	}

	// Interrupted at request 50,000: checkpoint, restore into a fresh
	// machine, continue with the same stream.
	m1, _ := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
	cut := tr
	cut.max = 50_000
	ds := cut.run(m1, t0, 0)
	state, err := m1.MarshalState(50_000)
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
	seq, err := m2.UnmarshalState(state)
	if err != nil || seq != 50_000 {
		t.Fatalf("UnmarshalState = %d, %v", seq, err)
	}
	// Replay the same random stream: regenerate and skip the first 50,000.
	r := rand.New(rand.NewPCG(tr.seed, 7))
	step := time.Duration(float64(time.Second) / tr.rate)
	m3, _ := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
	full := m3.Start(t0)
	for i := 0; i < tr.max && !m3.State().Terminal(); i++ {
		now := t0.Add(time.Duration(i) * step)
		o := tr.next(r, m3.Route().Weight)
		full = append(full, m3.Observe(now, &o)...)
		if i >= 50_000 {
			o2 := o
			ds = append(ds, m2.Observe(now, &o2)...)
		}
	}
	if got, want := encode(ds), encode(full); !bytes.Equal(got, want) {
		t.Fatalf("restored run differs from uninterrupted run:\n%s\n---\n%s", got, want)
	}
}
