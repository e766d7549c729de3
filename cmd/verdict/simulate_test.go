package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/sim"
)

const simPolicyFile = "../../testdata/sim/policy.yaml"

func runSim(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"simulate"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestSimulateUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no policy", []string{"--scenario", "aa"}, "--policy is required"},
		{"no scenario", []string{"--policy", simPolicyFile}, "--scenario is required"},
		{"unknown scenario", []string{"--policy", simPolicyFile, "--scenario", "nope"}, "valid: " + strings.Join(sim.ScenarioNames(), ", ")},
		{"zero reps", []string{"--policy", simPolicyFile, "--scenario", "aa", "--reps", "0"}, "--reps 0"},
		{"zero share", []string{"--policy", simPolicyFile, "--scenario", "aa", "--share", "0"}, "--share 0"},
		{"full share", []string{"--policy", simPolicyFile, "--scenario", "aa", "--share", "100"}, "--share 100"},
		{"extra argument", []string{"--policy", simPolicyFile, "--scenario", "aa", "extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"--policy", simPolicyFile, "--scenario", "aa", "--nope"}, "flag provided but not defined"},
		{"bad seed", []string{"--policy", simPolicyFile, "--scenario", "aa", "--seed", "-1"}, "invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runSim(t, tc.args...)
			if code != 2 {
				t.Errorf("simulate %v: exit %d, want 2", tc.args, code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("simulate %v: stderr %q, want it to contain %q", tc.args, stderr, tc.want)
			}
		})
	}
}

func TestSimulatePolicyError(t *testing.T) {
	code, _, stderr := runSim(t, "--policy", "testdata/does-not-exist.yaml", "--scenario", "aa", "--reps", "1")
	if code != 1 || stderr == "" {
		t.Errorf("simulate with a missing policy: exit %d, stderr %q; want 1 and a message", code, stderr)
	}
}

func TestSimulateHelp(t *testing.T) {
	code, stdout, stderr := runSim(t, "-h")
	if code != 0 {
		t.Fatalf("simulate -h: exit %d, want 0", code)
	}
	help := stdout + stderr
	for _, want := range append(append([]string{
		"Usage: verdict simulate", "--policy", "--name", "--scenario", "--reps", "--seed", "--share", "--json",
		"2,000,000", "Clopper-Pearson",
	}, sim.ScenarioNames()...), sim.Methods...) {
		if !strings.Contains(help, want) {
			t.Errorf("simulate -h does not mention %q", want)
		}
	}
}

// TestSimulateJSON runs the command as documented and checks that what the
// help says about the output holds.
func TestSimulateJSON(t *testing.T) {
	args := []string{"--policy", simPolicyFile, "--scenario", "errors-x3", "--reps", "8", "--seed", "3", "--json"}
	code, stdout, stderr := runSim(t, args...)
	if code != 0 {
		t.Fatalf("simulate %v: exit %d, stderr %s", args, code, stderr)
	}
	var rep struct {
		Scenario    string  `json:"scenario"`
		Reps        int     `json:"reps"`
		Seed        uint64  `json:"seed"`
		MaxRequests int64   `json:"maxRequests"`
		MaxDuration string  `json:"maxDuration"`
		PeerShare   float64 `json:"peerShare"`
		Methods     []struct {
			Method                   string   `json:"method"`
			RollbackRate             *float64 `json:"rollbackRate"`
			PromoteRate              *float64 `json:"promoteRate"`
			HoldRate                 *float64 `json:"holdRate"`
			RollbackRateUpper95      *float64 `json:"rollbackRateUpper95"`
			MedianRequestsToRollback *int64   `json:"medianRequestsToRollback"`
			P90RequestsToRollback    *int64   `json:"p90RequestsToRollback"`
		} `json:"methods"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("simulate --json output does not parse: %v\n%s", err, stdout)
	}
	if rep.Scenario != "errors-x3" || rep.Reps != 8 || rep.Seed != 3 {
		t.Errorf("header = %q, %d reps, seed %d; want errors-x3, 8, 3", rep.Scenario, rep.Reps, rep.Seed)
	}
	// The help promises a cap of the steps' maxDurations (3 x 30m) or 2,000,000 requests.
	if rep.MaxRequests != 2_000_000 || rep.MaxDuration != "1h30m0s" || rep.PeerShare != 5 {
		t.Errorf("caps %d requests, %s; peers at %v%%; want 2000000, 1h30m0s, 5%%", rep.MaxRequests, rep.MaxDuration, rep.PeerShare)
	}
	if len(rep.Methods) != len(sim.Methods) {
		t.Fatalf("%d methods, want %d", len(rep.Methods), len(sim.Methods))
	}
	for i, m := range rep.Methods {
		if m.Method != sim.Methods[i] {
			t.Errorf("methods[%d] = %q, want %q", i, m.Method, sim.Methods[i])
		}
		if m.RollbackRate == nil || m.PromoteRate == nil || m.HoldRate == nil || m.RollbackRateUpper95 == nil {
			t.Errorf("%s: missing rates", m.Method)
			continue
		}
		if sum := *m.RollbackRate + *m.PromoteRate + *m.HoldRate; sum < 0.999 || sum > 1.001 {
			t.Errorf("%s: rates sum to %v", m.Method, sum)
		}
		if *m.RollbackRateUpper95 < *m.RollbackRate {
			t.Errorf("%s: upper bound %v below the rate %v", m.Method, *m.RollbackRateUpper95, *m.RollbackRate)
		}
	}
	if v := rep.Methods[0]; v.MedianRequestsToRollback == nil || *v.RollbackRate == 0 {
		t.Errorf("errors-x3: verdict never rolled back in 8 reps")
	}

	// Same seed, same bytes; another seed, other bytes.
	if _, again, _ := runSim(t, args...); again != stdout {
		t.Errorf("two runs with seed 3 differ:\n%s\n%s", stdout, again)
	}
	args[7] = "4"
	if _, other, _ := runSim(t, args...); other == stdout {
		t.Errorf("seeds 3 and 4 gave the same output")
	}
}

func TestSimulateTable(t *testing.T) {
	code, stdout, stderr := runSim(t, "--policy", simPolicyFile, "--scenario", "errors-x3", "--reps", "4", "--share", "5")
	if code != 0 {
		t.Fatalf("simulate: exit %d, stderr %s", code, stderr)
	}
	for _, want := range append([]string{"scenario  errors-x3", "pinned at 5%", "rollback", "95% CI", "median to rollback"}, sim.Methods...) {
		if !strings.Contains(stdout, want) {
			t.Errorf("table does not contain %q:\n%s", want, stdout)
		}
	}
	// Aligned: every row of the table has the same width.
	var widths []int
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "method") || strings.Contains(line, "%]") {
			widths = append(widths, len(line))
		}
	}
	for _, w := range widths {
		if w != widths[0] {
			t.Errorf("table rows of different widths %v:\n%s", widths, stdout)
			break
		}
	}
}
