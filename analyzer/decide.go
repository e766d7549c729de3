package analyzer

import (
	"fmt"
	"math"
	"strings"
)

// Decide applies the decision rule (STATS §5) to the evidence so far:
//
//  1. Rollback when the weighted average of the metrics' rollback e-values
//     reaches 1/Alpha; the cause is the metric with the largest e-value.
//  2. Promote when the step's minimum duration has passed, both variants
//     have at least MinRequests requests in the step (and at least one),
//     the traffic split matches the nominal weight (no SRM), and every
//     metric's promote e-value reaches 1/PromoteAlpha.
//  3. At MaxDuration (when positive), s.OnTimeout; a timeout promote still
//     needs MinRequests per variant, no SRM and data on every metric.
//  4. Hold otherwise, with the cause of the wait.
//
// The action rests on the e-values and the counts alone; the estimates,
// confidence intervals and reasons in the Verdict are reported, never
// decided on.
//
// Decide updates the running maxima behind PValue and the SRM test, so it
// is part of the state that MarshalBinary saves. Those updates are
// idempotent: Decide (or Check) twice on the same state answers the same.
func (a *Analyzer) Decide(s Step) Verdict { return a.decide(s, true) }

// Check is Decide without the evidence: the same action and cause, and the
// same state changes, at a fraction of the cost (no confidence intervals,
// quantile estimates or reasons). A caller that acts on most evaluations
// without reporting them (the rollout state machine, the simulator) calls
// Check at every look and Decide only when it reports one; since both
// update the state idempotently, Decide then returns the same action.
func (a *Analyzer) Check(s Step) (Action, string) {
	v := a.decide(s, false)
	return v.Action, v.Cause
}

// Evidence returns the evidence at the current state without applying the
// decision rule or changing any state: what Decide's Metrics would be,
// with PValue counting the current look too.
func (a *Analyzer) Evidence() []MetricResult {
	evs := a.evaluate(a.weight, true)
	out := make([]MetricResult, len(evs))
	for i := range evs {
		out[i] = evs[i].res
		out[i].PValue = math.Min(1, math.Exp(-math.Max(a.metrics[i].maxLogE, evs[i].logRoll)))
	}
	return out
}

// evaluate computes every metric's evidence into a.evbuf (reused: valid
// until the next call); full adds what is only reported.
func (a *Analyzer) evaluate(w float64, full bool) []evidence {
	cur := &a.evalCur
	*cur = a.cur
	cur.weight = w
	if cap(a.evbuf) < len(a.metrics) {
		a.evbuf = make([]evidence, len(a.metrics))
	}
	evs := a.evbuf[:len(a.metrics)]
	for i := range a.metrics {
		m := &a.metrics[i]
		var e evidence
		switch m.Kind {
		case Errors:
			e = a.evalErrors(m, cur, full)
		case Latency:
			e = a.evalGauss(m, &a.lat[Baseline], &a.lat[Canary], full)
		case Custom:
			e = a.evalGauss(m, &a.custom[m.slot][Baseline], &a.custom[m.slot][Canary], full)
		case LatencyQuantile:
			e = a.evalQuantile(m, full)
		}
		sanitize(&e)
		e.res.Name = m.Name
		e.res.EValue = math.Exp(e.logRoll)
		evs[i] = e
	}
	return evs
}

func (a *Analyzer) decide(s Step, full bool) Verdict {
	w := a.weight
	if w == 0 && s.Weight > 0 && s.Weight < 100 {
		w = s.Weight
	}
	evs := a.evaluate(w, full)
	for i := range evs {
		m := &a.metrics[i]
		m.maxLogE = math.Max(m.maxLogE, evs[i].logRoll)
		evs[i].res.PValue = math.Min(1, math.Exp(-m.maxLogE))
	}
	var v Verdict
	if full {
		v.Metrics = make([]MetricResult, len(evs))
		for i := range evs {
			v.Metrics[i] = evs[i].res
		}
	}

	srm := a.checkSRM(w)

	// 1. Rollback: the weighted average of e-values, in log space. With
	// bounds in place of e-values (Check) an average below the threshold
	// is final; one above needs the e-values.
	thr := math.Log(1 / a.cfg.Alpha)
	avg, best := a.rollAverage(evs)
	if avg >= thr && a.exactRolls(evs) {
		avg, best = a.rollAverage(evs)
	}
	if avg >= thr {
		v.Action, v.Cause = Rollback, a.metrics[best].Name
		if full {
			v.Reason = a.rollbackReason(&a.metrics[best], &evs[best], avg)
		}
		return v
	}

	// 2. Promote.
	minReq := max(s.MinRequests, 1)
	enough := a.stepReq[Baseline] >= minReq && a.stepReq[Canary] >= minReq
	blocked, blocker := "", -1
	switch {
	case srm:
		blocked = "srm"
	case s.Elapsed < s.MinDuration:
		blocked = "min-duration"
	case !enough:
		blocked = "min-requests"
	default:
		thrP := math.Log(1 / a.cfg.PromoteAlpha)
		for i := range evs {
			e := &evs[i]
			if e.ready && !e.promOK && a.promBound(i) < thrP {
				// Check: the promote e-value cannot reach the threshold.
				blocked, blocker = a.metrics[i].Name, i
				break
			}
			if e.ready {
				a.promEvidence(i, e)
			}
			if !e.ready || !(e.logProm >= thrP) {
				blocked, blocker = a.metrics[i].Name, i
				break
			}
		}
	}
	if blocked == "" {
		v.Action, v.Cause = Promote, ""
		if full {
			parts := make([]string, len(evs))
			for i := range evs {
				parts[i] = evs[i].bound()
			}
			v.Reason = "all metrics within margin: " + strings.Join(parts, "; ")
		}
		return v
	}
	blockReason := func() string {
		switch blocked {
		case "srm":
			return a.srmReason(w)
		case "min-duration":
			return fmt.Sprintf("step running %v of minimum %v", s.Elapsed, s.MinDuration)
		case "min-requests":
			return fmt.Sprintf("requests in step: baseline %d, canary %d; need %d each",
				a.stepReq[Baseline], a.stepReq[Canary], minReq)
		}
		return waitReason(&a.metrics[blocker], &evs[blocker], math.Log(1/a.cfg.PromoteAlpha), a.cfg.Alpha)
	}

	// 3. Timeout.
	if s.MaxDuration > 0 && s.Elapsed >= s.MaxDuration {
		v.Cause = "timeout"
		why := ""
		switch s.OnTimeout {
		case Rollback:
			v.Action = Rollback
		case Promote:
			if why = a.timeoutPromoteBlocker(evs, srm, enough, minReq); why == "" {
				v.Action = Promote
			}
		}
		if !full {
			return v
		}
		switch {
		case s.OnTimeout == Rollback:
			v.Reason = fmt.Sprintf("step timed out after %v without a decision (%s)", s.Elapsed, blockReason())
		case v.Action == Promote:
			v.Reason = fmt.Sprintf("step timed out after %v; promoting by policy (%s)", s.Elapsed, blockReason())
		case s.OnTimeout == Promote:
			v.Reason = fmt.Sprintf("step timed out after %v; not promoting: %s", s.Elapsed, why)
		default:
			v.Reason = fmt.Sprintf("step timed out after %v; holding by policy (%s)", s.Elapsed, blockReason())
		}
		return v
	}

	// 4. Hold.
	v.Action, v.Cause = Hold, blocked
	if full {
		v.Reason = blockReason()
	}
	return v
}

// checkSRM updates the step's SRM e-process (STATS §6): a two-sided
// Beta-binomial mixture (k = srmK) of the canary's request count against
// the nominal weight, over the requests since the test (re)started.
//
// Batches arrive one variant at a time, so at any moment up to one batch of
// each variant may be "in flight": the e-value is taken at the counts,
// within one batch (the largest seen, of either variant) of the observed
// ones, that are closest to the nominal share; for single events the slack
// is one request. A mismatch is reported while that e-value is at least
// 1/AlphaSRM (Ville's inequality bounds the chance that it ever is under
// the null); the reported e-value is the step's running maximum.
func (a *Analyzer) checkSRM(w float64) bool {
	nA, nB := a.srmReq[Baseline], a.srmReq[Canary]
	if !(w > 0 && w < 100) || nA+nB == 0 {
		return false
	}
	slack := float64(max(a.srmLump[Baseline], a.srmLump[Canary], 1))
	p := w / 100
	fa, fb := float64(nA), float64(nB)
	if fb < p*(fa+fb) {
		fb = math.Min(fb+slack, math.Ceil(p/(1-p)*fa)) // a canary batch may be on its way
	} else {
		fa = math.Min(fa+slack, math.Ceil((1-p)/p*fb)) // a baseline batch may be
	}
	a.srmNow = clampLog(logBetaBinom2(fb, fa+fb, p, srmK))
	a.srmLogE = math.Max(a.srmLogE, a.srmNow)
	return a.srmNow >= math.Log(1/AlphaSRM)
}

// srmReason says what checkSRM found, for a step at nominal weight w.
func (a *Analyzer) srmReason(w float64) string {
	nA, nB := a.srmReq[Baseline], a.srmReq[Canary]
	return fmt.Sprintf("sample ratio mismatch: canary got %.3g%% of requests, told %.3g%% (e=%.3g)",
		100*float64(nB)/float64(nA+nB), w, math.Exp(a.srmNow))
}

func (a *Analyzer) timeoutPromoteBlocker(evs []evidence, srm, enough bool, minReq int64) string {
	switch {
	case srm:
		return "sample ratio mismatch"
	case !enough:
		return fmt.Sprintf("fewer than %d requests per variant", minReq)
	}
	for i := range evs {
		a.promEvidence(i, &evs[i])
		r := &evs[i].res
		if r.Samples.Baseline == 0 || r.Samples.Canary == 0 || evs[i].bad {
			return fmt.Sprintf("no data for %s", a.metrics[i].Name)
		}
	}
	return ""
}

func (a *Analyzer) rollbackReason(m *metricState, e *evidence, avg float64) string {
	word, margin := "exceeds", 100*m.MaxIncrease
	if m.sign < 0 {
		word, margin = "falls below", -margin
	}
	r := &e.res
	s := fmt.Sprintf("%s: canary/baseline %sx (%.3g%% CS %sx..%sx) %s %+.3g%% (e=%.3g",
		m.Name, fmtRatio(r.Estimate), 100*(1-a.cfg.Alpha), fmtRatio(r.Lower), fmtRatio(r.Upper),
		word, margin, r.EValue)
	if len(a.metrics) > 1 {
		s += fmt.Sprintf(", weighted average e=%.3g", math.Exp(avg))
	}
	return s + fmt.Sprintf(" >= %.3g)", 1/a.cfg.Alpha)
}

func waitReason(m *metricState, e *evidence, thrP, alpha float64) string {
	if !e.ready {
		if m.Kind == LatencyQuantile && !m.q.frozen() {
			return fmt.Sprintf("%s: warming up thresholds (%d baseline latencies needed)", m.Name, m.q.warm)
		}
		return fmt.Sprintf("%s: not enough data yet (baseline %d, canary %d)",
			m.Name, e.res.Samples.Baseline, e.res.Samples.Canary)
	}
	// The exact promote-side bound is costly (a root search); the hold
	// reason shows the confidence sequence and the promote e-value instead.
	word, margin := "upper bound not yet below", fmtRatio(m.lambda0)
	if m.sign < 0 {
		word, margin = "lower bound not yet above", fmtRatio(1-m.MaxIncrease)
	}
	return fmt.Sprintf("waiting for evidence: %s %s %sx (canary/baseline %sx, %.3g%% CS %sx..%sx, promote e=%.3g < %.3g)",
		m.Name, word, margin, fmtRatio(e.res.Estimate), 100*(1-alpha), fmtRatio(e.res.Lower), fmtRatio(e.res.Upper),
		math.Exp(e.logProm), math.Exp(thrP))
}

func resultFinite(r *MetricResult) bool {
	for _, x := range [...]float64{r.Baseline, r.Canary, r.Estimate, r.Lower, r.Upper, r.EValue, r.PValue} {
		if !finite(x) {
			return false
		}
	}
	return true
}

// sanitize keeps a result finite whatever the state (a corrupt checkpoint,
// extreme inputs). Non-finite e-values are clamped and mark the metric bad:
// it cannot support a promote. A non-finite reported field becomes 0
// (Upper: maxRatio); reported fields never decide.
func sanitize(e *evidence) {
	if !finite(e.logRoll) {
		e.logRoll = clampLog(e.logRoll)
		e.ready, e.bad = false, true
	}
	if e.promOK {
		sanitizeProm(e)
	}
	if resultFinite(&e.res) {
		return
	}
	for _, p := range []*float64{&e.res.Baseline, &e.res.Canary, &e.res.Estimate, &e.res.Lower} {
		if !finite(*p) {
			*p = 0
		}
	}
	if !finite(e.res.Upper) {
		e.res.Upper = maxRatio
	}
}

// sanitizeProm is sanitize's rule for the promote e-value, which Check
// computes later than the rest.
func sanitizeProm(e *evidence) {
	if !finite(e.logProm) {
		e.logProm = clampLog(e.logProm)
		e.ready, e.bad = false, true
	}
}

// rollAverage returns the log of the weighted average of the rollback
// e-values and the metric with the largest.
func (a *Analyzer) rollAverage(evs []evidence) (avg float64, best int) {
	avg = math.Inf(-1)
	for i, e := range evs {
		avg = logAddExp(avg, a.metrics[i].logW+e.logRoll)
		if e.logRoll > evs[best].logRoll {
			best = i
		}
	}
	return avg - a.logSumW, best
}

// logAddExp returns log(exp(x) + exp(y)).
func logAddExp(x, y float64) float64 {
	if x < y {
		x, y = y, x
	}
	if math.IsInf(y, -1) {
		return x
	}
	return x + math.Log1p(math.Exp(y-x))
}
