package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/verdict-dev/verdict/sim"
)

func init() {
	register("simulate", command{
		summary: "Monte Carlo calibration: false rollbacks, power and time to decide, next to other methods",
		run:     runSimulate,
	})
}

const simulateUsage = `Usage: verdict simulate --policy FILE [--name NAME] --scenario NAME [--reps N] [--seed K] [--share P] [--json]

Runs N simulated rollouts of a service under the policy and reports how
often each method rolls back, promotes or holds, and after how many requests
(both versions counted). The output depends only on the flags: the same seed
gives the same bytes.

Verdict runs the policy as serve would: a rollout state machine per
replication, the simulated router following its weights, evaluations every
100 requests, promote windows ignored. A replication ends at a terminal
decision or at the cap (the sum of the steps' maxDurations, or 2,000,000
requests), which counts as a hold. With --share, the canary share is pinned
at P percent and Verdict's analyzer decides alone with the first step's
durations, until its first rollback or promote.

On the same requests, at a fixed share (P, or the first step's weight), the
peers, each using the policy's alpha and margins:
  naive-z             one-sided z-tests (two proportions for errors, Welch on
                      log latency, exceedances for quantiles) re-run every 100
                      requests; rollback at the first rejection, promote when
                      the steps' minimum durations and requests have passed
  fixed-mann-whitney  once, at the sample size with 80% power for the
                      scenario's effect (Noether; two-proportion formula): a
                      Mann-Whitney U test on latency/(1+margin) and a
                      two-proportion z-test on errors, like Kayenta's judge
  threshold           every 60s of simulated time, the canary's error rate,
                      mean latency and quantiles over the minute against the
                      known baseline value x (1+margin), like Flagger;
                      rollback after 5 failed checks, promote after one
                      passing check per minute of the steps' minDurations

Rates come with a Clopper-Pearson 95% interval; request counts are
nearest-rank medians and 90th percentiles over the replications that ended
that way ("-" or null when none did).

Scenarios:
SCENARIOS

Exit status: 0 on success, 1 when the policy cannot be loaded or the run
fails, 2 on a usage error (including an unknown scenario).

Flags:
`

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	polFile := fs.String("policy", "", "policy `FILE` (YAML)")
	name := fs.String("name", "", "policy `NAME` to use when the file holds several")
	scenario := fs.String("scenario", "", "scenario `NAME` (see above)")
	reps := fs.Int("reps", 1000, "number of simulated rollouts `N`")
	seed := fs.Uint64("seed", 1, "random seed `K`")
	share := fs.Float64("share", 0, "pin the canary share at `P` percent, in (0, 100) (default: follow the policy's steps)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile of the run to `FILE`")
	list := fs.Bool("list", false, "print the scenario names, one a line, and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, strings.Replace(simulateUsage, "SCENARIOS\n", scenarioList(), 1))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "verdict simulate: "+format+"\n", a...)
		fmt.Fprintln(stderr, "Run 'verdict simulate -h' for usage.")
		return 2
	}
	if *list && fs.NArg() == 0 {
		for _, n := range sim.ScenarioNames() {
			fmt.Fprintln(stdout, n)
		}
		return 0
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q", fs.Arg(0))
	case *polFile == "":
		return usageErr("--policy is required")
	case *scenario == "":
		return usageErr("--scenario is required (one of %s)", strings.Join(sim.ScenarioNames(), ", "))
	case *reps < 1:
		return usageErr("--reps %d: need at least 1", *reps)
	case shareSet(fs) && !(*share > 0 && *share < 100):
		return usageErr("--share %v: need a percentage in (0, 100)", *share)
	}
	sc, err := sim.Lookup(*scenario)
	if err != nil {
		return usageErr("%v", err)
	}
	pol, err := loadOnePolicy(*polFile, *name)
	if err != nil {
		fmt.Fprintln(stderr, "verdict simulate:", err)
		return 1
	}
	if *cpuprof != "" {
		stop, err := cpuProfile(*cpuprof)
		if err != nil {
			fmt.Fprintln(stderr, "verdict simulate:", err)
			return 1
		}
		defer stop()
	}
	rep, err := sim.Run(ctx, sim.Config{Policy: pol, Scenario: sc, Reps: *reps, Seed: *seed, Share: *share})
	if err != nil {
		fmt.Fprintln(stderr, "verdict simulate:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "verdict simulate:", err)
			return 1
		}
		return 0
	}
	writeTable(stdout, rep, &sc, len(pol.Metrics))
	return 0
}

func shareSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "share" })
	return set
}

func scenarioList() string {
	var b strings.Builder
	for _, s := range sim.Scenarios() {
		fmt.Fprintf(&b, "  %-14s %s\n", s.Name, s.Summary)
	}
	return b.String()
}

// writeTable prints the report for people.
func writeTable(w io.Writer, rep *sim.Report, sc *sim.Scenario, metrics int) {
	fmt.Fprintf(w, "scenario  %s: %s\n", rep.Scenario, sc.Summary)
	if rep.Share != nil {
		fmt.Fprintf(w, "policy    %s, canary share pinned at %s%% for every method\n", rep.Policy, fmtNum(*rep.Share))
	} else {
		fmt.Fprintf(w, "policy    %s, Verdict following the steps, peers at %s%%\n", rep.Policy, fmtNum(rep.PeerShare))
	}
	fmt.Fprintf(w, "reps      %d, seed %d, cap %s or %d requests\n\n", rep.Reps, rep.Seed, rep.MaxDuration, rep.MaxRequests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	names := make([]string, len(rep.Methods))
	width := len("method")
	for i, m := range rep.Methods {
		names[i] = m.Method
		switch {
		case m.SampleSize > 0 && m.SampleSizeFamilywise != m.SampleSize:
			names[i] += fmt.Sprintf(" (n=%d; %d at alpha/%d)", m.SampleSize, m.SampleSizeFamilywise, metrics)
		case m.SampleSize > 0:
			names[i] += " (n=" + strconv.FormatInt(m.SampleSize, 10) + ")"
		}
		width = max(width, len(names[i]))
	}
	// Left-align the names in a right-aligned table by padding them.
	fmt.Fprintf(tw, "%-*s\trollback\t95%% CI\tpromote\thold\tmedian to rollback\tp90 to rollback\tmedian to promote\t\n", width, "method")
	for i, m := range rep.Methods {
		name := fmt.Sprintf("%-*s", width, names[i])
		fmt.Fprintf(tw, "%s\t%s\t[%s, %s]\t%s\t%s\t%s\t%s\t%s\t\n", name,
			pct(m.RollbackRate), pct(m.RollbackRateLower95), pct(m.RollbackRateUpper95),
			pct(m.PromoteRate), pct(m.HoldRate),
			count(m.MedianRequestsToRollback), count(m.P90RequestsToRollback), count(m.MedianRequestsToPromote))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, m := range rep.Methods {
		if len(m.Causes) == 0 {
			continue
		}
		parts := make([]string, len(m.Causes))
		for i, c := range m.Causes {
			parts[i] = fmt.Sprintf("%s %d", c.Cause, c.Count)
		}
		fmt.Fprintf(w, "rollback causes, %s: %s\n", m.Method, strings.Join(parts, ", "))
	}
}

func pct(x float64) string { return strconv.FormatFloat(100*x, 'f', 1, 64) + "%" }

func count(p *int64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatInt(*p, 10)
}

func fmtNum(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
