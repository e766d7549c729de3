// Package sim is Verdict's Monte Carlo calibration: it simulates many
// rollouts of a service and reports, for Verdict and for the methods others
// use, how often each rolls back, promotes or holds and after how many
// requests (STATS.md §7, "the bar"). `verdict simulate` prints its Report.
//
// # Streams
//
// A Scenario generates requests. Each request carries both potential
// outcomes, the baseline's and the canary's, drawn from common random
// numbers, and the sticky hash of its unit in [0, 100): a router with canary
// share w sends it to the canary when the hash is below w (times the
// scenario's SRM factor). So Verdict, whose router follows the rollout's
// weights, and the peers, whose router stays at a fixed share, see the same
// requests; while the weights agree they see the same data. Replication i
// draws from a PCG seeded with (seed, i); replications run in parallel and
// are merged by index, so a report depends on the seed only.
//
// Time is simulated: requests arrive as a Poisson process (rate varying in
// aa-diurnal), and the arrival time is the event time given to the engine.
//
// # Methods
//
// verdict: an engine.Machine per replication, exactly as serve runs it,
// with the policy's promote window removed; evaluations every
// engine.EvalEvery requests and at step deadlines. With Config.Share the
// analyzer runs alone at that share, deciding every 100 requests with the
// first step's durations and minimum requests, until its first rollback or
// promote. A rollback whose step had passed its maxDuration under
// onTimeout: rollback is counted with cause "timeout".
//
// The peers run at a fixed share (Config.Share, or the first step's weight)
// and use the policy's alpha and the policy's margins (maxIncrease), so that
// they test the same hypotheses as Verdict; each metric is tested at level
// alpha, without a multiplicity correction, as dashboards and per-metric
// judges do. Custom metrics are not simulated.
//
// naive-z re-runs fixed-sample one-sided z-tests every 100 requests once
// both versions have 30 requests: two proportions for errors (H0: pB <=
// (1+m) pA), Welch on log latency (H0: difference <= log(1+m)), and for a
// quantile q the share of canary latencies above (1+m) times the baseline's
// empirical q-quantile against 1-q. It rolls back at the first rejection and
// promotes when the policy's steps' minimum durations and minimum requests
// per variant have passed at its share (the bake time of a timed rollout).
//
// fixed-mann-whitney tests once, at the total sample size N with 80% power
// for the scenario's effect beyond the margins: the two-proportion formula
// for errors, Noether's formula for the Mann-Whitney test on latency (with
// P(canary/(1+m) > baseline) from the scenario's lognormal parameters); the
// smaller N of the metrics with an effect. Scenarios with no effect on
// errors or geometric-mean latency (A/A, srm, p99-x1.5) are sized for the
// design alternative "latency x1.2". At N it runs a one-sided Mann-Whitney
// U test (normal approximation, tie correction, latencies binned at 0.1%)
// of canary latency/(1+m) against baseline latency and the two-proportion
// z-test on errors; rollback if either rejects, promote otherwise. Its
// requests to a decision are N. It ignores quantile metrics, as a
// location test would.
//
// threshold checks, every minute of simulated time, the canary's error
// rate, arithmetic mean latency and empirical latency quantiles over that
// minute against absolute limits: the scenario's baseline value (measured
// once on 2^20 requests with a fixed seed) times (1+m). It rolls back after
// 5 failed checks in all (Flagger's failedChecks and its documented
// threshold: 5) and promotes after as many passing checks as the policy's
// analysed steps hold minutes of minDuration. A minute without canary
// requests fails.
//
// # Caps
//
// A replication ends when every method has decided, or at the cap: the sum
// of the analysed steps' maxDurations in simulated time, or
// Config.MaxRequests (2,000,000 by default). A method undecided at the cap
// holds.
package sim
