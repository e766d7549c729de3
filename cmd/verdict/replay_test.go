package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

var update = flag.Bool("update", false, "rewrite golden files and generated traces in testdata")

// replayTrace describes a generated trace in testdata/replay.
type replayTrace struct {
	name    string
	canary  version
	batch   bool // batch form, one batch per variant and second
	rate    float64
	seconds int
}

var replayTraces = []replayTrace{
	// A good canary at a high request rate, as batches: completes.
	{name: "good-batches", canary: version{errRate: 0.02, medianMs: 40, logSD: 0.5}, batch: true, rate: 4000, seconds: 600},
	// A canary with 3x the errors, single events: rolls back at the first step.
	{name: "bad-events", canary: version{errRate: 0.06, medianMs: 40, logSD: 0.5}, rate: 200, seconds: 120},
}

// writeTrace generates a trace deterministically, as a router that follows
// the weights a state machine decides would have recorded it.
func writeTrace(tr replayTrace, pol *policy.Policy, w *bytes.Buffer) error {
	rng := rand.New(rand.NewPCG(42, uint64(len(tr.name))))
	m, err := engine.NewMachine(engine.Spec{Rollout: tr.name, Policy: pol.Name}, pol)
	if err != nil {
		return err
	}
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	emit := func(line []byte) error {
		rec, err := telemetry.Decode(line)
		if err != nil {
			return err
		}
		if m.State() == engine.StatePending {
			m.Start(rec.Time) // as replay does: the router had no route before
		}
		m.ObserveRecord(rec.Time, &rec)
		w.Write(line)
		w.WriteByte('\n')
		return nil
	}
	base := version{errRate: 0.02, medianMs: 40, logSD: 0.5}
	n := 0
	for s := 0; s < tr.seconds; s++ {
		builders := [2]*telemetry.Builder{telemetry.NewBuilder(tr.name, analyzer.Baseline), telemetry.NewBuilder(tr.name, analyzer.Canary)}
		reqs := int(tr.rate)
		for i := 0; i < reqs; i++ {
			at := start.Add(time.Duration(s)*time.Second + time.Duration(i)*time.Second/time.Duration(reqs))
			v, prof := analyzer.Baseline, base
			if rng.Float64()*100 < m.Route().Weight {
				v, prof = analyzer.Canary, tr.canary
			}
			ms, failed := prof.sample(rng)
			ms = math.Round(ms*1000) / 1000
			if tr.batch {
				builders[v].Add(ms, failed)
				continue
			}
			n++
			status := 200
			if failed {
				status = 503
			}
			variant := "baseline"
			if v == analyzer.Canary {
				variant = "canary"
			}
			line := fmt.Sprintf(`{"rollout":%q,"variant":%q,"time":%q,"latency_ms":%g,"status":%d,"unit":"u%d","id":"e%d"}`,
				tr.name, variant, at.Format(time.RFC3339Nano), ms, status, rng.IntN(5000), n)
			if err := emit([]byte(line)); err != nil {
				return err
			}
		}
		for _, b := range builders {
			if b.Count() == 0 {
				continue
			}
			n++
			rec := b.Record(fmt.Sprintf("b%d", n), start.Add(time.Duration(s+1)*time.Second))
			data, err := telemetry.Encode(&rec)
			if err != nil {
				return err
			}
			if err := emit(data); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestReplayGolden(t *testing.T) {
	for _, tr := range replayTraces {
		t.Run(tr.name, func(t *testing.T) {
			trace := filepath.Join("..", "..", "testdata", "replay", tr.name+".jsonl")
			golden := strings.TrimSuffix(trace, ".jsonl") + ".golden"
			if *update {
				var b bytes.Buffer
				pols, err := policy.Load(filepath.Join("..", "..", "testdata", "replay", "policy.yaml"))
				if err != nil {
					t.Fatal(err)
				}
				if err := writeTrace(tr, pols["replay"], &b); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(trace, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pol := filepath.Join("..", "..", "testdata", "replay", "policy.yaml")
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"replay", "--policy", pol, trace}, &out, &errb); code != 0 {
				t.Fatalf("replay exit %d: %s", code, errb.String())
			}
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("replay %s differs from %s (run with -update if the change is intended)\ngot:\n%s", trace, golden, out.String())
			}
			// Run again: byte-identical.
			var again bytes.Buffer
			run(context.Background(), []string{"replay", "--policy", pol, trace}, &again, &errb)
			if !bytes.Equal(out.Bytes(), again.Bytes()) {
				t.Errorf("two replays of %s differ", trace)
			}
		})
	}
}

func TestReplayOutcomes(t *testing.T) {
	want := map[string]string{"good-batches": `"action":"complete"`, "bad-events": `"action":"rollback"`}
	for name, action := range want {
		golden := filepath.Join("..", "..", "testdata", "replay", name+".golden")
		b, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(action)) {
			t.Errorf("%s has no %s decision:\n%s", golden, action, b)
		}
	}
}

func TestReplayBadInput(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "t.jsonl")
	lines := `{"rollout":"x","variant":"canary","time":"2026-11-26T10:00:00Z","latency_ms":5}
not json
{"rollout":"x","variant":"purple","time":"2026-11-26T10:00:01Z","latency_ms":5}
{"rollout":"x","variant":"canary","latency_ms":5}
`
	if err := os.WriteFile(trace, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join("..", "..", "testdata", "replay", "policy.yaml")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"replay", "--policy", pol, trace}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, want 0: %s", code, errb.String())
	}
	for _, want := range []string{"t.jsonl:2: bad-json", "t.jsonl:3: bad-variant", "t.jsonl:4: replay needs the event time", "skipped 3 invalid lines"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if !strings.Contains(out.String(), `"action":"start"`) {
		t.Errorf("the valid line did not start the rollout:\n%s", out.String())
	}
	if code := run(context.Background(), []string{"replay", trace}, &out, &errb); code != 2 {
		t.Errorf("replay without --policy: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"replay", "--policy", filepath.Join(dir, "missing.yaml"), trace}, &out, &errb); code != 1 {
		t.Errorf("replay with a missing policy: exit %d, want 1", code)
	}
}
