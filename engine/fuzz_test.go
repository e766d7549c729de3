package engine

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

// FuzzUnmarshalState: a checkpoint read back from KV verdict_state never
// panics the engine: it is restored, or refused with an error, and a
// restored machine keeps working.
func FuzzUnmarshalState(f *testing.F) {
	pol := mustPolicy(f, "rollback", "")
	m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
	if err != nil {
		f.Fatal(err)
	}
	traffic{baseline: good, canary: good, rate: 1000, max: 20_000, seed: 1}.run(m, t0, 0)
	seed, err := m.MarshalState(20_000)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := DecodeStatus(data); err != nil {
			return
		}
		m, err := NewMachine(Spec{Rollout: "r1", Policy: "test"}, pol)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.UnmarshalState(data); err != nil {
			return
		}
		r := rand.New(rand.NewPCG(1, 2))
		tr := traffic{baseline: good, canary: good}
		for i := range 300 {
			o := tr.next(r, m.Route().Weight)
			m.Observe(t0.Add(time.Duration(i)*time.Millisecond), &o)
		}
		o := analyzer.Observation{Variant: analyzer.Canary, HasOutcome: true}
		m.Observe(t0, &o)
		if _, err := m.MarshalState(1); err != nil {
			t.Fatalf("MarshalState after a restored checkpoint: %v", err)
		}
	})
}
