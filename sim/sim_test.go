package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/policy"
)

// The bar (STATS.md §7), seeded. Replication counts shrink with -short.

func simPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	set, err := policy.Load("../testdata/sim/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := set["sim"]
	if p == nil {
		t.Fatal("testdata/sim/policy.yaml: no policy named sim")
	}
	return p
}

func reps(n int) int {
	if testing.Short() {
		return max(n/5, 20)
	}
	return n
}

func simulate(t *testing.T, scenario string, n int, share float64) *Report {
	t.Helper()
	return simulateWith(t, "", scenario, n, share)
}

// simulateWith runs a scenario under the named policy of
// testdata/sim/single.yaml, or under testdata/sim/policy.yaml when name is
// empty.
func simulateWith(t *testing.T, name, scenario string, n int, share float64) *Report {
	t.Helper()
	pol := simPolicy(t)
	if name != "" {
		set, err := policy.Load("../testdata/sim/single.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if pol = set[name]; pol == nil {
			t.Fatalf("testdata/sim/single.yaml: no policy %s", name)
		}
	}
	sc, err := Lookup(scenario)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Config{Policy: pol, Scenario: sc, Reps: n, Seed: 20261126, Share: share})
	if err != nil {
		t.Fatalf("Run(%s) = %v", scenario, err)
	}
	return rep
}

func method(t *testing.T, rep *Report, name string) MethodSummary {
	t.Helper()
	for _, m := range rep.Methods {
		if m.Method == name {
			return m
		}
	}
	t.Fatalf("no method %s in report", name)
	return MethodSummary{}
}

func logReport(t *testing.T, rep *Report) {
	t.Helper()
	for _, m := range rep.Methods {
		t.Logf("%s %-18s rollback %5.1f%% [%5.1f%%, %5.1f%%] promote %5.1f%% hold %5.1f%% median->rollback %s p90 %s median->promote %s n=%d causes %v",
			rep.Scenario, m.Method, 100*m.RollbackRate, 100*m.RollbackRateLower95, 100*m.RollbackRateUpper95,
			100*m.PromoteRate, 100*m.HoldRate, fmtp(m.MedianRequestsToRollback), fmtp(m.P90RequestsToRollback),
			fmtp(m.MedianRequestsToPromote), m.SampleSize, m.Causes)
	}
}

func fmtp(p *int64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatInt(*p, 10)
}

// aaTolerance is how far above alpha the point estimate of an A/A false
// rollback rate may be: about two standard errors of a binomial rate at
// alpha = 0.05 over 400 replications.
const aaTolerance = 0.02

// TestSimulateAA: with the versions identical, Verdict's rollback rate is
// at most alpha (the Clopper-Pearson lower bound is below alpha and the
// point estimate at most alpha + aaTolerance), following the steps, at a
// pinned 5% share, and with the nuisances; the naive repeated z-test is far
// above alpha (its lower bound above alpha, its estimate at least twice
// alpha). An A/A replication costs 0.13-0.25 s of CPU (Verdict holds or
// promotes late, after 300,000-540,000 requests, and the analyzer's Decide
// is most of the cost), so the counts are sized to keep the package near
// 90 s on two cores; -short divides them by 5. `verdict simulate` runs
// the same scenarios at 1,000 replications.
func TestSimulateAA(t *testing.T) {
	alpha := simPolicy(t).Alpha
	for _, tc := range []struct {
		scenario string
		reps     int
		share    float64
	}{
		{"aa", 400, 0},
		{"aa", 400, 5},
		{"aa-heavy-tail", 60, 0},
		{"aa-bursty", 60, 0},
		{"aa-diurnal", 60, 0},
	} {
		name := tc.scenario
		if tc.share > 0 {
			name += "/pinned"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rep := simulate(t, tc.scenario, reps(tc.reps), tc.share)
			logReport(t, rep)
			v := method(t, rep, MethodVerdict)
			if v.RollbackRateLower95 >= alpha || v.RollbackRate > alpha+aaTolerance {
				t.Errorf("verdict A/A rollback rate %.3f (95%% CI %.3f..%.3f) over %d reps, want <= alpha %.2f (lower bound below alpha, estimate <= %.2f); causes %v",
					v.RollbackRate, v.RollbackRateLower95, v.RollbackRateUpper95, rep.Reps, alpha, alpha+aaTolerance, v.Causes)
			}
			if tc.scenario == "aa" {
				nz := method(t, rep, MethodNaiveZ)
				if nz.RollbackRateLower95 <= alpha || nz.RollbackRate < 2*alpha {
					t.Errorf("naive-z A/A rollback rate %.3f (95%% CI %.3f..%.3f), want far above alpha (lower bound > %.2f, estimate >= %.2f)",
						nz.RollbackRate, nz.RollbackRateLower95, nz.RollbackRateUpper95, alpha, 2*alpha)
				}
			}
		})
	}
}

// TestSimulateDetection: Verdict catches real regressions before a
// fixed-horizon test with 80% power has even finished, catches a tail-only
// regression by its quantile metric, and never promotes through a sample
// ratio mismatch. The single-metric cases run the same scenario under one
// metric of the policy (testdata/sim/single.yaml).
//
// The comparison is at the same false rollback rate. Verdict's rollback
// rule averages the policy's k metrics' e-values, so its chance of ever
// rolling back a canary that is within every margin is at most alpha in
// all (the regressed metric must reach k/alpha alone: never weaker than
// Bonferroni). A fixed-horizon test that rolls back when any of k metrics
// rejects at alpha has a false rollback rate up to k*alpha (the peer's
// at-margins rate is 9.8% at alpha 5% with k = 3). So the horizon the bar
// compares with is the fixed test's 80%-power sample size at alpha/k; the
// uncorrected one (alpha per metric) is logged next to it. For a
// single-metric policy the two are the same.
func TestSimulateDetection(t *testing.T) {
	for _, tc := range []struct{ scenario, policy string }{
		{"errors-x3", ""},
		{"errors-x3", "sim-errors"},
		{"latency-x1.2", ""},
		{"latency-x1.2", "sim-latency"},
	} {
		name := tc.scenario
		if tc.policy != "" {
			name += "/" + tc.policy
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fasterThanFixed(t, simulateWith(t, tc.policy, tc.scenario, reps(200), 0), tc.policy)
		})
	}
	t.Run("p99-x1.5", func(t *testing.T) {
		t.Parallel()
		rep := simulate(t, "p99-x1.5", reps(100), 0)
		logReport(t, rep)
		byP99 := 0
		for _, r := range rep.Results {
			if v := r[0]; v.Outcome == Rollback && strings.HasPrefix(v.Reason, "p99:") {
				byP99++
			}
		}
		if got := float64(byP99) / float64(rep.Reps); got < 0.8 {
			v := method(t, rep, MethodVerdict)
			t.Errorf("p99-x1.5: %.3f of rollouts rolled back with a reason naming p99, want >= 0.8 (rollback rate %.3f, causes %v)",
				got, v.RollbackRate, v.Causes)
		}
	})
	t.Run("srm", func(t *testing.T) {
		t.Parallel()
		rep := simulate(t, "srm", reps(50), 0)
		logReport(t, rep)
		v := method(t, rep, MethodVerdict)
		if v.PromoteRate != 0 {
			t.Errorf("srm: verdict promote rate %.3f, want 0", v.PromoteRate)
		}
		if v.HoldRate == 0 {
			t.Errorf("srm: verdict hold rate 0, want holds")
		}
		for i, r := range rep.Results {
			said := false
			for _, h := range r[0].Holds {
				said = said || strings.Contains(h, "sample ratio mismatch")
			}
			if !said {
				t.Errorf("srm rep %d: %s after %d requests, holds %q: no hold names the sample ratio mismatch",
					i, r[0].Outcome, r[0].Requests, r[0].Holds)
				break
			}
		}
	})
}

func fasterThanFixed(t *testing.T, rep *Report, single string) {
	t.Helper()
	logReport(t, rep)
	v, mw := method(t, rep, MethodVerdict), method(t, rep, MethodFixedMW)
	if v.MedianRequestsToRollback == nil {
		t.Fatalf("%s: verdict never rolled back in %d reps", rep.Scenario, rep.Reps)
	}
	pol := simPolicy(t)
	if single != "" {
		set, err := policy.Load("../testdata/sim/single.yaml")
		if err != nil {
			t.Fatal(err)
		}
		pol = set[single]
	}
	sc, err := Lookup(rep.Scenario)
	if err != nil {
		t.Fatal(err)
	}
	k := len(pol.Metrics)
	metrics, err := peerMetrics(pol)
	if err != nil {
		t.Fatal(err)
	}
	matched := fixedSampleSize(&sc, metrics, pol.Steps[0].Weight/100, pol.Alpha/float64(k))
	if mw.SampleSizeFamilywise != matched {
		t.Errorf("report's familywise sample size %d, want %d (alpha/%d per metric)", mw.SampleSizeFamilywise, matched, k)
	}
	med := *v.MedianRequestsToRollback
	t.Logf("%s, policy %s (%d metrics): verdict median %d requests to rollback; fixed horizon %d at alpha/%d per metric (same false rollback rate), %d at alpha per metric (ratio %.2f)",
		rep.Scenario, rep.Policy, k, med, matched, k, mw.SampleSize, float64(med)/float64(mw.SampleSize))
	if med >= matched {
		t.Errorf("%s, policy %s: verdict median requests to rollback %d (rollback rate %.3f), want below the fixed-horizon sample size %d at the same false rollback rate (alpha/%d per metric)",
			rep.Scenario, rep.Policy, med, v.RollbackRate, matched, k)
	}
}

// TestSimulateDeterminism: the report depends on the seed only, not on
// the number of workers.
func TestSimulateDeterminism(t *testing.T) {
	pol := simPolicy(t)
	sc, _ := Lookup("errors-x3")
	encode := func(seed uint64, workers int) []byte {
		rep, err := Run(context.Background(), Config{Policy: pol, Scenario: sc, Reps: 24, Seed: seed, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := encode(7, 1), encode(7, 3), encode(8, 2)
	if !bytes.Equal(a, b) {
		t.Errorf("same seed, different workers:\n%s\n%s", a, b)
	}
	if bytes.Equal(a, c) {
		t.Errorf("seeds 7 and 8 gave the same report:\n%s", a)
	}
}

func TestSimulateLookup(t *testing.T) {
	for _, name := range ScenarioNames() {
		if sc, err := Lookup(name); err != nil || sc.Name != name {
			t.Errorf("Lookup(%q) = %q, %v", name, sc.Name, err)
		}
	}
	_, err := Lookup("nope")
	if !errors.Is(err, ErrUnknownScenario) {
		t.Fatalf("Lookup(nope) = %v, want ErrUnknownScenario", err)
	}
	for _, name := range ScenarioNames() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("Lookup(nope) error %q does not list %s", err, name)
		}
	}
}

// TestSimulateScenarios checks each scenario's stream against its
// description, on 200,000 requests.
func TestSimulateScenarios(t *testing.T) {
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			st := sc.NewStream(rand.New(rand.NewPCG(1, 1)), 0)
			const n = 200_000
			var r Request
			var errA, errB, canary int
			var logA, logB float64
			for range n {
				st.Next(&r)
				if r.Base.Error {
					errA++
				}
				if r.Canary.Error {
					errB++
				}
				if sc.Canary(&r, 5) {
					canary++
				}
				logA += math.Log(r.Base.LatencyMs)
				logB += math.Log(r.Canary.LatencyMs)
			}
			if got, want := float64(errA)/n, sc.ErrorRate; math.Abs(got-want) > 0.1*want {
				t.Errorf("baseline error rate %.4f, want %.4f ±10%%", got, want)
			}
			if got, want := float64(errB)/float64(errA), sc.ErrorRatio; math.Abs(got-want) > 0.1*want {
				t.Errorf("error ratio %.3f, want %.3f ±10%%", got, want)
			}
			if got, want := float64(canary)/n, 0.05*sc.SRM; math.Abs(got-want) > 0.05*want {
				t.Errorf("canary share at 5%%: %.4f, want %.4f ±5%%", got, want)
			}
			if got, want := math.Exp((logB-logA)/n), sc.LatencyRatio; sc.TailRatio == 1 && math.Abs(got-want) > 1e-9 {
				t.Errorf("geometric-mean latency ratio %.4f, want %.4f", got, want)
			}
		})
	}
}

func TestSimulateClopperPearson(t *testing.T) {
	// Reference values: exact binomial tails, bisected independently
	// (the definition, not the Beta quantile).
	for _, tc := range []struct {
		x, n   int
		lo, hi float64
	}{
		{0, 10, 0, 0.3084971},
		{5, 10, 0.1870860, 0.8129140},
		{10, 10, 0.6915029, 1},
		{20, 400, 0.03080524, 0.07616697},
	} {
		lo, hi := ClopperPearson(tc.x, tc.n, 0.05)
		if math.Abs(lo-tc.lo) > 1e-6 || math.Abs(hi-tc.hi) > 1e-6 {
			t.Errorf("ClopperPearson(%d, %d) = %.7f, %.7f, want %.7f, %.7f", tc.x, tc.n, lo, hi, tc.lo, tc.hi)
		}
	}
}

// TestSimulateSampleSize checks the fixed-horizon formulas against
// STATS.md's pilot: 1% -> 1.5% errors at a 5% share need ~76k requests for
// 80% power without a margin.
func TestSimulateSampleSize(t *testing.T) {
	n, ok := propSampleSize(0.01, 0.015, 1, 0.05, 0.05)
	if !ok || n < 75_000 || n > 77_000 {
		t.Errorf("propSampleSize(1%% -> 1.5%%) = %d, %v, want ~76k", n, ok)
	}
	// Noether, latency x1.2 with log-sd 1, no margin: P(Y > X) = Phi(log 1.2 / sqrt 2).
	n, ok = mwSampleSize(lognormalShiftP(math.Log(1.2), 1), 0.05, 0.05)
	if !ok || n < 4_000 || n > 4_300 {
		t.Errorf("mwSampleSize(latency x1.2) = %d, %v, want ~4.1k", n, ok)
	}
}
