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
	// --quick runs once: one paired ratio per rollout count, the ratio
	// itself (up to the rounding of the rates to three digits).
	runs, _ := got["ratioRuns"].(map[string]any)
	ratio, _ := got["ratio"].(map[string]any)
	for _, n := range []string{"1", "10", "100"} {
		r, ok := runs[n].([]any)
		want, _ := ratio[n].(float64)
		if !ok || len(r) != 1 {
			t.Errorf("bench --json: ratioRuns[%q] = %v, want one run", n, runs[n])
			continue
		}
		if got, _ := r[0].(float64); math.Abs(got-want) > 0.01*want {
			t.Errorf("bench --json: ratioRuns[%q] = %v, want [%v] (one run)", n, runs[n], want)
		}
	}
	// One count of GC cycles per rollout count and repetition.
	gcs, _ := got["ingestGCRuns"].(map[string]any)
	for _, n := range []string{"1", "10", "100"} {
		g, ok := gcs[n].([]any)
		if !ok || len(g) != 1 {
			t.Errorf("bench --json: ingestGCRuns[%q] = %v, want one count", n, gcs[n])
			continue
		}
		if c, ok := g[0].(float64); !ok || c < 0 || c != math.Trunc(c) {
			t.Errorf("bench --json: ingestGCRuns[%q] = %v, want a whole number >= 0", n, g)
		}
	}
	// The collector's CPU per event, one per rollout count and
	// repetition: a part of that window's CPU per event.
	gcCPU, _ := got["ingestGCCPURuns"].(map[string]any)
	cpus, _ := got["ingestCPUPerEventUs"].(map[string]any)
	for _, n := range []string{"1", "10", "100"} {
		g, ok := gcCPU[n].([]any)
		if !ok || len(g) != 1 {
			t.Errorf("bench --json: ingestGCCPURuns[%q] = %v, want one figure", n, gcCPU[n])
			continue
		}
		all, _ := cpus[n].(float64)
		if c, ok := g[0].(float64); !ok || c < 0 || c > all {
			t.Errorf("bench --json: ingestGCCPURuns[%q] = %v, want from 0 to the CPU per event, %v", n, g, all)
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
