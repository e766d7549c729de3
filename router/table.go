package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultRoutesBucket is the KV bucket the engine writes routes to.
const DefaultRoutesBucket = "verdict_routes"

// TableOptions configures a Table. The zero value is usable.
type TableOptions struct {
	// Bucket is the routes KV bucket; DefaultRoutesBucket when empty.
	Bucket string
	// Retry is the pause between attempts to (re)open the bucket and its
	// watcher, for example while the engine has not created the bucket
	// yet or NATS is unreachable; 1s when zero.
	Retry time.Duration
	// Logger receives warnings (bad entries, lost watchers); discarded
	// when nil.
	Logger *slog.Logger
}

// TableStats counts what a Table has seen since it was created.
type TableStats struct {
	Routes  int    // rollouts currently known
	Updates uint64 // entries applied (puts and deletes)
	Stale   uint64 // entries ignored because their seq was lower than the cached one
	Invalid uint64 // entries ignored because they did not decode or check
	Watches uint64 // watchers opened; more than 1 means the watch was re-established
}

// Table is a local cache of the routes bucket, fed by one KV watcher.
//
// Reads (Route, Assign, Routes) take a snapshot through an atomic pointer:
// they never block, never touch the network and are safe for concurrent
// use by any number of request handlers. The cache is written only by the
// goroutine running Run.
//
// Safety rules: a rollout with no entry is served by the baseline (weight
// 0); an entry whose seq is lower than the cached one is ignored, so a
// stale write never moves a weight backwards; a rollback is applied as soon
// as its entry arrives; while NATS is unreachable the last known routes
// stay in force; deleting an entry removes the route (baseline).
type Table struct {
	js     jetstream.JetStream
	bucket string
	retry  time.Duration
	log    *slog.Logger

	routes  atomic.Pointer[map[string]Route]
	ready   chan struct{}
	readyMu sync.Once
	running atomic.Bool

	updates, stale, invalid, watches atomic.Uint64
}

// NewTable returns a Table over the routes bucket of js. It is empty and
// not ready until Run has loaded the bucket's initial values.
func NewTable(js jetstream.JetStream, opts TableOptions) *Table {
	t := &Table{js: js, bucket: opts.Bucket, retry: opts.Retry, log: opts.Logger, ready: make(chan struct{})}
	if t.bucket == "" {
		t.bucket = DefaultRoutesBucket
	}
	if t.retry <= 0 {
		t.retry = time.Second
	}
	if t.log == nil {
		t.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	empty := map[string]Route{}
	t.routes.Store(&empty)
	return t
}

// Ready returns a channel that is closed once the bucket's initial values
// have been loaded. Until then every rollout is served by the baseline.
func (t *Table) Ready() <-chan struct{} { return t.ready }

// Route returns the cached route of rollout; ok is false when none is known.
func (t *Table) Route(rollout string) (r Route, ok bool) {
	r, ok = (*t.routes.Load())[rollout]
	return r, ok
}

// Routes returns every cached route, sorted by rollout.
func (t *Table) Routes() []Route {
	m := *t.routes.Load()
	out := make([]Route, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rollout < out[j].Rollout })
	return out
}

// Assign returns the variant of unit in rollout (see Route.Assign); the
// baseline when no route is known.
func (t *Table) Assign(rollout, unit string) Variant {
	r, _ := t.Route(rollout)
	return r.Assign(unit)
}

// Stats returns the Table's counters.
func (t *Table) Stats() TableStats {
	return TableStats{
		Routes:  len(*t.routes.Load()),
		Updates: t.updates.Load(),
		Stale:   t.stale.Load(),
		Invalid: t.invalid.Load(),
		Watches: t.watches.Load(),
	}
}

// Run watches the bucket and updates the cache until ctx ends, then
// returns nil. When the bucket does not exist yet or the watcher is lost,
// it retries every TableOptions.Retry, keeping the cached routes. Run may
// be called only once.
func (t *Table) Run(ctx context.Context) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("router: Table.Run called twice")
	}
	// The client's ordered consumer survives a NATS restart by itself but
	// only notices after missed heartbeats (about 20s); re-watching on
	// reconnect brings rollbacks made meanwhile in at once.
	nc := t.js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	for {
		err := t.watch(ctx, reconnected)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReconnected) {
			t.log.Info("NATS reconnected; re-watching routes", "bucket", t.bucket)
			continue
		}
		t.log.Warn("routes watch lost; keeping the last known routes", "bucket", t.bucket, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(t.retry):
		}
	}
}

var errReconnected = errors.New("reconnected")

// watch runs one KV watcher until it fails, the connection is
// re-established, or ctx ends.
func (t *Table) watch(ctx context.Context, reconnected <-chan nats.Status) error {
	kv, err := t.js.KeyValue(ctx, t.bucket)
	if err != nil {
		return fmt.Errorf("open bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket: %w", err)
	}
	t.watches.Add(1)
	defer stopWatcher(w)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-reconnected:
			return errReconnected
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil { // the marker after the initial values
				t.readyMu.Do(func() { close(t.ready) })
				continue
			}
			t.apply(e)
		}
	}
}

// stopWatcher stops w and drains its channel, so that the client's
// delivery callback, which blocks on a full channel, can finish.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	timeout := time.NewTimer(time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-timeout.C:
			return
		}
	}
}

// apply puts one entry into the cache: copy on write, by the only writer.
func (t *Table) apply(e jetstream.KeyValueEntry) {
	key := e.Key()
	old := *t.routes.Load()
	var r Route
	del := e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	if !del {
		var err error
		if r, err = ParseRoute(key, e.Value()); err != nil {
			t.invalid.Add(1)
			t.log.Warn("ignoring route entry", "key", key, "revision", e.Revision(), "err", err)
			return
		}
		if cur, ok := old[key]; ok && r.Seq < cur.Seq {
			t.stale.Add(1)
			t.log.Warn("ignoring stale route entry", "key", key, "seq", r.Seq, "cached_seq", cur.Seq)
			return
		}
	} else if _, ok := old[key]; !ok {
		return
	}
	next := make(map[string]Route, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	if del {
		delete(next, key)
	} else {
		next[key] = r
	}
	t.routes.Store(&next)
	t.updates.Add(1)
}
