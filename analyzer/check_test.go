package analyzer

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// TestCheckMatchesDecide drives two analyzers on the same requests, one
// looking with Decide at every look and one with Check (and Decide only
// when Check's answer would be reported). They must answer the same at
// every look, end in the same state byte for byte, and Decide after Check
// must return exactly what Decide alone does: the state machine relies on
// it to report only the looks that emit a decision.
func TestCheckMatchesDecide(t *testing.T) {
	type scenario struct {
		name    string
		tweak   func(*stream)
		timeout Action
		maxDur  time.Duration
	}
	scenarios := []scenario{
		{"aa", func(*stream) {}, Hold, 0},
		{"aa-timeouts", func(*stream) {}, Promote, 10 * time.Minute},
		{"errors-x3", func(s *stream) { s.pErr[Canary] = 0.03 }, Rollback, 20 * time.Minute},
		{"latency-x1.3", func(s *stream) { s.logMu[Canary] += 0.26 }, Promote, 20 * time.Minute},
		{"tail", func(s *stream) { s.tail, s.tailAt = 1.5, s.logMu[Canary]+1.6 }, Hold, 20 * time.Minute},
		{"bursty-srm", func(s *stream) { s.burst, s.srm = 10, 1.4 }, Promote, 20 * time.Minute},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			cfg := defaultConfig()
			a, b := mustNew(t, cfg), mustNew(t, cfg)
			weights := []float64{5, 25, 50}
			s := newStream(uint64(100+i), weights[0]/100)
			sc.tweak(s)
			var o Observation
			looks, reported := 0, map[Action]int{}
		steps:
			for st, w := range weights {
				a.StartStep(w)
				b.StartStep(w)
				s.share = w / 100
				if s.srm > 0 {
					s.share = min(w*s.srm, 99) / 100
				}
				step := Step{Weight: w, MinDuration: 2 * time.Minute, MaxDuration: sc.maxDur,
					MinRequests: 300, OnTimeout: sc.timeout}
				for n := 1; n <= 100_000; n++ {
					s.next(&o)
					a.Observe(&o)
					b.Observe(&o)
					if n%100 != 0 {
						continue
					}
					looks++
					step.Elapsed = time.Duration(n) * 50 * time.Millisecond // 20 requests/s
					va := a.Decide(step)
					act, cause := b.Check(step)
					if act != va.Action || cause != va.Cause {
						t.Fatalf("step %d look %d: Check = %v %q, Decide = %v %q", st, n, act, cause, va.Action, va.Cause)
					}
					if act != Hold || cause == "srm" || cause == "timeout" || n%1000 == 0 {
						reported[act]++
						if vb := b.Decide(step); !reflect.DeepEqual(vb, va) {
							t.Fatalf("step %d look %d: Decide after Check = %+v\nDecide alone = %+v", st, n, vb, va)
						}
					}
					if act == Rollback {
						break steps
					}
					if act == Promote {
						break
					}
				}
			}
			da, _ := a.MarshalBinary()
			db, _ := b.MarshalBinary()
			if !bytes.Equal(da, db) {
				t.Fatalf("states differ after %d looks", looks)
			}
			if got, want := b.Evidence(), a.Decide(Step{Weight: a.weight}).Metrics; !reflect.DeepEqual(got, want) {
				t.Errorf("Evidence = %+v\nwant Decide's %+v", got, want)
			}
			t.Logf("%d looks, reported %v", looks, reported)
		})
	}
}
