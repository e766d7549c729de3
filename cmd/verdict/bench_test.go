package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/bench"
	"github.com/verdict-dev/verdict/policy"
)

// TestBenchQuick runs `verdict bench --quick --json` and checks that every
// figure is there and positive. The targets are measured, not asserted:
// CI machines are too varied for that.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an embedded server for several seconds")
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"bench", "--quick", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("bench --quick --json: exit %d\n%s", code, errb.String())
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("bench --json output is not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{
		"rawConsumePerSec", "rawConsumeExplicitAckPerSec", "batchedObsPerSec",
		"decisionLatencyP50Ms", "decisionLatencyP99Ms", "bytesPerRollout", "publishPerSec", "rawCPUPerEventUs",
	} {
		if v, ok := got[k].(float64); !ok || !(v > 0) {
			t.Errorf("bench --json: %s = %v, want a positive number", k, got[k])
		}
	}
	// Wall clock, the server's against the bench's: not negative, and
	// below the whole latency.
	if v, ok := got["tipStoredP99Ms"].(float64); !ok || v < 0 || v > got["decisionLatencyMaxMs"].(float64) {
		t.Errorf("bench --json: tipStoredP99Ms = %v, want between 0 and decisionLatencyMaxMs (%v)", got["tipStoredP99Ms"], got["decisionLatencyMaxMs"])
	}
	for _, k := range []string{"ingestPerSec", "ratio", "ratioExplicitAck", "ingestCPUPerEventUs"} {
		m, ok := got[k].(map[string]any)
		if !ok {
			t.Errorf("bench --json: %s = %v, want an object", k, got[k])
			continue
		}
		for _, n := range []string{"1", "10", "100"} {
			if v, ok := m[n].(float64); !ok || !(v > 0) {
				t.Errorf("bench --json: %s[%q] = %v, want a positive number", k, n, m[n])
			}
		}
	}
	// --quick runs once: each per-repetition list has one entry per
	// rollout count.
	counts := []string{"1", "10", "100"}
	oneRun := func(field string) map[string]float64 {
		lists, _ := got[field].(map[string]any)
		out := map[string]float64{}
		for _, n := range counts {
			l, ok := lists[n].([]any)
			if !ok || len(l) != 1 {
				t.Errorf("bench --json: %s[%q] = %v, want one entry", field, n, lists[n])
				continue
			}
			if x, ok := l[0].(float64); ok {
				out[n] = x
			} else {
				t.Errorf("bench --json: %s[%q] = %v, want a number", field, n, l)
			}
		}
		return out
	}
	ratio, _ := got["ratio"].(map[string]any)
	cpus, _ := got["ingestCPUPerEventUs"].(map[string]any)
	runs, gcs, gcCPU := oneRun("ratioRuns"), oneRun("ingestGCRuns"), oneRun("ingestGCCPURuns")
	for _, n := range counts {
		// The one paired ratio is the ratio itself (up to the rounding of
		// the rates to three digits).
		if want, _ := ratio[n].(float64); math.Abs(runs[n]-want) > 0.01*want {
			t.Errorf("bench --json: ratioRuns[%q] = %v, want %v (one run)", n, runs[n], want)
		}
		// GC cycles: a whole number.
		if c := gcs[n]; c < 0 || c != math.Trunc(c) {
			t.Errorf("bench --json: ingestGCRuns[%q] = %v, want a whole number >= 0", n, c)
		}
		// The collector's CPU per event: a part of the window's.
		if all, _ := cpus[n].(float64); gcCPU[n] < 0 || gcCPU[n] > all {
			t.Errorf("bench --json: ingestGCCPURuns[%q] = %v, want from 0 to the CPU per event, %v", n, gcCPU[n], all)
		}
	}
	if ign, ok := got["ingestIgnored"].(map[string]any); ok {
		for n, v := range ign {
			if v != 0.0 {
				t.Errorf("bench --json: ingestIgnored[%q] = %v, want 0 (events acked without an owner)", n, v)
			}
		}
	}
}

func TestBenchTable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an embedded server for several seconds")
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"bench", "--quick"}, &out, &errb); code != 0 {
		t.Fatalf("bench --quick: exit %d\n%s", code, errb.String())
	}
	for _, want := range []string{"raw consume", "ingest, 100 rollouts", "decision latency p99", "memory per rollout"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench --quick output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"--events", "0"}, {"--warmup", "-1"}, {"extra"}, {"--nope"}, {"--only", "nope"}, {"--rollouts", "1,x"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"bench"}, args...), &out, &errb); code != 2 {
			t.Errorf("bench %v: exit %d, want 2", args, code)
		}
	}
}

// TestTipSequence checks the latency measurement's premise: the events
// before the tip decide nothing and the tip rolls back, under the bench
// policy.
func TestTipSequence(t *testing.T) {
	pols, err := policy.Parse("bench.yaml", []byte(benchPolicy))
	if err != nil {
		t.Fatal(err)
	}
	evs, tip, err := bench.TipSequence("tip-00001", pols[0], time.Unix(1e9, 0), 10000)
	if err != nil {
		t.Fatalf("TipSequence: %v", err)
	}
	if tip != len(evs)-1 || tip < 1 {
		t.Errorf("TipSequence: tip %d of %d events, want the last and not the first", tip, len(evs))
	}
}
