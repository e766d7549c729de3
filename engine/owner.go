package engine

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
)

// delivery is a run of one rollout's messages: msgs[idx[0]], msgs[idx[1]],
// ... in stream order. msgs is the whole batch of a Deliver call, shared
// read-only by every owner it reaches. The owner calls b.ownerDone once it
// has applied all of them.
type delivery struct {
	msgs []ingest.Message
	idx  []int32
	b    *batch
}

// batch counts the owners that still have to apply their part of one
// Deliver call; the last one closes done. (One counter and one channel per
// call, instead of a WaitGroup and a goroutine waiting on it.)
type batch struct {
	pending atomic.Int32
	done    chan struct{}
}

func (b *batch) ownerDone() {
	if b.pending.Add(-1) == 0 {
		close(b.done)
	}
}

// What the engine's clock asks of an owner (owner.want).
const (
	wantIdle       uint32 = 1 << iota // no telemetry for IdleAfter: Advance to the wall clock
	wantCheckpoint                    // write a checkpoint now (the engine's rate budget allows it)
)

// owner is the one goroutine that owns a rollout's Machine. Everything that
// changes the rollout goes through its inbox or spec channel.
type owner struct {
	e       *Engine
	id      string
	m       *Machine
	inbox   chan delivery
	spec    chan Spec // latest desired state; capacity 1, newest wins
	cancel  context.CancelFunc
	stopped chan struct{} // closed when run returns

	streamSeq uint64 // last telemetry stream sequence applied

	// The engine's clock reads these to decide which owners to wake (see
	// Engine.clock); only the owner writes them. Times are Engine.mono.
	savedSeq atomic.Uint64 // stream sequence of the last checkpoint written
	lastData atomic.Int64  // when the last telemetry came (operational, not rollout time)
	lastSave atomic.Int64  // when the last checkpoint was written
	dirty    atomic.Bool   // state changed since the last checkpoint

	// want and nudge are how the clock wakes the owner: it sets bits in
	// want, then sends on nudge (capacity 1, so a busy owner is nudged once).
	want  atomic.Uint32
	nudge chan struct{}

	pendingSends atomic.Int32 // Deliver calls holding this owner (raised under e.mu)
	// Deliver's grouping scratch, guarded by e.mu: the owner's group in
	// the Deliver call numbered dgen.
	dgen   uint64
	dgroup int32
}

func newOwner(e *Engine, spec Spec, pol *policy.Policy) (*owner, error) {
	m, err := NewMachine(spec, pol)
	if err != nil {
		return nil, err
	}
	return &owner{
		e: e, id: spec.Rollout, m: m,
		inbox:   make(chan delivery, e.opts.QueueLen),
		spec:    make(chan Spec, 1),
		nudge:   make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}, nil
}

// poke asks the owner to do w soon; it never blocks.
func (o *owner) poke(w uint32) {
	o.want.Or(w)
	select {
	case o.nudge <- struct{}{}:
	default:
	}
}

// setSpec passes new desired state to the owner; only the newest counts.
func (o *owner) setSpec(s Spec) {
	for {
		select {
		case o.spec <- s:
			return
		default:
		}
		select {
		case <-o.spec:
		default:
		}
	}
}

// stop asks the owner to end; it does not wait.
func (o *owner) stop() {
	if o.cancel != nil {
		o.cancel()
	}
}

func (o *owner) run(ctx context.Context) {
	defer close(o.stopped)
	log := o.e.opts.Log.With("rollout", o.id)
	if err := o.restore(ctx); err != nil {
		log.Error("cannot restore rollout", "err", err)
		return
	}
	// No timer of its own: the engine's clock nudges the owner when it is
	// idle or due a checkpoint, so 10,000 rollouts cost one ticker.
	for !o.m.State().Terminal() {
		select {
		case d := <-o.inbox:
			o.handle(ctx, d)
		case s := <-o.spec:
			o.applySpec(ctx, s)
		case <-o.nudge:
			o.tick(ctx)
		case <-ctx.Done():
			o.finish()
			return
		}
	}
	o.checkpoint(ctx)
	o.retire(ctx)
}

// restore brings the machine to where the rollout was: from its
// checkpoint, else from its published route, else it starts it.
func (o *owner) restore(ctx context.Context) error {
	st := o.e.opts.Store
	now := o.e.opts.Now()
	data, found, err := st.LoadState(ctx, o.id)
	if err != nil {
		return err
	}
	if found {
		seq, err := o.m.UnmarshalState(data)
		if err == nil {
			o.streamSeq = seq
			o.savedSeq.Store(seq)
			o.e.opts.Log.Info("rollout restored from checkpoint", "rollout", o.id, "seq", o.m.seq, "streamSeq", seq)
			o.lastData.Store(o.e.mono())
			return o.applySpecFlags(ctx, o.m.Spec(), now)
		}
		o.e.opts.Log.Warn("checkpoint unusable, resuming from route", "rollout", o.id, "err", err)
	}
	r, found, err := st.LoadRoute(ctx, o.id)
	if err != nil {
		return err
	}
	o.lastData.Store(o.e.mono())
	if found {
		o.m.ResumeFrom(r, now)
		o.e.opts.Log.Info("rollout resumed from route", "rollout", o.id, "step", r.Step, "seq", r.Seq)
		o.dirty.Store(true)
		return o.applySpecFlags(ctx, o.m.Spec(), now)
	}
	// The start decision is checkpointed like any other, so a restart
	// finds the rollout's analysis, not only its route.
	o.dirty.Store(true)
	if err := o.apply(ctx, o.m.Start(now)); err != nil {
		return err
	}
	return o.applySpecFlags(ctx, o.m.Spec(), now)
}

// handle applies a delivery. It does not checkpoint (unless a decision
// forces it): the engine's clock asks for checkpoints within its rate
// budget, so Deliver never waits for a KV write.
func (o *owner) handle(ctx context.Context, d delivery) {
	defer d.b.ownerDone()
	changed := false
	defer func() {
		if changed {
			o.dirty.Store(true)
		}
		o.lastData.Store(o.e.mono())
	}()
	for _, i := range d.idx {
		msg := &d.msgs[i]
		if msg.Seq != 0 && msg.Seq <= o.streamSeq {
			continue // already included in the restored checkpoint
		}
		if o.m.State().Terminal() {
			o.e.ignored.Add(1) // after the end, in the same delivery
			continue
		}
		t := msg.Record.Time
		if t.IsZero() {
			t = msg.Received
		}
		if t.Before(o.m.Now().Add(-o.e.opts.Lateness)) {
			o.e.late.Add(1) // counted all the same: see Options.Lateness
		}
		ds := o.m.ObserveRecord(t, &msg.Record)
		if msg.Seq > o.streamSeq {
			o.streamSeq = msg.Seq
		}
		changed = true
		if len(ds) > 0 {
			o.dirty.Store(true)
			if err := o.apply(ctx, ds); err != nil {
				return
			}
			changed = false // apply checkpointed everything so far
		}
	}
}

func (o *owner) applySpec(ctx context.Context, s Spec) {
	_ = o.applySpecFlags(ctx, s, o.m.Now())
}

// applySpecFlags brings pause and abort in line with the desired state.
func (o *owner) applySpecFlags(ctx context.Context, s Spec, now time.Time) error {
	if o.m.State().Terminal() {
		return nil
	}
	o.m.spec.Paused, o.m.spec.Abort = s.Paused, s.Abort
	var ds []Decision
	switch {
	case s.Abort:
		ds, _ = o.m.Abort(now, "")
	case s.Paused && o.m.State() != StatePaused:
		ds, _ = o.m.Pause(now, "")
	case !s.Paused && o.m.State() == StatePaused:
		ds, _ = o.m.Resume(now, "")
	}
	if len(ds) == 0 {
		return nil
	}
	o.dirty.Store(true)
	return o.apply(ctx, ds)
}

// tick does what the engine's clock asked for. wantIdle: no telemetry for
// IdleAfter while telemetry can be read, so the rollout's clock follows the
// wall clock and steps of a silent rollout still time out. wantCheckpoint:
// the state changed, or the delivered watermark moved past the last
// checkpoint (a rollout without telemetry of its own must not hold back
// where the next start resumes consuming).
func (o *owner) tick(ctx context.Context) {
	w := o.want.Swap(0)
	if w&wantIdle != 0 {
		if ds := o.m.Advance(o.e.opts.Now()); len(ds) > 0 {
			o.dirty.Store(true)
			_ = o.apply(ctx, ds)
		}
	}
	if w&wantCheckpoint != 0 {
		if o.e.watermark.Load() > o.savedSeq.Load() {
			o.dirty.Store(true)
		}
		o.checkpoint(ctx)
	}
}

// apply publishes decisions in order, retrying until each is applied or
// ctx ends: a rollout never moves on past an unpublished decision.
func (o *owner) apply(ctx context.Context, ds []Decision) error {
	for _, d := range ds {
		r := o.m.Route()
		r.Seq, r.Weight, r.Step = d.Seq, d.Weight, d.Step
		backoff := 100 * time.Millisecond
		for {
			err := o.e.opts.Store.Apply(ctx, d, r)
			if err == nil {
				break
			}
			o.e.opts.Log.Warn("cannot apply decision, retrying", "rollout", o.id, "seq", d.Seq, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		o.e.opts.Log.Info("decision", "rollout", o.id, "seq", d.Seq, "action", d.Action.String(),
			"step", d.Step, "weight", d.Weight, "reason", d.Reason)
	}
	o.checkpoint(ctx) // every decision, at once: outside the rate budget
	return nil
}

// checkpoint saves the machine's state if it changed since the last one.
// When is the caller's business: the engine's clock (CheckpointEvery and
// the rate budget), a decision, the end of the rollout, or shutdown.
func (o *owner) checkpoint(ctx context.Context) {
	if !o.dirty.Load() {
		return
	}
	// Every message of this rollout up to the watermark has been applied
	// (Deliver set it after all owners applied its batch), so the
	// checkpoint includes the stream up to there.
	seq := max(o.streamSeq, o.e.watermark.Load())
	data, err := o.m.MarshalState(seq)
	if err != nil {
		o.e.opts.Log.Error("cannot encode checkpoint", "rollout", o.id, "err", err)
		return
	}
	if err := o.e.opts.Store.SaveState(ctx, o.id, data); err != nil {
		o.e.opts.Log.Warn("cannot save checkpoint", "rollout", o.id, "err", err)
		return
	}
	o.dirty.Store(false)
	o.lastSave.Store(o.e.mono())
	o.savedSeq.Store(seq)
	faults.At(faults.AfterCheckpoint)
}

// finish applies what is in the inbox or on its way (the owner is already
// off the routing table) and writes a last checkpoint: the shutdown path.
func (o *owner) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.drain(ctx, func(d delivery) { o.handle(ctx, d) })
	o.checkpoint(ctx)
}

// drain passes every delivery in the inbox, or still held by a Deliver
// call, to fn. The owner must already be off the routing table, so the
// number of pending senders only falls.
func (o *owner) drain(ctx context.Context, fn func(delivery)) {
	for {
		select {
		case d := <-o.inbox:
			fn(d)
			continue
		default:
		}
		if o.pendingSends.Load() == 0 {
			return
		}
		select {
		case d := <-o.inbox:
			fn(d)
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// retire takes an ended rollout off the routing table and then drains the
// deliveries already on their way, so no Deliver waits forever.
func (o *owner) retire(ctx context.Context) {
	o.e.ownerEnded(o.id, o)
	o.drain(ctx, func(d delivery) {
		o.e.ignored.Add(int64(len(d.idx)))
		d.b.ownerDone()
	})
}
