package analyzer

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestNewValidates(t *testing.T) {
	ok := defaultConfig()
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"alpha zero", func(c *Config) { c.Alpha = 0 }},
		{"alpha half", func(c *Config) { c.Alpha = 0.5 }},
		{"alpha NaN", func(c *Config) { c.Alpha = math.NaN() }},
		{"promoteAlpha", func(c *Config) { c.PromoteAlpha = 1 }},
		{"no metrics", func(c *Config) { c.Metrics = nil }},
		{"empty name", func(c *Config) { c.Metrics[0].Name = "" }},
		{"duplicate", func(c *Config) { c.Metrics[1].Name = c.Metrics[0].Name }},
		{"margin zero", func(c *Config) { c.Metrics[0].MaxIncrease = 0 }},
		{"margin inf", func(c *Config) { c.Metrics[0].MaxIncrease = math.Inf(1) }},
		{"quantile one", func(c *Config) { c.Metrics[2].Quantile = 1 }},
		{"kind", func(c *Config) { c.Metrics[0].Kind = 0 }},
		{"weight", func(c *Config) { c.Metrics[0].Weight = -1 }},
		{"decrease margin", func(c *Config) { c.Metrics[3].Direction, c.Metrics[3].MaxIncrease = Decrease, 1 }},
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(default) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig()
			tt.edit(&c)
			if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New(%s) = %v, want ErrInvalidConfig", tt.name, err)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Hold: "hold", Promote: "promote", Rollback: "rollback", 7: "Action(7)"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", a, got, want)
		}
	}
}

// feed observes n requests from a seeded A/A stream.
func feed(a *Analyzer, s *stream, n int) {
	var o Observation
	for range n {
		s.next(&o)
		a.Observe(&o)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	cfg := defaultConfig()
	step := Step{Weight: 25, Elapsed: time.Hour, MinRequests: 100}
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	sa, sb := newStream(7, 0.05), newStream(7, 0.05)
	for _, w := range []float64{5, 25} {
		a.StartStep(w)
		b.StartStep(w)
		sa.share, sb.share = w/100, w/100
		feed(a, sa, 6000)
		feed(b, sb, 6000)
		a.Decide(step)
		b.Decide(step)
	}
	data, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, cfg)
	if err := c.UnmarshalBinary(data); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	again, _ := c.MarshalBinary()
	if !bytes.Equal(data, again) {
		t.Fatalf("re-marshalled checkpoint differs")
	}
	// Continue both the original's twin (b, never serialised) and the
	// restored copy (c) on the same stream: identical verdicts.
	feed(b, sb, 3000)
	feed(c, sa, 3000)
	if got, want := c.Decide(step), b.Decide(step); !reflect.DeepEqual(got, want) {
		t.Errorf("Decide after restore = %+v, want %+v", got, want)
	}
	if len(data) >= 64<<10 {
		t.Errorf("checkpoint is %d bytes, want < 64 KiB", len(data))
	}
	t.Logf("checkpoint: %d bytes", len(data))

	// Errors: truncation, wrong config, garbage.
	for i := 0; i < len(data); i += 1 + len(data)/50 {
		if err := mustNew(t, cfg).UnmarshalBinary(data[:i]); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("UnmarshalBinary(truncated %d) = %v, want ErrCheckpoint", i, err)
		}
	}
	other := cfg
	other.Metrics = cfg.Metrics[:2]
	if err := mustNew(t, other).UnmarshalBinary(data); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("UnmarshalBinary(other config) = %v, want ErrCheckpoint", err)
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	a := mustNew(f, defaultConfig())
	a.StartStep(5)
	feed(a, newStream(3, 0.05), 3000)
	data, _ := a.MarshalBinary()
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		b := mustNew(t, defaultConfig())
		if err := b.UnmarshalBinary(data); err != nil {
			return
		}
		re, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		c := mustNew(t, defaultConfig())
		if err := c.UnmarshalBinary(re); err != nil {
			t.Fatalf("re-decoding failed: %v", err)
		}
		// Check must answer as Decide and leave the same state, whatever
		// the counts (its bounds stand in for e-values it skips).
		st := Step{Weight: 5, Elapsed: 2 * time.Minute, MinDuration: time.Minute, MinRequests: 1}
		d := mustNew(t, defaultConfig())
		if err := d.UnmarshalBinary(re); err != nil {
			t.Fatal(err)
		}
		act, cause := d.Check(st)
		v := c.Decide(st)
		if act != v.Action || cause != v.Cause {
			t.Fatalf("Check = %v %q, Decide = %v %q", act, cause, v.Action, v.Cause)
		}
		for _, m := range v.Metrics {
			if !resultFinite(&m) {
				t.Fatalf("non-finite result %+v", m)
			}
		}
		cs, _ := c.MarshalBinary()
		ds, _ := d.MarshalBinary()
		if !bytes.Equal(cs, ds) {
			t.Fatal("the state after Check differs from the state after Decide")
		}
	})
}

func TestStateSize(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := mustNew(t, defaultConfig())
	runtime.ReadMemStats(&after)
	heap := after.TotalAlloc - before.TotalAlloc
	a.StartStep(5)
	feed(a, newStream(4, 0.05), 20000)
	data, _ := a.MarshalBinary()
	t.Logf("New: %d bytes allocated; checkpoint after 20k requests: %d bytes", heap, len(data))
	if heap >= 64<<10 || len(data) >= 64<<10 {
		t.Errorf("state: heap %d, checkpoint %d bytes; want both < 64 KiB", heap, len(data))
	}
	if allocs := testing.AllocsPerRun(1000, func() {
		a.Observe(&Observation{Variant: Canary, HasLatency: true, LatencyMs: 3, HasOutcome: true, Error: true, Unit: 9})
	}); allocs != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", allocs)
	}
}

func TestBatchMatchesSingles(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := defaultConfig()
		single, batch := mustNew(t, cfg), mustNew(t, cfg)
		single.StartStep(10)
		batch.StartStep(10)
		for _, v := range []Variant{Baseline, Canary} {
			n := rapid.IntRange(0, 60).Draw(t, "n")
			b := Batch{Variant: v, Values: make([]Summary, 1)}
			counts := map[int32]int64{}
			for i := range n {
				ms := rapid.Float64Range(0.01, 5000).Draw(t, "ms")
				isErr := rapid.Bool().Draw(t, "err")
				cpu := rapid.Float64Range(0.1, 100).Draw(t, "cpu")
				single.Observe(&Observation{Variant: v, HasLatency: true, LatencyMs: ms, HasOutcome: true, Error: isErr, Values: []float64{cpu}})
				b.Requests++
				if isErr {
					b.Errors++
				}
				l := math.Log(ms)
				b.Latency.N++
				b.Latency.SumLog += l
				b.Latency.SumLogSq += l * l
				b.Values[0].N++
				b.Values[0].SumLog += math.Log(cpu)
				b.Values[0].SumLogSq += math.Log(cpu) * math.Log(cpu)
				counts[BucketIndex(ms)]++
				_ = i
			}
			for i := MinBucket; i <= MaxBucket; i++ { // deterministic order
				if c := counts[i]; c > 0 {
					b.Buckets = append(b.Buckets, Bucket{Index: i, Count: c})
				}
			}
			batch.ObserveBatch(&b)
		}
		if single.totOut != batch.totOut || single.totErr != batch.totErr || single.cur != batch.cur || single.stepReq != batch.stepReq {
			t.Fatalf("counts differ: single %v %v %v, batch %v %v %v", single.totOut, single.totErr, single.stepReq, batch.totOut, batch.totErr, batch.stepReq)
		}
		for v := range 2 {
			for _, pair := range [][2]*welford{{&single.lat[v], &batch.lat[v]}, {&single.custom[0][v], &batch.custom[0][v]}} {
				s, b := pair[0], pair[1]
				if s.n != b.n || !near(s.mean, b.mean, 1e-9) || !near(s.m2, b.m2, 1e-6) {
					t.Fatalf("variant %d: welford single %+v, batch %+v", v, *s, *b)
				}
			}
			single.hist[v].settle()
			batch.hist[v].settle()
			if !reflect.DeepEqual(single.hist[v], batch.hist[v]) {
				t.Fatalf("variant %d: histograms differ", v)
			}
		}
	})
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

func TestEValuesFiniteAndDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := defaultConfig()
		a, b := mustNew(t, cfg), mustNew(t, cfg)
		w := rapid.Float64Range(0.5, 99).Draw(t, "w")
		a.StartStep(w)
		b.StartStep(w)
		n := rapid.IntRange(0, 300).Draw(t, "n")
		for range n {
			o := Observation{
				Variant:    Variant(rapid.IntRange(0, 2).Draw(t, "v")),
				HasLatency: rapid.Bool().Draw(t, "hl"),
				LatencyMs:  rapid.SampledFrom([]float64{0, -1, math.NaN(), math.Inf(1), 1e-9, 1, 50, 1e12}).Draw(t, "ms"),
				HasOutcome: rapid.Bool().Draw(t, "ho"),
				Error:      rapid.Bool().Draw(t, "e"),
				Unit:       uint64(rapid.IntRange(0, 3).Draw(t, "u")),
				Values:     []float64{rapid.SampledFrom([]float64{math.NaN(), -2, 0, 1, 7, math.Inf(1)}).Draw(t, "x")},
			}
			a.Observe(&o)
			b.Observe(&o)
			if rapid.IntRange(0, 20).Draw(t, "d") == 0 {
				s := Step{Weight: 5, Elapsed: time.Hour, MinRequests: 1, MaxDuration: time.Minute, OnTimeout: Promote}
				va, vb := a.Decide(s), b.Decide(s)
				if !reflect.DeepEqual(va, vb) {
					t.Fatalf("not deterministic: %+v vs %+v", va, vb)
				}
				for _, m := range va.Metrics {
					if !resultFinite(&m) || m.EValue < 0 || m.PValue < 0 || m.PValue > 1 || m.Lower > m.Upper {
						t.Fatalf("bad result %+v", m)
					}
				}
			}
		}
	})
}

func TestDecisionRule(t *testing.T) {
	cfg := Config{Alpha: 0.05, PromoteAlpha: 0.05, Metrics: []Metric{{Name: "error-rate", Kind: Errors, MaxIncrease: 0.2}}}
	base := Step{Weight: 50, Elapsed: time.Hour, MinDuration: time.Minute, MaxDuration: 2 * time.Hour, MinRequests: 1000, OnTimeout: Rollback}
	batch := func(a *Analyzer, v Variant, n, e int64) { a.ObserveBatch(&Batch{Variant: v, Requests: n, Errors: e}) }
	tests := []struct {
		name       string
		fill       func(a *Analyzer)
		step       func(s *Step)
		want       Action
		cause, has string
	}{
		{"no data", func(a *Analyzer) {}, func(*Step) {}, Hold, "min-requests", "need 1000"},
		{"no data timeout promote", func(a *Analyzer) {}, func(s *Step) { s.Elapsed, s.OnTimeout = 3*time.Hour, Promote }, Hold, "timeout", "not promoting"},
		{"silent canary timeout promote", func(a *Analyzer) { batch(a, Baseline, 1e6, 1e4) }, func(s *Step) { s.Elapsed, s.OnTimeout = 3*time.Hour, Promote }, Hold, "timeout", "not promoting"},
		{"too early", func(a *Analyzer) { batch(a, Baseline, 1e6, 1e4); batch(a, Canary, 1e6, 1e4) }, func(s *Step) { s.Elapsed = time.Second }, Hold, "min-duration", "minimum"},
		{"good canary", func(a *Analyzer) { batch(a, Baseline, 1e6, 1e4); batch(a, Canary, 1e6, 1e4) }, func(*Step) {}, Promote, "", "error-rate upper"},
		{"bad canary", func(a *Analyzer) { batch(a, Baseline, 1e5, 1e3); batch(a, Canary, 1e5, 3e3) }, func(*Step) {}, Rollback, "error-rate", "exceeds +20%"},
		{"unclear", func(a *Analyzer) { batch(a, Baseline, 5000, 50); batch(a, Canary, 5000, 55) }, func(*Step) {}, Hold, "error-rate", "waiting for evidence"},
		{"unclear timeout", func(a *Analyzer) { batch(a, Baseline, 5000, 50); batch(a, Canary, 5000, 55) }, func(s *Step) { s.Elapsed = 3 * time.Hour }, Rollback, "timeout", "timed out"},
		{"unclear timeout promote", func(a *Analyzer) { batch(a, Baseline, 5000, 50); batch(a, Canary, 5000, 55) }, func(s *Step) { s.Elapsed, s.OnTimeout = 3*time.Hour, Promote }, Promote, "timeout", "by policy"},
		{"srm", func(a *Analyzer) {
			for range 100 {
				batch(a, Baseline, 6000, 60)
				batch(a, Canary, 4000, 40)
			}
		}, func(*Step) {}, Hold, "srm", "sample ratio mismatch: canary got 40% of requests, told 50%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustNew(t, cfg)
			a.StartStep(50)
			tt.fill(a)
			s := base
			tt.step(&s)
			v := a.Decide(s)
			if v.Action != tt.want || v.Cause != tt.cause || !strings.Contains(v.Reason, tt.has) {
				t.Errorf("Decide = %v cause %q reason %q; want %v cause %q reason containing %q", v.Action, v.Cause, v.Reason, tt.want, tt.cause, tt.has)
			}
		})
	}
}

func TestStepsMultiply(t *testing.T) {
	// The error rollback e-value is the product of the per-step e-values.
	cfg := Config{Alpha: 0.05, PromoteAlpha: 0.05, Metrics: []Metric{{Name: "e", Kind: Errors, MaxIncrease: 0.2}}}
	one := func(w float64, nA, eA, nB, eB int64) float64 {
		a := mustNew(t, cfg)
		a.StartStep(w)
		a.ObserveBatch(&Batch{Variant: Baseline, Requests: nA, Errors: eA})
		a.ObserveBatch(&Batch{Variant: Canary, Requests: nB, Errors: eB})
		return a.Decide(Step{Weight: w}).Metrics[0].EValue
	}
	a := mustNew(t, cfg)
	a.StartStep(5)
	a.ObserveBatch(&Batch{Variant: Baseline, Requests: 9500, Errors: 95})
	a.ObserveBatch(&Batch{Variant: Canary, Requests: 500, Errors: 9})
	a.StartStep(25)
	a.ObserveBatch(&Batch{Variant: Baseline, Requests: 7500, Errors: 75})
	a.ObserveBatch(&Batch{Variant: Canary, Requests: 2500, Errors: 40})
	got := a.Decide(Step{Weight: 25}).Metrics[0].EValue
	want := one(5, 9500, 95, 500, 9) * one(25, 7500, 75, 2500, 40)
	if !near(got, want, 1e-12) {
		t.Errorf("product e-value = %v, want %v", got, want)
	}
}

func TestBurstsCountDistinctUnits(t *testing.T) {
	a := mustNew(t, Config{Alpha: 0.05, PromoteAlpha: 0.05, Metrics: []Metric{{Name: "e", Kind: Errors, MaxIncrease: 0.2}}})
	a.StartStep(50)
	for range 20 {
		a.Observe(&Observation{Variant: Canary, HasOutcome: true, Error: true, Unit: 42})
	}
	a.Observe(&Observation{Variant: Canary, HasOutcome: true, Error: true, Unit: 43})
	a.Observe(&Observation{Variant: Baseline, HasOutcome: true, Error: true, Unit: 42})
	if got := a.totErr; got != [2]int64{1, 2} {
		t.Errorf("counted errors = %v, want [1 2]", got)
	}
	if got := a.totOut; got != [2]int64{1, 21} {
		t.Errorf("requests = %v, want [1 21]", got)
	}
	for range dedupWindow + 1 {
		a.Observe(&Observation{Variant: Baseline, HasOutcome: true})
	}
	a.Observe(&Observation{Variant: Canary, HasOutcome: true, Error: true, Unit: 42})
	if got := a.totErr[Canary]; got != 3 {
		t.Errorf("a failure after the window: counted errors %d, want 3", got)
	}
}

func TestOddBatchesStayFinite(t *testing.T) {
	odd := []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 1e308, 3}
	rapid.Check(t, func(t *rapid.T) {
		a := mustNew(t, defaultConfig())
		a.StartStep(5)
		for range rapid.IntRange(1, 20).Draw(t, "batches") {
			b := Batch{
				Variant:  Variant(rapid.IntRange(0, 2).Draw(t, "v")),
				Requests: rapid.Int64Range(-5, 1e12).Draw(t, "n"),
				Errors:   rapid.Int64Range(-5, 1e12).Draw(t, "e"),
				Latency: Summary{N: rapid.Int64Range(-1, 1e9).Draw(t, "ln"),
					SumLog: rapid.SampledFrom(odd).Draw(t, "s"), SumLogSq: rapid.SampledFrom(odd).Draw(t, "ss")},
				Buckets: []Bucket{{Index: rapid.Int32().Draw(t, "i"), Count: rapid.Int64Range(-5, 1e9).Draw(t, "c")}},
				Values:  []Summary{{N: 3, SumLog: rapid.SampledFrom(odd).Draw(t, "vs"), SumLogSq: 1}},
			}
			a.ObserveBatch(&b)
		}
		v := a.Decide(Step{Weight: 5, Elapsed: time.Hour, MinRequests: 1, MaxDuration: time.Minute, OnTimeout: Promote})
		for _, m := range v.Metrics {
			if !resultFinite(&m) || m.EValue < 0 {
				t.Fatalf("bad result %+v", m)
			}
		}
	})
}

// TestUnmarshalBinaryRejectsImpossibleCounts: states no sequence of calls
// can reach (more counted errors than requests, a weight StartStep would
// not keep) make the error test's bounds meaningless, so a checkpoint
// holding one is corrupt (found by FuzzUnmarshalBinary: testdata/fuzz).
func TestUnmarshalBinaryRejectsImpossibleCounts(t *testing.T) {
	for name, corrupt := range map[string]func(a *Analyzer){
		"step errors":    func(a *Analyzer) { a.cur.err[Canary] = a.cur.out[Canary] + 1 },
		"past step":      func(a *Analyzer) { a.steps[0].err[Baseline] = a.steps[0].out[Baseline] + 1 },
		"total errors":   func(a *Analyzer) { a.totErr[Baseline] = a.totOut[Baseline] + 1 },
		"weight":         func(a *Analyzer) { a.weight = 150 },
		"step weight":    func(a *Analyzer) { a.cur.weight = -1 },
		"NaN step share": func(a *Analyzer) { a.steps[0].weight = math.NaN() },
	} {
		a := mustNew(t, defaultConfig())
		a.StartStep(5)
		feed(a, newStream(3, 0.05), 2000)
		a.StartStep(25)
		feed(a, newStream(4, 0.05), 2000)
		if good, _ := a.MarshalBinary(); mustNew(t, defaultConfig()).UnmarshalBinary(good) != nil {
			t.Fatalf("%s: the uncorrupted checkpoint does not restore", name)
		}
		corrupt(a)
		data, _ := a.MarshalBinary()
		if err := mustNew(t, defaultConfig()).UnmarshalBinary(data); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("%s: UnmarshalBinary = %v, want ErrCheckpoint", name, err)
		}
	}
}
