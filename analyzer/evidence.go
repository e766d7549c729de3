package analyzer

import (
	"fmt"
	"math"
)

// evidence is one metric's state of evidence at one Decide.
type evidence struct {
	res     MetricResult
	logRoll float64       // one-sided rollback log e-value
	logProm float64       // one-sided promote log e-value
	ready   bool          // enough data for the promote test to mean something
	bad     bool          // the e-values were not finite (corrupt state): never a promote
	promOK  bool          // logProm is computed (Check computes it only when the rule needs it)
	capped  bool          // logRoll is an upper bound, not the e-value (Check; see logEBound)
	bound   func() string // the promote-side bound, for reasons (lazy: costly); full only
}

// rho is the step's empirical canary share of requests with an outcome,
// shrunk towards the nominal weight by rhoPrior pseudo-requests.
func (s *stepCounts) rho() float64 {
	n := float64(s.out[0] + s.out[1])
	p, w := 0.0, s.weight/100
	if w > 0 && w < 1 {
		p = rhoPrior
	}
	if n+p == 0 {
		return 0.5
	}
	return math.Min(math.Max((float64(s.out[1])+p*w)/(n+p), 1e-6), 1-1e-6)
}

// errK returns the rollback and promote mixture concentrations of a step
// for ratio margin lambda0.
func errK(rho, lambda0 float64) (kRoll, kProm float64) {
	t0 := shareTheta(rho, lambda0)
	return designK(t0, shareTheta(rho, designShift*lambda0)), designK(t0, rho)
}

// errLogE returns the product-over-steps log e-values, at ratio lambda,
// of the rollback (null ratio <= lambda), promote (null ratio >= lambda)
// and two-sided tests. Each step's k is fixed by the metric's margin
// lambda0, not by lambda, so that the e-values are monotone in lambda.
func (a *Analyzer) errLogE(cur *stepCounts, lambda0, lambda float64, want uint8) (roll, prom, two float64) {
	for i := range a.steps {
		r, p, t := stepLogE(&a.steps[i], lambda0, lambda, want)
		roll, prom, two = roll+r, prom+p, two+t
	}
	r, p, t := stepLogE(cur, lambda0, lambda, want)
	roll, prom, two = roll+r, prom+p, two+t
	return clampLog(roll), clampLog(prom), clampLog(two)
}

// errLogE0 is errLogE at the margin (lambda = lambda0) for the rollback
// or the promote test (want), the ones every look needs. A completed
// step's terms never change, so they are summed once into m (in the same
// order as errLogE, so the result is the same to the last bit).
func (a *Analyzer) errLogE0(m *metricState, cur *stepCounts, want uint8) float64 {
	a.errSettle(m)
	r, p, _ := stepLogE(cur, m.lambda0, m.lambda0, want)
	if want == wantProm {
		return clampLog(m.errProm + p)
	}
	return clampLog(m.errRoll + r)
}

// errSettle adds the steps completed since the last look to m's sums.
func (a *Analyzer) errSettle(m *metricState) {
	for ; m.errDone < len(a.steps); m.errDone++ {
		r, p, _ := stepLogE(&a.steps[m.errDone], m.lambda0, m.lambda0, wantRoll|wantProm)
		m.errRoll, m.errProm = m.errRoll+r, m.errProm+p
	}
}

// Bounding the count tests' e-values (Check).
//
// A look's cost is mostly the count tests' mixtures: two log-betas and two
// incomplete betas each. Their bounds logLRSupUp and logLRSupDown take two
// logs. On a canary no worse than its margin the rollback bound is below
// the e-value's running maximum (the state behind PValue) at almost every
// look; the exact e-value can then neither raise that maximum nor, unless
// the bounds' average reaches 1/Alpha, a rollback, so Check leaves it out
// (evidence.capped, with the bound in logRoll) and computes it only if the
// rule needs it. Likewise a promote bound below the promote threshold
// blocks the promote without the mixture (promBound). The action, the
// cause and the state are exactly the mixtures' (TestCountBounds,
// TestCheckMatchesDecide, FuzzUnmarshalBinary).
//
// The computed mixture stays strictly below the computed bound over the
// whole range of counts, shares and k, and below 0 when the bound is 0
// (TestCountBounds); a positive bound gets boundSlack on top, a margin for
// rounding.

// boundSlack is what a bound adds for rounding when it is positive.
func boundSlack(m float64) float64 { return 1e-9 * (1 + m) }

// logEBound turns the completed part done and the current part's bound
// sup (from logLRSupUp or logLRSupDown) into a bound of the clamped log
// e-value.
func logEBound(done, sup, m float64) float64 {
	b := done
	if sup != 0 {
		b += sup + boundSlack(m)
	}
	return math.Max(b, minLogE) // the e-value is clamped there; NaN stays NaN
}

// errEBound bounds the errors test's rollback (up) or promote log e-value
// at the current look, errLogE0(m, &a.evalCur, ...), from above.
func (a *Analyzer) errEBound(m *metricState, up bool) float64 {
	a.errSettle(m)
	done, sup := m.errProm, logLRSupDown
	if up {
		done, sup = m.errRoll, logLRSupUp
	}
	cur := &a.evalCur
	n, y := float64(cur.err[0]+cur.err[1]), float64(cur.err[1])
	if n == 0 {
		return logEBound(done, 0, 0)
	}
	return logEBound(done, sup(y, n, shareTheta(cur.rho(), m.lambda0)), n)
}

// quantEBound bounds a quantile test's rollback (up, s.logERollback) or
// promote (s.logEPromote) log e-value from above.
func quantEBound(s *quantState, up bool) float64 {
	if s.trials == 0 {
		return 0
	}
	n := float64(s.trials)
	if up {
		return logEBound(0, logLRSupUp(float64(s.slowHi), n, s.roll.theta0), n)
	}
	return logEBound(0, logLRSupDown(float64(s.slowLo), n, s.prom.theta0), n)
}

// capRoll leaves the rollback e-value out, with bound in its place, when
// bound shows it cannot raise the running maximum max.
func (e *evidence) capRoll(bound, max float64) bool {
	if bound <= max {
		e.logRoll, e.capped = bound, true
	}
	return e.capped
}

// promBound bounds metric i's promote log e-value from above, for the
// metrics whose promote e-value Check leaves out (errors and quantiles): a
// look whose bound is below the promote threshold is blocked by that
// metric whatever the mixture says. NaN, never below, when the counts make
// no sense.
func (a *Analyzer) promBound(i int) float64 {
	m := &a.metrics[i]
	switch m.Kind {
	case Errors:
		return a.errEBound(m, false)
	case LatencyQuantile:
		return quantEBound(&m.q, false)
	}
	return math.Inf(1)
}

// exactRolls replaces the bounds Check left in evs by the e-values and
// reports whether there were any.
func (a *Analyzer) exactRolls(evs []evidence) bool {
	any := false
	for i := range evs {
		e := &evs[i]
		if !e.capped {
			continue
		}
		e.logRoll = a.countLogE(i, true)
		e.res.EValue, e.capped, any = math.Exp(e.logRoll), false, true
	}
	return any
}

// stepLogE is one step's terms of errLogE.
func stepLogE(s *stepCounts, lambda0, lambda float64, want uint8) (roll, prom, two float64) {
	m, y := float64(s.err[0]+s.err[1]), float64(s.err[1])
	if m == 0 {
		return 0, 0, 0
	}
	rho := s.rho()
	kR, kP := errK(rho, lambda0)
	t := shareTheta(rho, lambda)
	if want&wantRoll != 0 {
		roll = logBetaBinomUp(y, m, t, kR)
	}
	if want&wantProm != 0 {
		prom = logBetaBinomDown(y, m, t, kP)
	}
	if want&wantTwo != 0 {
		two = logBetaBinom2(y, m, t, kR)
	}
	return roll, prom, two
}

// What errLogE computes.
const (
	wantRoll uint8 = 1 << iota
	wantProm
	wantTwo
)

func (a *Analyzer) evalErrors(m *metricState, cur *stepCounts, full bool) evidence {
	var e evidence
	nA, nB := a.totOut[Baseline], a.totOut[Canary]
	eA, eB := float64(a.totErr[Baseline]), float64(a.totErr[Canary])
	e.res.Samples = Samples{Baseline: nA, Canary: nB}
	if full || !e.capRoll(a.errEBound(m, true), m.maxLogE) {
		e.logRoll = a.errLogE0(m, cur, wantRoll)
	}
	if full {
		e.logProm, e.promOK = a.errLogE0(m, cur, wantProm), true
	}
	if full {
		e.bound = func() string { return a.errBound(m, cur) }
	}
	e.res.Lower, e.res.Upper = 0, maxRatio
	if nA == 0 || nB == 0 {
		return e
	}
	e.ready = true
	e.res.Baseline, e.res.Canary = eA/float64(nA), eB/float64(nB)
	switch {
	case eA == 0 && eB == 0:
		e.res.Estimate = 1
	case eA == 0 || eB == 0:
		e.res.Estimate = (eB + 0.5) / float64(nB) / ((eA + 0.5) / float64(nA))
	default:
		e.res.Estimate = e.res.Canary / e.res.Baseline
	}
	e.res.Estimate = math.Min(e.res.Estimate, maxRatio)
	if full && eA+eB > 0 {
		// The CS: the log ratios where the two-sided e-value is below 1/alpha.
		thr := math.Log(1 / a.cfg.Alpha)
		excess := func(l float64) float64 {
			_, _, two := a.errLogE(cur, m.lambda0, math.Exp(l), wantTwo)
			return two - thr
		}
		c := math.Log(e.res.Estimate)
		lo, hi := math.Log(1/maxRatio), math.Log(maxRatio)
		if l := edge(excess, c, lo, csTol); l > lo {
			e.res.Lower = math.Exp(l)
		}
		e.res.Upper = math.Exp(edge(excess, c, hi, csTol))
	}
	return e
}

// errBound is the promote-side upper confidence bound of the rate ratio:
// the smallest ratio the promote test rejects at PromoteAlpha.
func (a *Analyzer) errBound(m *metricState, cur *stepCounts) string {
	thrP := math.Log(1 / a.cfg.PromoteAlpha)
	// Negative while the promote test does not reject ratio e^l.
	short := func(l float64) float64 {
		_, prom, _ := a.errLogE(cur, m.lambda0, math.Exp(l), wantProm)
		return prom - thrP
	}
	start := math.Log(1 / maxRatio)
	if nA, nB := a.totOut[Baseline], a.totOut[Canary]; nA > 0 && nB > 0 && a.totErr[Canary] > 0 {
		start = math.Log(float64(a.totErr[Canary]) / float64(nB) / (float64(a.totErr[Baseline]+1) / float64(nA)))
	}
	u := math.Exp(edge(short, start, math.Log(maxRatio), csTol))
	return fmt.Sprintf("%s upper %sx %s %sx", m.Name, fmtBound(u, m.lambda0), cmp(u < m.lambda0), fmtRatio(m.lambda0))
}

// csTol is the precision, in log ratio, of the confidence bounds found by
// root search: 1e-9, far below the printed digits and well within the
// formula tests' 1e-9 relative.
const csTol = 1e-9

// edge finds the end, in the direction of limit, of the interval around
// from where f < 0 (f(from) < 0 for a non-empty one). It steps from `from`
// towards limit with doubling steps (first step 0.05) until f >= 0, then
// narrows the bracket with the Illinois variant of regula falsi (Dowell &
// Jarratt 1971: superlinear, about 8 evaluations to 1e-9 where bisection
// takes 25), bisecting whenever the secant step is not usable, until the
// bracket is within tol. It returns a point where f < 0, from when f(from)
// is not negative, or limit when f(limit) < 0.
func edge(f func(float64) float64, from, limit, tol float64) float64 {
	if !finite(from) || !finite(limit) {
		return limit
	}
	fa := f(from)
	if !(fa < 0) {
		return from
	}
	dir := math.Copysign(1, limit-from)
	a, b, fb := from, from, 0.0
	for step := 0.05; ; step *= 2 {
		b = a + dir*step
		if dir*(b-limit) >= 0 {
			b = limit
			if fb = f(b); fb < 0 {
				return limit
			}
			break
		}
		if fb = f(b); !(fb < 0) {
			break
		}
		a, fa = b, fb
	}
	// a is inside (fa < 0), b outside (fb >= 0 or NaN).
	side := 0
	for range 200 {
		if !(math.Abs(b-a) > tol) {
			break
		}
		x := (a + b) / 2
		if finite(fa) && finite(fb) && fb != fa {
			if s := b - fb*(b-a)/(fb-fa); s > min(a, b) && s < max(a, b) {
				x = s
			}
		}
		if fx := f(x); fx < 0 {
			a, fa = x, fx
			if side < 0 {
				fb /= 2 // b stayed twice: pull the next secant towards it
			}
			side = -1
		} else {
			b, fb = x, fx
			if side > 0 {
				fa /= 2
			}
			side = 1
		}
	}
	return a
}

func (a *Analyzer) evalGauss(m *metricState, wa, wb *welford, full bool) evidence {
	var e evidence
	e.res.Samples = Samples{Baseline: wa.n, Canary: wb.n}
	if wa.n > 0 {
		e.res.Baseline = math.Exp(wa.mean)
	}
	if wb.n > 0 {
		e.res.Canary = math.Exp(wb.mean)
	}
	if wa.n > 0 && wb.n > 0 {
		e.res.Estimate = math.Exp(wb.mean - wa.mean)
	}
	e.res.Lower, e.res.Upper = 0, maxRatio
	g := diff(wa, wb, m.sign)
	e.logRoll = logGaussUp(g, m.delta0, m.tau)
	e.logProm, e.promOK = logGaussDown(g, m.delta0, m.tau), true
	if !g.ok {
		return e
	}
	e.ready = true
	if !full {
		return e
	}
	r := gaussRadius(g.v, m.tau, a.cfg.Alpha)
	lo, hi := g.delta-r, g.delta+r
	if m.sign < 0 {
		lo, hi = -hi, -lo
	}
	e.res.Lower, e.res.Upper = clampRatio(math.Exp(lo)), clampRatio(math.Exp(hi))
	e.bound = func() string { return a.gaussBound(m, g) }
	return e
}

// gaussBound is the promote-side confidence bound: the smallest delta0 the
// promote test rejects at PromoteAlpha, as a ratio.
func (a *Analyzer) gaussBound(m *metricState, g gaussStat) string {
	thrP := math.Log(1 / a.cfg.PromoteAlpha)
	short := func(d float64) float64 { return logGaussDown(g, d, m.tau) - thrP }
	du := edge(short, g.delta, math.Log(maxRatio), csTol)
	if m.sign > 0 {
		u := clampRatio(math.Exp(du))
		return fmt.Sprintf("%s upper %sx %s %sx", m.Name, fmtBound(u, m.lambda0), cmp(u < m.lambda0), fmtRatio(m.lambda0))
	}
	l := clampRatio(math.Exp(-du))
	return fmt.Sprintf("%s lower %sx %s %sx", m.Name, fmtBound(l, 1-m.MaxIncrease), cmpGT(l > 1-m.MaxIncrease), fmtRatio(1-m.MaxIncrease))
}

func (a *Analyzer) evalQuantile(m *metricState, full bool) evidence {
	var e evidence
	s := &m.q
	ha, hb := &a.hist[Baseline], &a.hist[Canary]
	e.res.Samples = Samples{Baseline: ha.n, Canary: hb.n}
	if full || !e.capRoll(quantEBound(s, true), m.maxLogE) {
		e.logRoll = s.logERollback()
	}
	if full {
		e.logProm, e.promOK = s.logEPromote(), true
	}
	e.ready = s.frozen() && s.trials > 0 && ha.n > 0 && hb.n > 0
	e.res.Lower, e.res.Upper = 0, maxRatio
	if !full {
		return e
	}
	e.res.Baseline, e.res.Canary = ha.quantile(s.q), hb.quantile(s.q)
	if e.res.Baseline > 0 && e.res.Canary > 0 {
		e.res.Estimate = clampRatio(e.res.Canary / e.res.Baseline)
	}
	aLo, aHi := quantileCS(ha, s.q, a.cfg.Alpha/2, s.warm)
	bLo, bHi := quantileCS(hb, s.q, a.cfg.Alpha/2, s.warm)
	if !math.IsInf(aHi, 1) {
		e.res.Lower = clampRatio(bLo / aHi)
	}
	if aLo > 0 && !math.IsInf(bHi, 1) {
		e.res.Upper = clampRatio(bHi / aLo)
	}
	e.res.Lower = math.Min(e.res.Lower, e.res.Estimate)
	e.res.Upper = math.Max(e.res.Upper, e.res.Estimate)
	share := 0.0
	if s.trials > 0 {
		share = float64(s.slowLo) / float64(s.trials)
	}
	logProm := e.logProm
	e.bound = func() string {
		return fmt.Sprintf("%s share above %.4gms %.3g%% (want < %.3g%%, e=%.3g)",
			m.Name, s.cLo, 100*share, 100*(1-s.q), math.Exp(logProm))
	}
	return e
}

// promEvidence completes e, metric i's evidence from evaluate, with the
// promote e-value when Check left it out.
func (a *Analyzer) promEvidence(i int, e *evidence) {
	if e.promOK {
		return
	}
	e.logProm, e.promOK = a.countLogE(i, false), true
	sanitizeProm(e)
}

// countLogE computes the rollback (up) or promote log e-value that Check
// leaves out of metric i's evidence: those of the count tests (errors and
// quantiles); 0 for the others, whose evaluate always computes both.
func (a *Analyzer) countLogE(i int, up bool) float64 {
	m := &a.metrics[i]
	switch {
	case m.Kind == Errors && up:
		return a.errLogE0(m, &a.evalCur, wantRoll)
	case m.Kind == Errors:
		return a.errLogE0(m, &a.evalCur, wantProm)
	case m.Kind == LatencyQuantile && up:
		return m.q.logERollback()
	case m.Kind == LatencyQuantile:
		return m.q.logEPromote()
	}
	return 0
}

func clampRatio(x float64) float64 {
	if math.IsNaN(x) || x < 0 {
		return 0
	}
	return math.Min(x, maxRatio)
}

func fmtRatio(x float64) string {
	if x >= maxRatio {
		return "∞"
	}
	return fmt.Sprintf("%.3g", x)
}

// fmtBound prints a bound next to the margin it is compared with, with as
// many digits (3 to 6) as it takes for the two not to print alike: never
// "upper 1.2x < 1.2x".
func fmtBound(x, margin float64) string {
	if x >= maxRatio {
		return "∞"
	}
	m := fmtRatio(margin)
	for digits := 3; digits <= 6; digits++ {
		if s := fmt.Sprintf("%.*g", digits, x); s != m || digits == 6 {
			return s
		}
	}
	return fmtRatio(x)
}

func cmp(less bool) string {
	if less {
		return "<"
	}
	return ">="
}

func cmpGT(greater bool) string {
	if greater {
		return ">"
	}
	return "<="
}
