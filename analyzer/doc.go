// Package analyzer is Verdict's statistics: anytime-valid sequential tests
// that compare a canary with a baseline, and the decision rule that turns
// their evidence into promote, hold or rollback.
//
// It is pure maths: no I/O, no clocks, no logging, no randomness. The same
// calls in the same order give the same results bit for bit (no map is
// iterated in a computation). Observe is O(1) and allocation-free once the
// latency histograms cover the latencies seen (they grow by chunks of
// buckets, a few times in an analyzer's life); all other memory is
// allocated by New (under 64 KiB for the usual 2-4 metrics, see
// TestStateSize). An Analyzer is owned by one goroutine.
//
// # Conventions
//
// Degradation is "bad is positive": Delta is the log of the canary/baseline
// ratio (rate ratio for errors, ratio of geometric means for latency and
// custom values), negated for a Custom metric with Direction Decrease. A
// metric's margin m = MaxIncrease gives the ratio margin lambda0 = 1+m and
// the log margin delta0 = log(1+m) (for Decrease, delta0 = -log(1-m): the
// canary may be at most a fraction m lower). Every test is an e-process: a
// nonnegative supermartingale under its null, so rejecting when it reaches
// 1/alpha keeps the probability of ever rejecting a true null below alpha
// however often Decide is called (Ville's inequality). The always-valid
// p-value is min(1, 1/max E) over the Decide calls so far.
//
// # Error rate (STATS.md §1)
//
// Lindon & Malek, "Anytime-valid inference for multinomial count data",
// NeurIPS 2022. Each arm's errors are a Poisson process proportional to its
// traffic, so under a rate ratio lambda each error is a canary error with
// probability theta(lambda) = rho*lambda/(rho*lambda + 1 - rho), rho the
// canary share. Only m (errors) and y (canary errors) matter. With a =
// k*theta0, b = k*(1-theta0):
//
//	rollback (H0: ratio <= lambda0, mixture on theta > theta0):
//	log E = logB(a+y, b+m-y) - logB(a, b) - y log theta0 - (m-y) log(1-theta0)
//	        + log Q(a+y, b+m-y) - log Q(a, b),   Q(a,b) = 1 - I_theta0(a, b)
//	promote (H0: ratio >= lambda0, mixture on theta < theta0): the same with
//	        I_theta0 in place of Q.
//
// Tails of I far below 1e-300 are computed in log space (a continued
// fraction, Numerical Recipes §6.4), never floored: a floored numerator
// would inflate E.
//
// The test restarts at every step (StartStep) and the metric's e-value is
// the product of the completed steps' final e-values and the current
// step's (a product of e-processes over consecutive periods is an
// e-process). Within a step, rho is the step's empirical canary share of
// requests with an outcome, shrunk towards the nominal weight by 100
// pseudo-requests: a router that sends another share than it was told
// (SRM) does not bias the error test. (It is a plug-in share, as in the
// fixed-share analyses; for rare errors the conditional binomial model is
// the Poisson approximation.)
//
// Choosing k: the prior's spread sqrt(theta0(1-theta0)/k) is set to the
// distance to a design alternative, k = theta0(1-theta0)/(theta1-theta0)^2
// (STATS §1), clamped to [10, 1e4]. The rollback design is a ratio 1.5 times
// the margin (theta1 = theta(1.5*lambda0); k ≈ 77 at rho = 5%, m = 20%); the
// promote design is an unchanged canary (theta1 = rho; k ≈ 630 there). In
// simulation a smaller k (design 2x) cuts the median time to catch a 3x
// error rate by about 20% and slows the detection of small shifts; 1.5 is
// kept as specified.
//
// Bursts: when Observation.Unit is set, an error from a unit that already
// failed in the same variant within the last 1024 requests (all variants:
// a stand-in for time, so both arms get the same window) is not counted
// again; its request still counts ("count distinct failing units", STATS §1).
// Each variant has a 256-slot direct-mapped table of recent failing units,
// so a colliding unit can evict another (its next error then counts); this
// is a heuristic against a retry storm from one client, not a model.
// Batches carry no units and are counted as given.
//
// Reported: Baseline and Canary are error rates over the whole rollout;
// Estimate is their ratio (0.5 is added to both error counts when one is
// zero; 1 when both are); Lower and Upper are the anytime-valid confidence
// sequence at level Alpha obtained by inverting the two-sided product
// e-value over lambda (bisection on log lambda to 1e-6), capped at 1e6.
//
// # Latency and custom values (STATS §2, §4)
//
// Johari, Pekelis & Walsh, "Always valid inference", Operations Research
// 2022; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric,
// nonasymptotic confidence sequences", Ann. Statist. 2021. Per arm, a
// Welford accumulator of log latency over the whole rollout (no restart:
// per-arm variances handle unequal and changing shares). With Delta_hat =
// mean log B - mean log A, V = s_A^2/n_A + s_B^2/n_B, z = (Delta_hat -
// delta0)/sqrt(V), kappa = tau^2/V and x = z sqrt(kappa/(1+kappa)):
//
//	rollback: log E = log 2 - log(1+kappa)/2 + x^2/2 + log Phi(x)
//	promote:  log E = log 2 - log(1+kappa)/2 + x^2/2 + log Phi(-x)
//	CS:       Delta_hat ± sqrt(V) sqrt((1+kappa)/kappa (log(1+kappa) + 2 log(1/alpha)))
//
// tau is fixed, not data dependent: tau = max(delta0, 0.05). The mixture's
// power is concentrated one prior scale beyond the margin (x1.21 for a 10%
// margin), where kappa reaches the STATS optimum 6-8 after about 15-20k
// requests at rho = 5% and log-sd 1; TestDetectLatency shows x1.2 caught at
// a median of about 16k requests (500 runs), against 17k for a
// fixed-horizon z-test with 80% power at the true effect. At
// least two values per arm are needed; before that the e-values are 1. The
// estimate is exp(Delta_hat) (ratio of geometric means), the CS its
// exponential, Baseline and Canary the geometric means. A Custom metric is
// the same on log(value) for positive finite values (others are ignored);
// Decrease flips the sign of Delta. Latencies are clamped to [1e-3, 1e7] ms
// (so that 0 ms is usable); NaN and negative latencies are ignored.
//
// # Latency quantiles (STATS §3, predictable thresholds)
//
// Histograms: bucket i holds (1.02^(i-1), 1.02^i] ms, i in [MinBucket,
// MaxBucket] (1e-3 to 1e7 ms, 1163 buckets, a 1% relative error from the
// bucket's middle), dense per arm, shared by all quantile metrics.
//
// Thresholds come from the baseline only: after W = max(100, ceil(20/(1-q)))
// baseline latencies, and again at 2W, 4W, ... (epoch j), the baseline's
// q-quantile gets a fixed-sample order-statistic confidence bound at level
// delta_j = delta/2^(j+1), delta = Alpha/10: the upper bound is the r-th
// order statistic with r the smallest rank such that P(Bin(n,q) >= r) <=
// delta_j, read as its bucket's upper edge; the lower bound likewise from
// the other side, read as a lower edge. By the union bound all epochs'
// bounds hold together with probability 1-delta. Then c_hi = (1+m) x upper
// bound and c_lo = (1+m) x lower bound stay frozen until the next epoch:
// they are predictable, fixed before the canary latencies they judge.
// Refreshing (rather than freezing once) lets the thresholds tighten as the
// baseline grows, which matters: with W = 2000 for p99 the first upper
// bound is about the baseline's p99.6.
//
// Each canary latency after the warm-up is a Bernoulli trial: slow if above
// c_hi (rollback test, H0: P(slow) <= 1-q, the count e-value above with
// theta0 = 1-q, design 1.5(1-q)) and slow if above c_lo (promote test, H0:
// P(slow) >= 1-q, design (1-q)/1.5). Under H0 "canary q-quantile <= (1+m) x
// baseline q-quantile", on the event that the baseline bounds hold, P(slow
// above c_hi) <= 1-q, so the probability of a false rollback by this
// metric is at most Alpha + delta = 1.1 Alpha; the same holds for promote.
// Batches are judged by bucket, conservatively: a bucket straddling c_hi
// counts as not slow for rollback; a bucket straddling c_lo counts as slow
// against promote. The test has little power when the margin is close to
// the shift: a p99 x1.5 tail shift against a 25% margin at rho = 5% takes
// about 200k requests (TestDetectTail).
//
// Reported: Baseline and Canary are the histograms' q-quantiles (bucket
// upper edges); Estimate is their ratio; Lower and Upper combine per-arm
// rank confidence sequences at Alpha/2 each, from the normal-mixture
// boundary for a sum with variance n q (1-q) (Howard et al. 2021), which
// is asymptotic: display only, not used by any decision.
//
// # Sample ratio mismatch (STATS §6)
//
// Per step, the two-sided Beta-binomial mixture e-value of the canary's
// request count against the nominal weight (a = k w, b = k (1-w), k =
// 1000: tuned to shares a few tenths of a percentage point off at 5%).
// Because batches arrive one variant at a time, the counts are first moved
// towards the nominal share by up to one batch (the largest seen). A
// mismatch is reported while the e-value is at least 1/AlphaSRM = 1000;
// RestartSRM lets the engine discard requests routed during a weight
// switch. A mismatch blocks promotion (also on timeout) and holds with
// cause "srm". Lindon & Malek 2022; the ssrm library.
//
// # Decision rule (STATS §5)
//
// See Decide. The average of e-values is an e-value, so rolling back when
// the weighted average reaches 1/Alpha keeps P(false rollback) <= Alpha (plus
// delta for quantile metrics) with no multiplicity correction; promotion
// needs every metric's promote test (intersection-union), so P(promoting a
// canary worse than a margin) <= PromoteAlpha. The promote e-values are also
// products over steps (errors) or whole-rollout (others): evidence
// carries to later steps, which then only wait for their minimum duration
// and requests.
//
// The action rests on the e-values and the counts alone. The estimates,
// confidence sequences and reasons are reported, never decided on, and
// they are most of a look's cost (bisections for the error-rate interval),
// so Check applies the rule without them: the same action and cause and
// the same state changes. Those changes (running maxima) are idempotent,
// so Decide right after Check on the same state returns the same verdict
// with its evidence; the engine looks with Check every 100 requests and
// calls Decide only for the looks that emit a decision
// (TestCheckMatchesDecide; BenchmarkCheck against BenchmarkDecide).
//
// Check also skips the count tests' rollback mixtures (two log-betas and
// two incomplete betas each) when they cannot matter. A mixture of
// likelihood ratios is at most the largest of them: for y of m events at
// null share theta0 that is 1 when y/m <= theta0 and exp(m KL(y/m ||
// theta0)) above, two logs. While that bound cannot raise the e-value's
// running maximum (the state behind the p-value) and the bounds' weighted
// average stays below 1/Alpha, the mixture's exact value changes neither
// the action nor the state, so it is not computed; on a canary that is no
// worse than its margins, that is almost every look (TestCountBounds,
// TestCheckCapsRollbacks). The mirror bound (share <= theta0) blocks a
// promote without the promote mixture while it is below 1/PromoteAlpha:
// the long wait of a good canary on little traffic.
//
// With four metrics of equal weight one metric alone needs E >= 4/Alpha to
// roll back, which costs about 1.5x in detection time against a policy
// with that metric alone (see the tests' logs).
//
// # Detection against a fixed-horizon test
//
// At its design effect a mixture e-process needs z ≈ 2.8 (one-sided, alpha
// = 0.05, kappa ≈ 7) where a fixed-horizon test with 80% power needs z =
// 2.49 at its planned end; crossing early on the way makes up most of the
// difference, so the median time to detect is about the fixed-horizon
// sample size at the true effect (latency x1.2: 16k against 17k), and far
// below it for a fixed test planned for the effect one would size it for
// (errors 1%->3%: median 9k requests, p90 19k, against 45k for a fixed
// test planned for the design ratio 1.8; the z-test at the true ratio 3
// would need 5.5k, but its normal approximation with about eight canary
// errors overstates its power).
//
// # References
//
//   - M. Lindon, A. Malek. Anytime-valid inference for multinomial count
//     data. NeurIPS 2022.
//   - R. Johari, P. Koomen, L. Pekelis, D. Walsh. Always valid inference:
//     continuous monitoring of A/B tests. Operations Research 70(3), 2022.
//   - S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon. Time-uniform,
//     nonparametric, nonasymptotic confidence sequences. Annals of
//     Statistics 49(2), 2021.
//   - S. R. Howard, A. Ramdas. Sequential estimation of quantiles with
//     applications to A/B-testing and best-arm identification. Bernoulli
//     28(3), 2022.
//   - M. Lindon, D. J. Ham, M. Tingley, I. Bojinov. Rapid regression
//     detection in software deployments through sequential testing. KDD 2022.
//   - B. P. Welford. Note on a method for calculating corrected sums of
//     squares and products. Technometrics 4(3), 1962; T. F. Chan, G. H.
//     Golub, R. J. LeVeque, for merging (1979).
//   - P. Armitage, C. K. McPherson, B. C. Rowe. Repeated significance tests
//     on accumulating data. JRSS A 132(2), 1969.
package analyzer
