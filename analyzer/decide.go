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
// Decide updates the running maxima behind PValue and the SRM test, so it
// is part of the state that MarshalBinary saves.
func (a *Analyzer) Decide(s Step) Verdict {
	w := a.weight
	if w == 0 && s.Weight > 0 && s.Weight < 100 {
		w = s.Weight
	}
	cur := a.cur
	cur.weight = w

	evs := make([]evidence, len(a.metrics))
	for i := range a.metrics {
		m := &a.metrics[i]
		var e evidence
		switch m.Kind {
		case Errors:
			e = a.evalErrors(m, &cur)
		case Latency:
			e = a.evalGauss(m, &a.lat[Baseline], &a.lat[Canary])
		case Custom:
			e = a.evalGauss(m, &a.custom[m.slot][Baseline], &a.custom[m.slot][Canary])
		case LatencyQuantile:
			e = a.evalQuantile(m)
		}
		sanitize(&e)
		m.maxLogE = math.Max(m.maxLogE, e.logRoll)
		e.res.Name = m.Name
		e.res.EValue = math.Exp(e.logRoll)
		e.res.PValue = math.Min(1, math.Exp(-m.maxLogE))
		evs[i] = e
	}
	v := Verdict{Metrics: make([]MetricResult, len(evs))}
	for i := range evs {
		v.Metrics[i] = evs[i].res
	}

	srm, srmReason := a.checkSRM(w)

	// 1. Rollback: the weighted average of e-values, in log space.
	var sw float64
	avg := math.Inf(-1)
	best := 0
	for i, e := range evs {
		wi := a.metrics[i].weight
		sw += wi
		if wi > 0 {
			avg = logAddExp(avg, math.Log(wi)+e.logRoll)
		}
		if e.logRoll > evs[best].logRoll {
			best = i
		}
	}
	avg -= math.Log(sw)
	if avg >= math.Log(1/a.cfg.Alpha) {
		v.Action, v.Cause = Rollback, a.metrics[best].Name
		v.Reason = a.rollbackReason(&a.metrics[best], &evs[best], avg)
		return v
	}

	// 2. Promote.
	minReq := max(s.MinRequests, 1)
	enough := a.stepReq[Baseline] >= minReq && a.stepReq[Canary] >= minReq
	blocked, blockReason := "", ""
	switch {
	case srm:
		blocked, blockReason = "srm", srmReason
	case s.Elapsed < s.MinDuration:
		blocked = "min-duration"
		blockReason = fmt.Sprintf("step running %v of minimum %v", s.Elapsed, s.MinDuration)
	case !enough:
		blocked = "min-requests"
		blockReason = fmt.Sprintf("requests in step: baseline %d, canary %d; need %d each",
			a.stepReq[Baseline], a.stepReq[Canary], minReq)
	default:
		thrP := math.Log(1 / a.cfg.PromoteAlpha)
		for i, e := range evs {
			if !e.ready || !(e.logProm >= thrP) || !resultFinite(&e.res) {
				blocked = a.metrics[i].Name
				blockReason = waitReason(&a.metrics[i], &e, thrP, a.cfg.Alpha)
				break
			}
		}
	}
	if blocked == "" {
		parts := make([]string, len(evs))
		for i := range evs {
			parts[i] = evs[i].bound()
		}
		v.Action, v.Cause = Promote, ""
		v.Reason = "all metrics within margin: " + strings.Join(parts, "; ")
		return v
	}

	// 3. Timeout.
	if s.MaxDuration > 0 && s.Elapsed >= s.MaxDuration {
		v.Cause = "timeout"
		switch s.OnTimeout {
		case Rollback:
			v.Action = Rollback
			v.Reason = fmt.Sprintf("step timed out after %v without a decision (%s)", s.Elapsed, blockReason)
		case Promote:
			if why := a.timeoutPromoteBlocker(evs, srm, enough, minReq); why != "" {
				v.Action = Hold
				v.Reason = fmt.Sprintf("step timed out after %v; not promoting: %s", s.Elapsed, why)
			} else {
				v.Action = Promote
				v.Reason = fmt.Sprintf("step timed out after %v; promoting by policy (%s)", s.Elapsed, blockReason)
			}
		default:
			v.Action = Hold
			v.Reason = fmt.Sprintf("step timed out after %v; holding by policy (%s)", s.Elapsed, blockReason)
		}
		return v
	}

	// 4. Hold.
	v.Action, v.Cause, v.Reason = Hold, blocked, blockReason
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
func (a *Analyzer) checkSRM(w float64) (bool, string) {
	nA, nB := a.srmReq[Baseline], a.srmReq[Canary]
	if !(w > 0 && w < 100) || nA+nB == 0 {
		return false, ""
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
	if a.srmNow < math.Log(1/AlphaSRM) {
		return false, ""
	}
	return true, fmt.Sprintf("sample ratio mismatch: canary got %.3g%% of requests, told %.3g%% (e=%.3g)",
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
		r := &evs[i].res
		if r.Samples.Baseline == 0 || r.Samples.Canary == 0 || !resultFinite(r) {
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
// extreme inputs): a non-finite field becomes 0 (Upper: maxRatio) and the
// metric cannot support a promote.
func sanitize(e *evidence) {
	if resultFinite(&e.res) && finite(e.logRoll) && finite(e.logProm) {
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
	e.logRoll, e.logProm = clampLog(e.logRoll), clampLog(e.logProm)
	e.ready = false
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
