package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
)

// Store is where the engine's decisions and checkpoints go. The actuator
// package implements it over JetStream.
type Store interface {
	// Apply publishes a decision and writes the route it leads to. It is
	// idempotent: a decision applied twice has no further effect.
	Apply(ctx context.Context, d Decision, r Route) error
	// SaveState checkpoints a rollout.
	SaveState(ctx context.Context, rollout string, data []byte) error
	// LoadState returns a rollout's checkpoint; found is false when there is none.
	LoadState(ctx context.Context, rollout string) (data []byte, found bool, err error)
	// LoadRoute returns a rollout's route entry; found is false when there is none.
	LoadRoute(ctx context.Context, rollout string) (r Route, found bool, err error)
}

// Options configures an Engine. The zero value of every field but Store
// is usable.
type Options struct {
	Store Store
	Log   *slog.Logger
	// Now is the wall clock as rollouts see it: a rollout starts at Now,
	// and an idle one's clock follows it. Defaults to time.Now. (How long
	// a rollout has been idle and when to checkpoint are measured with
	// the process's own monotonic clock.)
	Now func() time.Time
	// IdleAfter is how long (wall time) a rollout may receive no telemetry
	// before its clock follows the wall clock. Default 10s.
	IdleAfter time.Duration
	// CheckpointEvery bounds the wall time between two checkpoints of an
	// active rollout. Default 1s.
	CheckpointEvery time.Duration
	// QueueLen bounds each rollout owner's inbox (in deliveries). Default 64.
	QueueLen int
	// Lateness is how far (event time) behind a rollout's clock an event
	// may be and still count as on time. A later one is counted all the
	// same, into the current step, like replay does, and also in Late.
	// Default 30s.
	Lateness time.Duration
	// Live reports whether telemetry can be read right now. While it is
	// false an idle rollout's clock does not follow the wall clock, so an
	// outage never times a step out. Nil means always live.
	Live func() bool
}

// Engine runs one owner goroutine per active rollout. It implements
// ingest.Sink: ingest hands it decoded telemetry, and each owner feeds its
// rollout's Machine and applies the decisions through the Store.
type Engine struct {
	opts Options

	mu       sync.Mutex
	specs    map[string]Spec   // desired state, from the rollouts bucket
	owners   map[string]*owner // running rollouts
	ended    map[string]bool   // rollouts whose owner finished (terminal)
	policies policy.Set

	updates chan struct{} // wakes Run to reconcile
	ready   chan struct{} // closed once Run has started the owners it can
	ignored atomic.Int64  // telemetry for rollouts without an owner
	late    atomic.Int64  // telemetry older than Lateness behind its rollout's clock
	// watermark is the highest stream sequence of a Deliver call that
	// returned after every owner applied its messages: each rollout has
	// applied all of its messages up to it.
	watermark atomic.Uint64
}

var _ ingest.Sink = (*Engine)(nil)

// New returns an engine; Run starts it.
func New(opts Options) *Engine {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IdleAfter <= 0 {
		opts.IdleAfter = 10 * time.Second
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = time.Second
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 64
	}
	if opts.Lateness <= 0 {
		opts.Lateness = 30 * time.Second
	}
	return &Engine{
		opts:    opts,
		specs:   map[string]Spec{},
		owners:  map[string]*owner{},
		ended:   map[string]bool{},
		updates: make(chan struct{}, 1),
		ready:   make(chan struct{}),
	}
}

// Ready is closed once Run has reconciled for the first time: every
// rollout known then has its owner (restoring its checkpoint before it
// takes any delivery). Start consuming telemetry only after it.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Late counts telemetry that came more than Options.Lateness (event time)
// behind its rollout's clock. Such events are still counted.
func (e *Engine) Late() int64 { return e.late.Load() }

// ResumeSeq returns the telemetry stream sequence consumption must resume
// at so that every rollout sees every event its checkpoint lacks: the
// lowest last-included sequence over the checkpoints of known rollouts
// that have not ended, plus one. ok is false when no such checkpoint
// exists (nothing to replay). Owners skip what their checkpoint includes,
// so events before a rollout's own sequence are not counted twice.
func (e *Engine) ResumeSeq(ctx context.Context) (seq uint64, ok bool, err error) {
	e.mu.Lock()
	ids := make([]string, 0, len(e.specs))
	for id := range e.specs {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		data, found, err := e.opts.Store.LoadState(ctx, id)
		if err != nil {
			return 0, false, fmt.Errorf("engine: checkpoint of %s: %w", id, err)
		}
		if !found {
			continue
		}
		var c struct {
			State     State  `json:"state"`
			StreamSeq uint64 `json:"streamSeq"`
		}
		if err := json.Unmarshal(data, &c); err != nil || c.State.Terminal() {
			continue // an unusable checkpoint resumes from the route
		}
		if !ok || c.StreamSeq+1 < seq {
			seq, ok = c.StreamSeq+1, true
		}
	}
	return seq, ok, nil
}

// SetPolicies swaps in a new, valid policy set. Running rollouts keep the
// policy they started with; rollouts waiting for a policy pick it up.
func (e *Engine) SetPolicies(s policy.Set) {
	e.mu.Lock()
	e.policies = s
	e.mu.Unlock()
	e.wake()
}

// SetSpec records a rollout's desired state (from the rollouts bucket);
// deleted removes it.
func (e *Engine) SetSpec(s Spec, deleted bool) {
	e.mu.Lock()
	if deleted {
		delete(e.specs, s.Rollout)
	} else {
		e.specs[s.Rollout] = s
	}
	e.mu.Unlock()
	e.wake()
}

func (e *Engine) wake() {
	select {
	case e.updates <- struct{}{}:
	default:
	}
}

// Known reports whether a rollout has a spec. Telemetry for unknown
// rollouts is dead-lettered by ingest.
func (e *Engine) Known(rollout string) bool {
	e.mu.Lock()
	_, ok := e.specs[rollout]
	e.mu.Unlock()
	return ok
}

// Ignored counts telemetry for known rollouts that had no running owner
// (not started yet for want of a policy, or already ended).
func (e *Engine) Ignored() int64 { return e.ignored.Load() }

// Deliver hands messages to their rollouts' owners and returns once every
// owner has applied them (or ctx ends). Messages of one rollout keep
// their order.
func (e *Engine) Deliver(ctx context.Context, msgs []ingest.Message) error {
	var groups map[*owner][]ingest.Message
	var order []*owner
	e.mu.Lock()
	for i := range msgs {
		o := e.owners[msgs[i].Record.Rollout]
		if o == nil {
			e.ignored.Add(1)
			continue
		}
		if groups == nil {
			groups = map[*owner][]ingest.Message{}
		}
		if _, seen := groups[o]; !seen {
			order = append(order, o)
			o.pendingSends++
		}
		groups[o] = append(groups[o], msgs[i])
	}
	e.mu.Unlock()
	if len(order) == 0 {
		e.delivered(msgs)
		return nil
	}
	var wg sync.WaitGroup
	var err error
	for _, o := range order {
		if err != nil {
			e.sent(o)
			continue
		}
		wg.Add(1)
		select {
		case o.inbox <- delivery{msgs: groups[o], done: wg.Done}:
		case <-o.stopped:
			wg.Done() // the owner ended: nothing to count
		case <-ctx.Done():
			wg.Done()
			err = ctx.Err()
		}
		e.sent(o)
	}
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		e.delivered(msgs)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// delivered raises the watermark to the highest sequence of msgs, which
// every owner has applied.
func (e *Engine) delivered(msgs []ingest.Message) {
	var top uint64
	for i := range msgs {
		top = max(top, msgs[i].Seq)
	}
	for {
		w := e.watermark.Load()
		if top <= w || e.watermark.CompareAndSwap(w, top) {
			return
		}
	}
}

// Run reconciles desired state with running owners until ctx is done,
// then stops every owner (each writes a final checkpoint) and returns.
func (e *Engine) Run(ctx context.Context) error {
	defer e.stopAll()
	first := true
	for {
		e.reconcile(ctx)
		if first {
			close(e.ready)
			first = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.updates:
		}
	}
}

// reconcile starts owners for specs without one, passes flag changes to
// running owners, and forgets owners that have ended.
func (e *Engine) reconcile(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.specs))
	for id := range e.specs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		spec := e.specs[id]
		if o := e.owners[id]; o != nil {
			o.setSpec(spec)
			continue
		}
		if e.ended[id] {
			continue
		}
		pol := e.policies[spec.Policy]
		if pol == nil {
			e.opts.Log.Warn("rollout waits for its policy", "rollout", id, "policy", spec.Policy)
			continue
		}
		o, err := newOwner(e, spec, pol)
		if err != nil {
			e.opts.Log.Error("cannot start rollout", "rollout", id, "err", err)
			e.ended[id] = true
			continue
		}
		e.owners[id] = o
		go o.run(ctx)
	}
	for id, o := range e.owners {
		if _, ok := e.specs[id]; !ok {
			o.stop() // it drains in-flight deliveries before it exits
			delete(e.owners, id)
		}
	}
}

// ownerEnded is called by an owner whose rollout reached a terminal state.
func (e *Engine) ownerEnded(id string, o *owner) {
	e.mu.Lock()
	if e.owners[id] == o {
		delete(e.owners, id)
		e.ended[id] = true
	}
	e.mu.Unlock()
}

// sent releases an owner that a Deliver call held.
func (e *Engine) sent(o *owner) {
	e.mu.Lock()
	o.pendingSends--
	e.mu.Unlock()
}

// stopAll takes every owner off the routing table, stops them and waits
// until each has applied its inbox and written its last checkpoint.
func (e *Engine) stopAll() {
	e.mu.Lock()
	owners := make([]*owner, 0, len(e.owners))
	for id, o := range e.owners {
		owners = append(owners, o)
		delete(e.owners, id)
	}
	e.mu.Unlock()
	for _, o := range owners {
		o.stop()
	}
	for _, o := range owners {
		<-o.stopped
	}
}
