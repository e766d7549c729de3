package engine

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/internal/prefetch"
	"github.com/verdict-dev/verdict/policy"
)

// delivery is a run of one rollout's messages from a Deliver call, in
// stream order: b.msgs[i] for i in b.idx[lo:hi]. The owner calls
// b.ownerDone once it has applied all of them. A delivery without b only
// wakes the owner (see poke). It is 16 bytes, because every owner's inbox
// holds QueueLen of them.
type delivery struct {
	b      *batch
	lo, hi int32
}

// batch is one Deliver call: the messages, shared read-only by every
// owner they reach, their indices grouped by owner, and a count of the
// owners that still have to apply their part; the last one closes done.
// (One counter and one channel per call, instead of a WaitGroup and a
// goroutine waiting on it.)
type batch struct {
	msgs    []ingest.Message
	idx     []int32
	pending atomic.Int32
	done    chan struct{}
}

func (b *batch) ownerDone() { b.ownersDone(1) }

// ownersDone counts n owners done.
func (b *batch) ownersDone(n int32) {
	if b.pending.Add(-n) == 0 {
		close(b.done)
	}
}

// What the engine asks of an owner besides deliveries (owner.want).
const (
	wantIdle       uint32 = 1 << iota // no telemetry for IdleAfter: Advance to the wall clock
	wantCheckpoint                    // write a checkpoint now (the engine's rate budget allows it)
	wantSpec                          // apply nextSpec
	wantStop                          // apply what is on its way, checkpoint and end
)

// owner owns a rollout's Machine and does its I/O. Everything that
// changes the rollout goes through its inbox (deliveries, and empty
// deliveries that wake it to look at want), except deliveries a Deliver
// call applies itself (tryInline). One channel, so a wake-up is a plain
// receive rather than a select over several (with 10,000 owners, selectgo
// was a fifth of the CPU). The inbox is served by a goroutine that exists
// only while there is something in it (see wake): an idle rollout has no
// goroutine.
//
// One writer at a time: whoever changes the machine holds mu, the owner
// goroutine for everything it does (restore, deliveries, spec changes,
// idle advances, checkpoints, decisions, the end), a Deliver call only to
// apply messages without I/O. A Deliver call never waits for mu: when the
// owner holds it (say for a KV write), the delivery goes to the inbox.
type owner struct {
	e       *Engine
	id      string
	m       *Machine
	inbox   chan delivery
	cancel  context.CancelFunc // ends ctx
	stopped chan struct{}      // closed when the owner has ended

	mu sync.Mutex
	// Guarded by mu. restored: restore is done, so a delivery may be
	// applied inline. closed: the owner is finishing or retiring and
	// drains its inbox, so nothing more is applied inline (it would come
	// after the last checkpoint). pendingDs: decisions made but not yet
	// published, which the owner goroutine publishes before anything
	// else: those made by messages applied inline (with the delivery
	// tryInline queued after them), and those whose publishing was cut
	// short by a stop. No checkpoint is written while there are any: a
	// checkpoint must never include the state past a decision that was
	// not published, or the decision would be lost for good (the replay
	// from the previous checkpoint makes it again instead).
	restored, closed bool
	pendingDs        []Decision
	// queued counts deliveries in the inbox or in hand, not yet applied
	// (wake-ups aside). Changed only under mu, except by Deliver calls
	// about to send (which tryInline may race; concurrent calls have no
	// order between them anyway). A delivery is applied inline only
	// when none is queued, so a rollout's messages keep their order.
	queued atomic.Int32

	streamSeq uint64 // last telemetry stream sequence applied

	// The engine's clock reads these to decide which owners to wake (see
	// Engine.clock); only the owner writes them. Times are Engine.mono.
	savedSeq atomic.Uint64 // stream sequence of the last checkpoint written
	lastData atomic.Int64  // when the last telemetry came (operational, not rollout time)
	lastSave atomic.Int64  // when the last checkpoint was written
	dirty    atomic.Bool   // state changed since the last checkpoint

	// want holds what the engine asks for; see poke.
	want atomic.Uint32

	pendingSends atomic.Int32 // Deliver calls holding this owner (raised under e.mu)
	// Deliver's grouping scratch, guarded by e.mu: the owner's group in
	// the Deliver call numbered dgen.
	dgen   uint64
	dgroup int32
	route  *route // the known entry pointing at this owner, if any; guarded by e.mu

	// Cold fields last, so that the ones a Deliver call touches share
	// three cache lines.
	ctx context.Context // of the owner's Store calls, set by start
	// sched guards running: a goroutine serves the owner (see wake).
	sched    sync.Mutex
	running  bool
	nextSpec atomic.Pointer[Spec] // latest desired state (wantSpec); newest wins
	// The spec last passed to setSpec, guarded by e.mu: an unchanged spec
	// does not wake the owner.
	lastSpec Spec
	specSent bool
}

func newOwner(e *Engine, spec Spec, pol *policy.Policy) (*owner, error) {
	mem := new(ownerMem)
	if err := mem.mm.init(spec, pol); err != nil {
		return nil, err
	}
	o := &mem.o
	*o = owner{
		e: e, id: spec.Rollout, m: &mem.mm.m,
		inbox:   make(chan delivery, e.opts.QueueLen),
		stopped: make(chan struct{}),
	}
	// Not idle before it has even restored. But due a checkpoint as soon
	// as it changes: none was written by this process yet, and an engine
	// that restarts again soon should not replay everything since the
	// previous start (each restart would otherwise add a second to it).
	o.lastData.Store(e.mono())
	o.lastSave.Store(math.MinInt64 / 2)
	return o, nil
}

// ownerMem is an owner with its machine and analyzer, in one allocation
// (see machineMem). In this order the fields an event touches (the
// owner's first three cache lines, the machine, the analyzer's header)
// lie within the first 1.2 KB of its 9.4.
type ownerMem struct {
	o  owner
	mm machineMem
}

// prefetch asks the processor to start loading the fields a Deliver call
// touches (see Engine.Deliver).
func (o *owner) prefetch() { prefetch.Range(unsafe.Pointer(o), unsafe.Offsetof(o.ctx)) }

// poke asks the owner to do w soon; it never blocks. The owner looks at
// want after every receive from its inbox, so one empty delivery is enough
// to wake it, and none is needed when want was already set (an earlier
// poke sent one) or the inbox is full (a receive is bound to come).
func (o *owner) poke(w uint32) {
	if o.want.Or(w) != 0 {
		return
	}
	select {
	case o.inbox <- delivery{}:
	default:
	}
	o.wake()
}

// setSpec passes new desired state to the owner; only the newest counts.
// The caller holds e.mu.
func (o *owner) setSpec(s Spec) {
	if o.specSent && o.lastSpec == s {
		return
	}
	o.lastSpec, o.specSent = s, true
	o.nextSpec.Store(&s)
	o.poke(wantSpec)
}

// stop asks the owner to end; it does not wait. The owner applies what is
// in its inbox or on its way and writes a last checkpoint.
func (o *owner) stop() {
	o.poke(wantStop)
	if o.cancel != nil {
		o.cancel()
	}
}

// start begins serving the owner: a goroutine restores the rollout and
// applies its inbox. The caller holds e.mu; o is in owners.
func (o *owner) start(ctx context.Context) {
	o.ctx = ctx
	o.wake()
}

// wake makes sure a goroutine serves the owner after a send to its
// inbox. The owner has no goroutine while its inbox is empty: a parked
// goroutine per rollout cost every garbage collection a stack scan per
// rollout (about 2 µs each: 22 ms a cycle with 10,000 rollouts), and
// nearly all telemetry is applied inline by Deliver anyway.
func (o *owner) wake() {
	o.sched.Lock()
	if !o.running {
		o.running = true
		go o.serve()
	}
	o.sched.Unlock()
}

// next takes the next delivery from the inbox. With the inbox empty it
// reports false and the goroutine must end: running is then false, so
// the next send to the inbox (which calls wake) starts another. The
// caller holds mu.
func (o *owner) next() (delivery, bool) {
	select {
	case d := <-o.inbox:
		return d, true
	default:
	}
	o.sched.Lock()
	defer o.sched.Unlock()
	// Under sched: a send that completed before its sender's wake took
	// sched is seen here, and one that completes later finds running
	// false and starts a goroutine itself.
	select {
	case d := <-o.inbox:
		return d, true
	default:
	}
	o.running = false
	return delivery{}, false
}

// serve is the owner's goroutine: the first restores the rollout; each
// applies the inbox until it is empty (then it ends, and wake starts
// another for the next delivery) or the rollout ends. A goroutine that
// is not the first finds the machine as the last one left it, or moved
// on by tryInline, whose delivery (with any decisions to publish) is on
// its way to the inbox: so it takes a delivery before it looks at
// whether the rollout has ended, as a goroutine waiting on the inbox
// would.
func (o *owner) serve() {
	ctx := o.ctx
	o.mu.Lock()
	ended := false
	if !o.restored {
		if !o.restoreRetrying(ctx) {
			// Stopped before the rollout could be restored: nothing was
			// applied and nothing is checkpointed, so the next start
			// replays what was delivered. Deliver calls must not wait.
			o.closed = true
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			o.drain(dctx, func(d delivery) { d.b.ownerDone() })
			cancel()
			o.mu.Unlock()
			close(o.stopped) // running stays true: nothing serves o again
			return
		}
		o.restored = true
		ended = o.m.State().Terminal()
	}
	// No timer of its own: the engine's clock pokes the owner when it is
	// idle or due a checkpoint, so 10,000 rollouts cost one ticker.
	for !ended {
		d, ok := o.next()
		if !ok {
			o.mu.Unlock()
			return
		}
		// Decisions made inline are published before anything else, a
		// checkpoint above all: one must never include the state past a
		// decision not yet published.
		err := o.publishPending(ctx) // fails only when ctx ended: stopping
		if d.b != nil {
			if err == nil {
				o.handle(ctx, d)
			} else {
				d.b.ownerDone() // as handle does when it cannot publish
			}
			o.queued.Add(-1)
		}
		if o.want.Load() != 0 && o.tick(ctx) {
			o.closed = true
			o.finish()
			o.mu.Unlock()
			close(o.stopped)
			return
		}
		ended = o.m.State().Terminal()
	}
	o.closed = true
	o.checkpoint(ctx)
	o.mu.Unlock()
	o.retire(ctx)
	close(o.stopped)
}

// tryInline applies d in the caller's goroutine (a Deliver call) when
// nobody else holds the machine, the owner is restored and not closing,
// and no delivery is queued before it: then the owner goroutine is not
// woken at all, which with 10,000 rollouts was a channel send, a wake-up
// and a receive per rollout and batch. It does no I/O: at a message that
// makes decisions it stops, leaves them in pendingDs and returns the rest
// of d (possibly empty), queued, for the caller to send to the inbox;
// the owner publishes them first. handled reports whether d was taken
// (applied, or part applied and rest to send); if not, the caller sends d.
// When all of d was applied (handled, rest.b nil) the caller counts d's
// part of the batch done (batch.pending). now is the caller's reading of
// mono, for lastData.
func (o *owner) tryInline(d delivery, now int64) (rest delivery, handled bool) {
	if !o.mu.TryLock() {
		return delivery{}, false
	}
	defer o.mu.Unlock()
	if !o.restored || o.closed || o.queued.Load() != 0 || o.pendingDs != nil {
		return delivery{}, false
	}
	ds, rest := o.observe(d)
	o.lastData.Store(now)
	if len(ds) == 0 {
		return delivery{}, true // the caller counts d done
	}
	o.pendingDs = ds
	o.queued.Add(1) // under mu: nothing is applied inline before the owner publishes ds
	return rest, true
}

// restoreRetrying restores the rollout, retrying with backoff (a KV
// read that failed, say while the server restarts) until it succeeds or
// ctx ends; it reports whether it succeeded. Meanwhile the rollout's
// deliveries wait in the inbox, and a Deliver call with more for it waits
// too: telemetry is held back, never applied out of order or dropped. The
// caller holds mu.
func (o *owner) restoreRetrying(ctx context.Context) bool {
	backoff := 100 * time.Millisecond
	for {
		err := o.restore(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			o.e.opts.Log.Warn("rollout stopped before it was restored", "rollout", o.id, "err", err)
			return false
		}
		o.e.opts.Log.Warn("cannot restore rollout, retrying", "rollout", o.id, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
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
//
// The owner goroutine calls it with mu held. Decisions left by tryInline
// come first: they were made by messages before d's.
func (o *owner) handle(ctx context.Context, d delivery) {
	defer d.b.ownerDone()
	defer func() { o.lastData.Store(o.e.mono()) }()
	if o.publishPending(ctx) != nil {
		return
	}
	for {
		ds, rest := o.observe(d)
		if len(ds) == 0 {
			return
		}
		if err := o.apply(ctx, ds); err != nil {
			return
		}
		d = rest
	}
}

// publishPending publishes the decisions tryInline left. The caller holds mu.
func (o *owner) publishPending(ctx context.Context) error {
	ds := o.pendingDs
	if ds == nil {
		return nil
	}
	o.pendingDs = nil
	return o.apply(ctx, ds)
}

// observe applies d's messages in order up to the first that makes
// decisions, and returns those decisions (the state is then marked dirty;
// publishing them checkpoints) and what is left of d. It does no I/O.
// The caller holds mu.
func (o *owner) observe(d delivery) (ds []Decision, rest delivery) {
	changed := false
	defer func() {
		if changed && !o.dirty.Load() { // a load is cheaper than a store; mu keeps it true
			o.dirty.Store(true)
		}
	}()
	for k := d.lo; k < d.hi; k++ {
		msg := &d.b.msgs[d.b.idx[k]]
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
			return ds, delivery{b: d.b, lo: k + 1, hi: d.hi}
		}
	}
	return nil, delivery{}
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

// tick does what the engine asked for, and reports whether to stop.
// wantSpec: new desired state. wantIdle: no telemetry for
// IdleAfter while telemetry can be read, so the rollout's clock follows the
// wall clock and steps of a silent rollout still time out. wantCheckpoint:
// the state changed, or the delivered watermark moved past the last
// checkpoint (a rollout without telemetry of its own must not hold back
// where the next start resumes consuming).
func (o *owner) tick(ctx context.Context) (stop bool) {
	w := o.want.Swap(0)
	if w&wantStop != 0 {
		return true
	}
	if w&wantSpec != 0 {
		_ = o.applySpecFlags(ctx, *o.nextSpec.Load(), o.m.Now())
	}
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
	return false
}

// apply publishes decisions in order, retrying until each is applied or
// ctx ends: a rollout never moves on past an unpublished decision.
func (o *owner) apply(ctx context.Context, ds []Decision) error {
	if len(o.pendingDs) > 0 {
		// Older decisions are still unpublished: they go first.
		ds = append(o.pendingDs, ds...)
		o.pendingDs = nil
	}
	for i, d := range ds {
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
				o.pendingDs = append([]Decision(nil), ds[i:]...)
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
	if !o.dirty.Load() || len(o.pendingDs) > 0 {
		return // nothing new, or decisions not yet published (see pendingDs)
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
// The caller holds mu and has set closed, so nothing is applied inline
// any more: every delivery still on its way comes through the inbox.
func (o *owner) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.publishPending(ctx); err != nil {
		// Decisions could not be published: apply nothing after them and
		// write no checkpoint. The next start replays from the last
		// checkpoint and makes them again.
		o.e.opts.Log.Warn("stopping with unpublished decisions; the next start makes them again",
			"rollout", o.id, "decisions", len(o.pendingDs), "err", err)
		o.drain(ctx, func(d delivery) { d.b.ownerDone() })
		return
	}
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
			if d.b != nil { // not a wake-up
				fn(d)
				o.queued.Add(-1)
			}
			continue
		default:
		}
		if o.pendingSends.Load() == 0 {
			return
		}
		select {
		case d := <-o.inbox:
			if d.b != nil {
				fn(d)
				o.queued.Add(-1)
			}
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
		o.e.ignored.Add(int64(d.hi - d.lo))
		d.b.ownerDone()
	})
}
