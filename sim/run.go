package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/policy"
)

// lookEvery is how many requests pass between two looks of the methods
// that look repeatedly: the engine's own evaluation schedule.
const lookEvery = 100

// DefaultMaxRequests caps a replication's requests (both versions).
const DefaultMaxRequests = 2_000_000

// Method names, in output order.
const (
	MethodVerdict   = "verdict"
	MethodNaiveZ    = "naive-z"
	MethodFixedMW   = "fixed-mann-whitney"
	MethodThreshold = "threshold"
)

// Methods lists the compared methods in output order.
var Methods = []string{MethodVerdict, MethodNaiveZ, MethodFixedMW, MethodThreshold}

// Outcome is how a simulated rollout ended for one method.
type Outcome uint8

const (
	// Hold: undecided at the cap.
	Hold Outcome = iota
	// Promote: the rollout completed (canary at 100%, or past the pinned step).
	Promote
	// Rollback: the canary was rolled back.
	Rollback
)

func (o Outcome) String() string {
	switch o {
	case Promote:
		return "promote"
	case Rollback:
		return "rollback"
	}
	return "hold"
}

// Result is one method's outcome on one replication.
type Result struct {
	Outcome  Outcome
	Requests int64    // requests (both versions) when it decided; at the cap for a hold
	Cause    string   // rollbacks: the metric that drove it, or "timeout"
	Reason   string   // verdict: the terminal decision's reason
	Holds    []string // verdict: hold decisions' reasons (each cause once), at most 4
}

// Config configures a simulation.
type Config struct {
	Policy   *policy.Policy
	Scenario Scenario
	Reps     int
	Seed     uint64
	// Share, when positive, pins the canary share (percent) for every
	// method; Verdict then runs the analyzer directly with the first
	// step's durations. Zero means Verdict follows the policy's steps and
	// the peers run at the first step's weight.
	Share       float64
	MaxRequests int64 // per replication; 0 means DefaultMaxRequests
	Workers     int   // 0 means GOMAXPROCS
}

// Report is a simulation's outcome. Its JSON form is the `verdict
// simulate --json` output.
type Report struct {
	Scenario    string          `json:"scenario"`
	Policy      string          `json:"policy"`
	Reps        int             `json:"reps"`
	Seed        uint64          `json:"seed"`
	Share       *float64        `json:"share"`     // pinned share, null when following the steps
	PeerShare   float64         `json:"peerShare"` // the peers' fixed share
	MaxRequests int64           `json:"maxRequests"`
	MaxDuration string          `json:"maxDuration"` // the per-replication time cap
	Methods     []MethodSummary `json:"methods"`

	// Results holds every replication's results, indexed [rep][method]
	// in Methods order.
	Results [][]Result `json:"-"`
}

// MethodSummary aggregates one method over the replications. Request
// figures are nearest-rank quantiles over the replications that ended that
// way; null when none did.
type MethodSummary struct {
	Method              string  `json:"method"`
	Rollbacks           int     `json:"rollbacks"`
	Promotes            int     `json:"promotes"`
	Holds               int     `json:"holds"`
	RollbackRate        float64 `json:"rollbackRate"`
	PromoteRate         float64 `json:"promoteRate"`
	HoldRate            float64 `json:"holdRate"`
	RollbackRateLower95 float64 `json:"rollbackRateLower95"`
	RollbackRateUpper95 float64 `json:"rollbackRateUpper95"`

	MedianRequestsToRollback *int64 `json:"medianRequestsToRollback"`
	P90RequestsToRollback    *int64 `json:"p90RequestsToRollback"`
	MedianRequestsToPromote  *int64 `json:"medianRequestsToPromote"`

	// SampleSize is the fixed horizon (fixed-mann-whitney only), with
	// each metric tested at alpha: k metrics roll back a good canary up
	// to k times alpha of the time.
	SampleSize int64 `json:"sampleSize,omitempty"`
	// SampleSizeFamilywise is the fixed horizon with each of the k
	// metrics tested at alpha/k, so that a good canary is rolled back at
	// most alpha of the time, the bound Verdict keeps over all its
	// metrics: the like-for-like comparison (fixed-mann-whitney only; the
	// same as SampleSize for one metric).
	SampleSizeFamilywise int64 `json:"sampleSizeFamilywise,omitempty"`
	// Causes counts rollbacks by cause, most frequent first.
	Causes []CauseCount `json:"rollbackCauses"`
}

// CauseCount is how many rollbacks one cause drove.
type CauseCount struct {
	Cause string `json:"cause"`
	Count int    `json:"count"`
}

// Run simulates cfg.Reps rollouts, in parallel, and summarises them. The
// report depends only on cfg, not on the number of workers.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Policy == nil {
		return nil, errors.New("no policy")
	}
	if cfg.Reps < 1 {
		return nil, fmt.Errorf("reps %d: need at least 1", cfg.Reps)
	}
	if !(cfg.Share >= 0 && cfg.Share < 100) {
		return nil, fmt.Errorf("share %v: need a percentage in (0, 100)", cfg.Share)
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	sim, err := newSimulation(cfg)
	if err != nil {
		return nil, err
	}
	results := make([][]Result, cfg.Reps)
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, cfg.Reps)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := newWorkspace()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Reps || ctx.Err() != nil {
					return
				}
				res, err := sim.rep(i, ws)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				results[i] = res
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return sim.report(results), nil
}

// simulation is a Config made ready to run: the policy copy without a
// promote window, the caps, the peers' share and the reference values.
type simulation struct {
	cfg       Config
	pol       *policy.Policy
	sc        Scenario
	timeCap   time.Duration
	peerShare float64
	mwSize    int64 // the fixed horizon at alpha per metric
	mwSizeFW  int64 // and at alpha/k
	metrics   []peerMetric
	ref       *reference
}

func newSimulation(cfg Config) (*simulation, error) {
	pol := *cfg.Policy
	pol.Window, pol.PromoteWindow = nil, "" // cron windows are ignored in simulation
	if len(pol.Steps) == 0 {
		return nil, fmt.Errorf("policy %s has no steps", pol.Name)
	}
	metrics, err := peerMetrics(&pol)
	if err != nil {
		return nil, err
	}
	s := &simulation{cfg: cfg, pol: &pol, sc: cfg.Scenario, metrics: metrics}
	for _, st := range pol.Steps[:max(len(pol.Steps)-1, 1)] {
		s.timeCap += st.MaxDuration
	}
	s.peerShare = pol.Steps[0].Weight
	if cfg.Share > 0 {
		s.peerShare = cfg.Share
	}
	if s.peerShare >= 100 {
		return nil, fmt.Errorf("policy %s: first step at 100%%: nothing to compare; pin a share with --share", pol.Name)
	}
	s.mwSize = fixedSampleSize(&s.sc, s.metrics, s.peerShare/100, pol.Alpha)
	s.mwSizeFW = fixedSampleSize(&s.sc, s.metrics, s.peerShare/100, pol.Alpha/float64(len(pol.Metrics)))
	s.ref = referenceFor(&s.sc, s.timeCap)
	return s, nil
}

// fixedSampleSize is the fixed-mann-whitney horizon: the smallest total
// sample size with Power for the scenario's effect on the errors or the
// latency metric, beyond the policy's margin (STATS.md §7). Scenarios
// without such an effect (A/A, srm, p99-x1.5) use the design alternative
// "latency x1.2" at their latency spread.
func fixedSampleSize(sc *Scenario, metrics []peerMetric, rho, alpha float64) int64 {
	best := int64(math.MaxInt64)
	var latL0 = math.NaN()
	for _, m := range metrics {
		switch m.kind {
		case analyzer.Errors:
			if n, ok := propSampleSize(sc.ErrorRate, sc.ErrorRate*sc.ErrorRatio, m.lambda0, rho, alpha); ok {
				best = min(best, n)
			}
		case analyzer.Latency:
			latL0 = m.logL0
			pp := lognormalShiftP(math.Log(sc.LatencyRatio)-m.logL0, sc.LogSD)
			if n, ok := mwSampleSize(pp, rho, alpha); ok {
				best = min(best, n)
			}
		}
	}
	if best < math.MaxInt64 {
		return best
	}
	if math.IsNaN(latL0) {
		latL0 = math.Log(1.1)
	}
	n, ok := mwSampleSize(lognormalShiftP(math.Log(1.2)-latL0, sc.LogSD), rho, alpha)
	if !ok {
		return DefaultMaxRequests
	}
	return n
}

// workspace is one worker's reusable memory.
type workspace struct {
	hist [2]histogram
	bins *[2][]int32
	lats []float64
	nz   naiveZ
	mw   fixedMW
	th   threshold
}

func newWorkspace() *workspace {
	return &workspace{hist: [2]histogram{newHistogram(), newHistogram()}, bins: newMWBins(), lats: make([]float64, 0, 1024)}
}

// verdictRunner is Verdict following the steps or at a pinned share.
type verdictRunner interface {
	observe(sc *Scenario, n int64, r *Request)
	result() (Result, bool)
}

func (s *stepsRunner) result() (Result, bool)  { return s.res, s.done }
func (p *pinnedRunner) result() (Result, bool) { return p.res, p.done }

// rep runs replication i: one stream of requests, every method on it.
func (s *simulation) rep(i int, ws *workspace) ([]Result, error) {
	sc := &s.sc
	rng := rand.New(rand.NewPCG(s.cfg.Seed, uint64(i)))
	st := sc.NewStream(rng, s.timeCap)

	var v verdictRunner
	var err error
	if s.cfg.Share > 0 {
		v, err = newPinnedRunner(s.pol, s.cfg.Share)
	} else {
		v, err = newStepsRunner(s.pol)
	}
	if err != nil {
		return nil, err
	}
	nz, mw, th := &ws.nz, &ws.mw, &ws.th
	nz.reset(sc, s.pol, s.metrics, s.peerShare, &ws.hist)
	mw.reset(s.pol, s.metrics, s.peerShare, s.mwSize, ws.bins)
	th.reset(s.pol, s.metrics, s.ref, s.peerShare, ws.lats)

	var r Request
	n := int64(0)
	vDone := false
	if _, done := v.result(); done {
		vDone = true
	}
	for n < s.cfg.MaxRequests {
		st.Next(&r)
		if r.At >= s.timeCap {
			break
		}
		n++
		if !vDone {
			v.observe(sc, n, &r)
			_, vDone = v.result()
		}
		if !nz.done {
			nz.observe(sc, n, &r)
		}
		if !mw.done {
			mw.observe(sc, n, &r)
		}
		if !th.done {
			th.observe(sc, n, &r)
		}
		if vDone && nz.done && mw.done && th.done {
			break
		}
	}
	ws.lats = th.lats[:0] // keep a grown buffer
	out := make([]Result, len(Methods))
	vr, _ := v.result()
	for j, x := range []struct {
		res  Result
		done bool
	}{{vr, vDone}, {nz.res, nz.done}, {mw.res, mw.done}, {th.res, th.done}} {
		if !x.done {
			x.res.Outcome, x.res.Requests = Hold, n
		}
		out[j] = x.res
	}
	return out, nil
}
