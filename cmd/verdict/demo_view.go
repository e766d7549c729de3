package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
)

// demoView draws the demo's live progress: decisions as they arrive and a
// table of the rollouts, redrawn in place on a terminal.
type demoView struct {
	out      io.Writer
	st       *stack
	rollouts []*demoRollout
	clock    func() time.Time
	start    time.Time
	tty      bool
	drawn    int // lines of the last table, to redraw over them
	metrics  map[string][]analyzer.MetricResult
}

func newDemoView(out io.Writer, st *stack, rs []*demoRollout, clock func() time.Time, start time.Time) *demoView {
	return &demoView{out: out, st: st, rollouts: rs, clock: clock, start: start,
		tty: isTerminal(out), metrics: map[string][]analyzer.MetricResult{}}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// run draws until done reports true or ctx ends.
func (v *demoView) run(ctx context.Context, decisions <-chan engine.Decision, done func() bool) {
	refresh := 250 * time.Millisecond
	if !v.tty {
		refresh = 5 * time.Second
	}
	t := time.NewTicker(refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			v.draw()
			return
		case d := <-decisions:
			v.decision(d)
			if done() {
				v.drain(decisions)
				v.draw()
				return
			}
		case <-t.C:
			if done() {
				v.drain(decisions)
				v.draw()
				return
			}
			v.draw()
		}
	}
}

// drain prints decisions that are already on their way.
func (v *demoView) drain(decisions <-chan engine.Decision) {
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case d := <-decisions:
			v.decision(d)
		case <-deadline:
			return
		}
	}
}

func (v *demoView) decision(d engine.Decision) {
	v.erase()
	sim := d.At.Sub(v.start).Round(time.Second)
	fmt.Fprintf(v.out, "[+%s] %-9s %-9s step %d  %s%% -> %s%%  %s\n", sim, d.Rollout, d.Action,
		d.Step+1, fmtWeight(d.PreviousWeight), fmtWeight(d.Weight), d.Reason)
	if len(d.Metrics) > 0 {
		v.metrics[d.Rollout] = d.Metrics
	}
	for _, r := range v.rollouts {
		if r.spec.Rollout == d.Rollout && (d.Action == engine.ActionComplete || d.Action == engine.ActionRollback || d.Action == engine.ActionAbort) {
			dd := d
			r.final.Store(&dd)
		}
	}
	if v.tty {
		v.draw()
	}
}

func (v *demoView) erase() {
	if v.tty && v.drawn > 0 {
		fmt.Fprintf(v.out, "\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

func (v *demoView) draw() {
	v.erase()
	var b strings.Builder
	fmt.Fprintf(&b, "-- simulated time +%s --\n", v.clock().Sub(v.start).Round(time.Second))
	for _, r := range v.rollouts {
		st := engine.State(r.state.Load())
		route := v.status(r.spec.Rollout)
		fmt.Fprintf(&b, "%-9s %-12s step %d/%d  canary %5s%%  requests %s baseline / %s canary\n",
			r.spec.Rollout, st, route.Route.Step+1, r.steps, fmtWeight(route.Route.Weight),
			fmtCount(r.requests[0].Load()), fmtCount(r.requests[1].Load()))
		ms := route.Metrics
		if len(ms) == 0 {
			ms = v.metrics[r.spec.Rollout]
		}
		for _, m := range ms {
			fmt.Fprintf(&b, "    %-11s %s\n", m.Name, fmtMetric(m))
		}
	}
	s := b.String()
	fmt.Fprint(v.out, s)
	if v.tty {
		v.drawn = strings.Count(s, "\n")
	}
}

// status reads a rollout's latest checkpoint for its live evidence.
func (v *demoView) status(id string) engine.Status {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	data, err := v.st.act.LoadState(ctx, id)
	if err != nil {
		return engine.Status{}
	}
	s, err := engine.DecodeStatus(data)
	if err != nil {
		return engine.Status{}
	}
	return s
}

func fmtMetric(m analyzer.MetricResult) string {
	if m.Samples.Baseline == 0 || m.Samples.Canary == 0 {
		return "waiting for data"
	}
	return fmt.Sprintf("canary/baseline %.2fx  CS [%s, %s]  e=%.3g  n=%s/%s",
		m.Estimate, fmtRatio(m.Lower), fmtRatio(m.Upper), m.EValue, fmtCount(m.Samples.Baseline), fmtCount(m.Samples.Canary))
}

// fmtRatio prints a ratio bound; the analyzer caps unbounded ones at 1e6.
func fmtRatio(r float64) string {
	if r >= 1e6 {
		return "inf"
	}
	return fmt.Sprintf("%.2fx", r)
}

// report prints the outcome of every rollout and fails when one did not
// end as the demo expects.
func (v *demoView) report(wall time.Duration) error {
	fmt.Fprintf(v.out, "\nReport (%.1fs wall clock):\n", wall.Seconds())
	var failed []string
	for _, r := range v.rollouts {
		total := r.requests[0].Load() + r.requests[1].Load()
		d := r.final.Load()
		st := engine.State(r.state.Load())
		switch {
		case d == nil:
			fmt.Fprintf(v.out, "  %-9s still %s after %s requests\n", r.spec.Rollout, st, fmtCount(total))
		case d.Action == engine.ActionComplete:
			fmt.Fprintf(v.out, "  %-9s completed: %s is at 100%% after %s requests, in %s of simulated time\n",
				r.spec.Rollout, r.spec.Canary, fmtCount(total), d.At.Sub(v.start).Round(time.Second))
		default:
			fmt.Fprintf(v.out, "  %-9s %s at step %d (%s%%) after %s requests (%s canary), in %s of simulated time\n            why: %s\n",
				r.spec.Rollout, d.Action, d.Step+1, fmtWeight(d.PreviousWeight), fmtCount(total),
				fmtCount(r.requests[1].Load()), d.At.Sub(v.start).Round(time.Second), d.Reason)
		}
		if st != r.expect {
			failed = append(failed, fmt.Sprintf("%s ended %s, expected %s", r.spec.Rollout, st, r.expect))
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// fmtWeight prints a weight without trailing zeros.
func fmtWeight(w float64) string { return fmt.Sprintf("%g", w) }
