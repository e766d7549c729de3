package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
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
	// CheckpointEvery is the least wall time between two checkpoints of a
	// rollout (decisions and shutdown aside), and the most while no more
	// than MaxCheckpointRate × CheckpointEvery rollouts have changed.
	// Default 1s.
	CheckpointEvery time.Duration
	// MaxCheckpointRate bounds the checkpoints the engine writes per second
	// on its own schedule (those forced by decisions and shutdown do not
	// count). With more changed rollouts than that in a CheckpointEvery,
	// each waits its turn, oldest checkpoint first: a changed rollout is
	// checkpointed within max(CheckpointEvery, changed rollouts /
	// MaxCheckpointRate), plus one tick of the engine's clock. Default
	// 1,000 a second: 10,000 active rollouts are checkpointed every 10s.
	MaxCheckpointRate int
	// QueueLen bounds each rollout owner's inbox (in deliveries). Default 8:
	// a Deliver call sends an owner at most one delivery and waits for it,
	// and ingest has one call at a time, so more is memory for nothing.
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

// Engine runs an owner per active rollout, with a goroutine while the owner
// has work in its inbox (see owner.wake). It implements
// ingest.Sink: ingest hands it decoded telemetry, and each owner feeds its
// rollout's Machine and applies the decisions through the Store.
type Engine struct {
	opts Options

	mu       sync.Mutex
	specs    map[string]Spec   // desired state, from the rollouts bucket
	owners   map[string]*owner // running rollouts
	ended    map[string]bool   // rollouts whose owner finished (terminal)
	policies policy.Set
	// known holds a route for each id of specs (the keys of specs,
	// written under mu and knownMu), for Rollout: ingest asks once per
	// event, and under its own lock it never waits for mu, which the clock
	// holds while it scans every owner. A plain map: at 10,000 rollouts a
	// sync.Map's trie cost a cache miss per level.
	knownMu sync.RWMutex
	known   map[string]*route

	updates chan struct{} // wakes Run to reconcile
	ready   chan struct{} // closed once Run has started the owners it can
	ignored atomic.Int64  // telemetry for rollouts without an owner
	late    atomic.Int64  // telemetry older than Lateness behind its rollout's clock
	// watermark is the highest stream sequence of a Deliver call that
	// returned after every owner applied its messages: each rollout has
	// applied all of its messages up to it.
	watermark atomic.Uint64

	start time.Time // origin of mono
	dgen  uint64    // numbers Deliver calls; guarded by mu
}

var _ ingest.Sink = (*Engine)(nil)

// route is a rollout's entry in known: the engine's copy of its id, which
// Rollout returns, and its running owner, so that Deliver finds a
// message's owner from the route ingest passes back (Message.Route)
// without looking the id up a second time. With 10,000 rollouts each
// lookup is a few cache misses.
//
// owner is guarded by mu. It is either nil (Deliver then looks in owners)
// or the owner in owners under id: attach and detach keep route.owner and
// owner.route pointing at each other, and owners changes only through
// addOwner and dropOwner, which call them. A route deleted from known with its spec keeps its owner
// until that owner leaves owners, as the owners map itself does.
type route struct {
	id    string
	owner *owner
}

// attach makes r the route of o (and o the owner of r), undoing any
// earlier pairing of either. The caller holds mu; o is in owners.
func attach(r *route, o *owner) {
	if o.route != nil {
		o.route.owner = nil
	}
	if r.owner != nil {
		r.owner.route = nil
	}
	r.owner, o.route = o, r
}

// detach undoes o's pairing with its route, as o leaves owners. The
// caller holds mu.
func detach(o *owner) {
	if o.route != nil {
		o.route.owner = nil
		o.route = nil
	}
}

// addOwner puts o into owners under id and pairs it with id's route; an
// owner enters owners only here. The caller holds mu.
func (e *Engine) addOwner(id string, o *owner) {
	e.owners[id] = o
	e.knownMu.RLock()
	r := e.known[id]
	e.knownMu.RUnlock()
	if r != nil {
		attach(r, o)
	}
}

// dropOwner takes o, the owner under id, out of owners and unpairs it from
// its route; an owner leaves owners only here. The caller holds mu.
func (e *Engine) dropOwner(id string, o *owner) {
	delete(e.owners, id)
	detach(o)
}

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
	if opts.MaxCheckpointRate <= 0 {
		opts.MaxCheckpointRate = 1000
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 8
	}
	if opts.Lateness <= 0 {
		opts.Lateness = 30 * time.Second
	}
	return &Engine{
		opts:    opts,
		specs:   map[string]Spec{},
		owners:  map[string]*owner{},
		ended:   map[string]bool{},
		known:   map[string]*route{},
		updates: make(chan struct{}, 1),
		ready:   make(chan struct{}),
		start:   time.Now(),
	}
}

// mono is the process's monotonic clock, in nanoseconds since New: when
// telemetry came and when checkpoints were written (operational time, not
// rollout time), kept in atomics the engine's clock reads.
func (e *Engine) mono() int64 { return int64(time.Since(e.start)) }

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
	e.knownMu.Lock()
	if deleted {
		delete(e.specs, s.Rollout)
		delete(e.known, s.Rollout)
	} else {
		if r, ok := e.known[s.Rollout]; ok {
			s.Rollout = r.id // one copy of the id: the keys of specs and owners
		} else {
			r = &route{id: s.Rollout}
			e.known[s.Rollout] = r
			if o := e.owners[s.Rollout]; o != nil { // still running, from before a delete
				attach(r, o)
			}
		}
		e.specs[s.Rollout] = s
	}
	e.knownMu.Unlock()
	e.mu.Unlock()
	e.wake()
}

func (e *Engine) wake() {
	select {
	case e.updates <- struct{}{}:
	default:
	}
}

// Known reports whether a rollout has a spec.
func (e *Engine) Known(rollout string) bool {
	_, _, ok := e.Rollout(rollout)
	return ok
}

// Rollout reports whether a rollout has a spec (telemetry for unknown
// rollouts is dead-lettered by ingest) and returns the engine's copy of
// its id, the key of the owners' map, and its route (a *route), with
// which Deliver finds the rollout's owner.
func (e *Engine) Rollout(rollout string) (id string, r any, ok bool) {
	e.knownMu.RLock()
	rt := e.known[rollout]
	e.knownMu.RUnlock()
	if rt == nil {
		return "", nil, false
	}
	return rt.id, rt, true
}

// Ignored counts telemetry for known rollouts that had no running owner
// (not started yet for want of a policy, or already ended).
func (e *Engine) Ignored() int64 { return e.ignored.Load() }

// Deliver hands messages to their rollouts' owners and returns once every
// owner has applied them (or ctx ends). Messages of one rollout keep
// their order.
//
// Owners share msgs (the Sink owns it after the call) and each gets the
// indices of its messages: one index array for the whole batch, grouped by
// owner with a counting sort, instead of a copy of the messages per owner.
func (e *Engine) Deliver(ctx context.Context, msgs []ingest.Message) error {
	sc, _ := deliverScratch.Get().(*scratch)
	if sc == nil {
		sc = new(scratch)
	}
	groups := sc.groups[:0]
	if cap(groups) < len(msgs) {
		groups = make([]group, 0, len(msgs))
	}
	// The group of each message (-1 for none) and, after it, the indices
	// grouped by owner.
	buf := sc.buf
	if cap(buf) < 2*len(msgs) {
		buf = make([]int32, 2*len(msgs))
	}
	buf = buf[:2*len(msgs)]
	owners := buf[:len(msgs)]
	e.mu.Lock()
	e.dgen++
	gen := e.dgen
	// With many rollouts their state is rarely in cache, and the atomics
	// of each message (pendingSends here, the owner's lock in tryInline)
	// keep the processor from starting the next message's loads early:
	// each cache miss would be waited for in turn. Prefetches are not
	// held back by them (package internal/prefetch), so this loop asks
	// for the owners and then their machines a few messages ahead, and
	// the apply loop below for the analyzers a few groups ahead, once
	// the machine that points to each is in cache.
	ahead := len(e.owners) > prefetchOwners
	for i := range msgs {
		if ahead {
			if o := msgOwner(msgs, i+ownersAhead); o != nil {
				o.prefetch()
			}
			if o := msgOwner(msgs, i+machinesAhead); o != nil {
				o.m.prefetch()
			}
		}
		o := msgOwner(msgs, i)
		if o == nil {
			o = e.owners[msgs[i].Record.Rollout]
		}
		if o == nil {
			e.ignored.Add(1)
			owners[i] = -1
			continue
		}
		if o.dgen != gen {
			o.dgen, o.dgroup = gen, int32(len(groups))
			o.pendingSends.Add(1) // drain waits for this call's send
			groups = append(groups, group{o: o})
		}
		groups[o.dgroup].n++
		owners[i] = o.dgroup
	}
	e.mu.Unlock()
	if len(groups) == 0 {
		e.delivered(msgs)
		sc.groups, sc.buf = groups, buf
		deliverScratch.Put(sc)
		return nil
	}
	// Counting sort: each group's part of idx starts where the previous
	// one ends; end runs from that start to the group's end as it fills.
	var at int32
	for g := range groups {
		groups[g].end = at
		at += groups[g].n
	}
	idx := buf[len(msgs) : len(msgs)+int(at)]
	for i, g := range owners {
		if g >= 0 {
			idx[groups[g].end] = int32(i)
			groups[g].end++
		}
	}
	b := &batch{msgs: msgs, idx: idx, done: make(chan struct{})}
	now := e.mono() // one clock read for the whole call: the owners' lastData
	// One count per group, and one for this call, released after the
	// loop together with the groups it applied itself: one atomic add for
	// those instead of one each.
	b.pending.Store(int32(len(groups)) + 1)
	var applied int32
	var err error
	for gi, g := range groups {
		o := g.o
		if ahead && gi+analyzersAhead < len(groups) {
			groups[gi+analyzersAhead].o.m.an.Prefetch()
		}
		if err == nil {
			d := delivery{b: b, lo: g.end - g.n, hi: g.end}
			// Mostly the owner is waiting on its inbox and this call
			// can apply its messages itself, without waking it.
			if rest, ok := o.tryInline(d, now); ok {
				if rest.b == nil {
					applied++
					o.pendingSends.Add(-1)
					continue
				}
				// Decisions to publish: the owner takes over. It is
				// alive (not closed) and takes every delivery until it
				// stops, so this send waits for nothing but the owner,
				// not even ctx: the decisions must reach it.
				select {
				case o.inbox <- rest:
					o.wake()
					o.pendingSends.Add(-1)
					continue
				case <-o.stopped:
				}
				o.queued.Add(-1)
				o.pendingSends.Add(-1)
				b.ownerDone()
				continue
			} else {
				o.queued.Add(1)
			}
			// Mostly the inbox has room: a plain non-blocking send is
			// much cheaper than the three-way select, which only a full
			// inbox needs.
			select {
			case o.inbox <- d:
				o.wake()
				o.pendingSends.Add(-1)
				continue
			default:
			}
			// The inbox is full, so a goroutine is serving the owner.
			select {
			case o.inbox <- d:
				o.wake()
				o.pendingSends.Add(-1)
				continue
			case <-o.stopped: // the owner ended: nothing to count
			case <-ctx.Done():
				err = ctx.Err()
			}
			o.queued.Add(-1) // not sent
		}
		o.pendingSends.Add(-1)
		b.ownerDone()
	}
	b.ownersDone(applied + 1)
	if err != nil {
		return err
	}
	clear(groups) // keep no owner alive
	sc.groups = groups[:0]
	select {
	case <-b.done:
		e.delivered(msgs)
		// Every owner is done with idx: the scratch can serve the next call.
		sc.buf = buf
		deliverScratch.Put(sc)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliver's prefetching (see there): from how many rollouts on, and how
// far ahead. Below a few hundred rollouts their state stays in the
// caches. The distances are in messages (the owner first, its machine
// once the owner's pointer to it has arrived) and in groups (the
// analyzer, once the machine's pointer to it has); applying one message
// of a rollout takes a few hundred nanoseconds, more than a miss.
const (
	prefetchOwners = 256
	ownersAhead    = 8
	machinesAhead  = 4
	analyzersAhead = 2
)

// msgOwner returns the owner msgs[i]'s route points to, if i is in range
// and it has one (else Deliver looks the id up in owners). The caller
// holds mu.
func msgOwner(msgs []ingest.Message, i int) *owner {
	if i >= len(msgs) {
		return nil
	}
	if r, _ := msgs[i].Route.(*route); r != nil {
		return r.owner
	}
	return nil
}

// group is an owner's part of a Deliver call.
type group struct {
	o      *owner
	n, end int32 // messages of the group; end of its part of idx
}

// scratch is a Deliver call's memory, reused by the next call (through
// deliverScratch) once every owner has applied the batch: with 10,000
// rollouts a batch has about as many groups as messages.
type scratch struct {
	groups []group
	buf    []int32
}

var deliverScratch sync.Pool

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
	clockDone := make(chan struct{})
	defer func() { <-clockDone }()
	go func() { defer close(clockDone); e.clock(ctx) }()
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

// tickEvery is the period of the engine's clock: a quarter of
// CheckpointEvery, at most 250ms, so a due checkpoint waits little.
func (e *Engine) tickEvery() time.Duration {
	return min(max(e.opts.CheckpointEvery/4, time.Millisecond), 250*time.Millisecond)
}

// clock is the one timer of all owners. Each tick it pokes the owners
// due a checkpoint, within the rate budget; each second it also pokes
// those idle for IdleAfter so they Advance. An owner nobody pokes and
// that gets no telemetry does not wake at all.
func (e *Engine) clock(ctx context.Context) {
	every := e.tickEvery()
	t := time.NewTicker(every)
	defer t.Stop()
	// Checkpoints the budget allows per tick, at least one.
	budget := max(1, int(int64(e.opts.MaxCheckpointRate)*int64(every)/int64(time.Second)))
	var (
		due      []dueOwner
		notLive  int64 // mono when telemetry was last seen unreadable
		lastIdle int64
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := e.mono()
		live := e.opts.Live == nil || e.opts.Live()
		if !live {
			// Silence says nothing about the canary while telemetry
			// cannot be read: IdleAfter counts from the outage's end.
			notLive = now
		}
		idle := live && now-lastIdle >= int64(time.Second)
		if idle {
			lastIdle = now
		}
		due = e.scan(due[:0], now, idle, notLive)
		if len(due) > budget {
			// Oldest checkpoint first, so every changed rollout gets its
			// turn within (changed rollouts / MaxCheckpointRate).
			slices.SortFunc(due, func(a, b dueOwner) int { return cmp.Compare(a.saved, b.saved) })
		}
		for _, d := range due[:min(len(due), budget)] {
			d.o.poke(wantCheckpoint)
		}
		clear(due) // no owner kept alive by the scratch slice
	}
}

// dueOwner is an owner due a checkpoint and when it wrote its last one.
type dueOwner struct {
	saved int64
	o     *owner
}

// scan pokes the owners that are idle (when idle is set) and appends to
// due those whose checkpoint is due: changed at least CheckpointEvery
// after their last checkpoint, or behind the delivered watermark for ten
// times that. Owners already asked for a checkpoint are not counted again.
func (e *Engine) scan(due []dueOwner, now int64, idle bool, notLive int64) []dueOwner {
	every := int64(e.opts.CheckpointEvery)
	idleAfter := int64(e.opts.IdleAfter)
	wm := e.watermark.Load()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range e.owners {
		if idle && now-max(o.lastData.Load(), notLive) >= idleAfter {
			o.poke(wantIdle)
		}
		if o.want.Load()&wantCheckpoint != 0 {
			continue
		}
		saved := o.lastSave.Load()
		if since := now - saved; since >= every && (o.dirty.Load() || (since >= 10*every && wm > o.savedSeq.Load())) {
			due = append(due, dueOwner{saved, o})
		}
	}
	return due
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
		e.addOwner(id, o)
		octx, cancel := context.WithCancel(ctx)
		o.cancel = cancel
		o.start(octx)
	}
	for id, o := range e.owners {
		if _, ok := e.specs[id]; !ok {
			o.stop() // it drains in-flight deliveries before it exits
			e.dropOwner(id, o)
		}
	}
}

// ownerEnded is called by an owner whose rollout reached a terminal state.
func (e *Engine) ownerEnded(id string, o *owner) {
	e.mu.Lock()
	if e.owners[id] == o {
		e.dropOwner(id, o)
		e.ended[id] = true
	}
	e.mu.Unlock()
}

// stopAll takes every owner off the routing table, stops them and waits
// until each has applied its inbox and written its last checkpoint.
func (e *Engine) stopAll() {
	e.mu.Lock()
	owners := make([]*owner, 0, len(e.owners))
	for id, o := range e.owners {
		owners = append(owners, o)
		e.dropOwner(id, o)
	}
	e.mu.Unlock()
	for _, o := range owners {
		o.stop()
	}
	for _, o := range owners {
		<-o.stopped
	}
}
