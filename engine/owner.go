package engine

import (
	"context"
	"time"

	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
)

// delivery is a run of one rollout's messages, in stream order; done is
// called once the owner has applied all of them.
type delivery struct {
	msgs []ingest.Message
	done func()
}

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

	streamSeq    uint64    // last telemetry stream sequence applied
	savedSeq     uint64    // stream sequence of the last checkpoint written
	lastData     time.Time // when the last telemetry came (time.Now: operational, not rollout time)
	lastSave     time.Time // when the last checkpoint was written (time.Now)
	dirty        bool      // state changed since the last checkpoint
	pendingSends int       // Deliver calls holding this owner; guarded by e.mu
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
		stopped: make(chan struct{}),
	}, nil
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
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for !o.m.State().Terminal() {
		select {
		case d := <-o.inbox:
			o.handle(ctx, d)
		case s := <-o.spec:
			o.applySpec(ctx, s)
		case <-ticker.C:
			o.idle(ctx)
		case <-ctx.Done():
			o.finish()
			return
		}
	}
	o.checkpoint(ctx, true)
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
			o.streamSeq, o.savedSeq = seq, seq
			o.e.opts.Log.Info("rollout restored from checkpoint", "rollout", o.id, "seq", o.m.seq, "streamSeq", seq)
			o.lastData = time.Now()
			return o.applySpecFlags(ctx, o.m.Spec(), now)
		}
		o.e.opts.Log.Warn("checkpoint unusable, resuming from route", "rollout", o.id, "err", err)
	}
	r, found, err := st.LoadRoute(ctx, o.id)
	if err != nil {
		return err
	}
	o.lastData = time.Now()
	if found {
		o.m.ResumeFrom(r, now)
		o.e.opts.Log.Info("rollout resumed from route", "rollout", o.id, "step", r.Step, "seq", r.Seq)
		o.dirty = true
		return o.applySpecFlags(ctx, o.m.Spec(), now)
	}
	if err := o.apply(ctx, o.m.Start(now)); err != nil {
		return err
	}
	return o.applySpecFlags(ctx, o.m.Spec(), now)
}

func (o *owner) handle(ctx context.Context, d delivery) {
	defer d.done()
	for i := range d.msgs {
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
		o.dirty = true
		if len(ds) > 0 {
			if err := o.apply(ctx, ds); err != nil {
				return
			}
		}
	}
	o.lastData = time.Now()
	o.checkpoint(ctx, false)
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
	o.dirty = true
	return o.apply(ctx, ds)
}

// idle follows the wall clock when no telemetry arrives, so steps of a
// silent rollout still time out, and checkpoints a changed state.
func (o *owner) idle(ctx context.Context) {
	if live := o.e.opts.Live; live != nil && !live() {
		// Telemetry cannot be read: silence says nothing about the
		// canary, so the clock waits; IdleAfter counts from the outage's end.
		o.lastData = time.Now()
	}
	if time.Since(o.lastData) >= o.e.opts.IdleAfter {
		if ds := o.m.Advance(o.e.opts.Now()); len(ds) > 0 {
			o.dirty = true
			_ = o.apply(ctx, ds)
		}
	}
	// A rollout without telemetry of its own still moves its checkpoint
	// to the delivered watermark now and then, so that it does not hold
	// back where the next start resumes consuming.
	if !o.dirty && o.e.watermark.Load() > o.savedSeq && time.Since(o.lastSave) >= 10*o.e.opts.CheckpointEvery {
		o.dirty = true
	}
	o.checkpoint(ctx, false)
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
	o.checkpoint(ctx, true)
	return nil
}

// checkpoint saves the machine's state when it changed and either force
// is set or CheckpointEvery has passed.
func (o *owner) checkpoint(ctx context.Context, force bool) {
	now := time.Now()
	if !o.dirty || (!force && now.Sub(o.lastSave) < o.e.opts.CheckpointEvery) {
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
	o.dirty = false
	o.lastSave = now
	o.savedSeq = seq
	faults.At(faults.AfterCheckpoint)
}

// finish applies what is in the inbox or on its way (the owner is already
// off the routing table) and writes a last checkpoint: the shutdown path.
func (o *owner) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.drain(ctx, func(d delivery) { o.handle(ctx, d) })
	o.checkpoint(ctx, true)
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
		o.e.mu.Lock()
		pending := o.pendingSends
		o.e.mu.Unlock()
		if pending == 0 {
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
		o.e.ignored.Add(int64(len(d.msgs)))
		d.done()
	})
}
