// Package actuator is the engine's output to NATS: it publishes decisions as
// CloudEvents on the decision stream, writes route weights to a KV bucket
// with compare-and-set, and stores rollout specs (desired state) and engine
// checkpoints.
package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/telemetry"
)

// ErrNotFound is returned by GetSpec, UpdateSpec and LoadState when the
// rollout has no entry.
var ErrNotFound = errors.New("not found")

// Config names the decision stream and the KV buckets. A zero field takes
// its value from DefaultConfig.
type Config struct {
	DecisionStream string        // VERDICT_DECISIONS
	DecisionPrefix string        // verdict.decisions; subjects <prefix>.<rollout>
	RoutesBucket   string        // verdict_routes
	RolloutsBucket string        // verdict_rollouts
	StateBucket    string        // verdict_state
	Duplicates     time.Duration // decision stream's Nats-Msg-Id window, 24h
	MaxAge         time.Duration // how long decisions are kept, 90 days
	Replicas       int           // of the stream and buckets, 1
	Log            *slog.Logger  // for entries that cannot be decoded; nil means slog.Default()
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		DecisionStream: "VERDICT_DECISIONS",
		DecisionPrefix: "verdict.decisions",
		RoutesBucket:   "verdict_routes",
		RolloutsBucket: "verdict_rollouts",
		StateBucket:    "verdict_state",
		Duplicates:     24 * time.Hour,
		MaxAge:         90 * 24 * time.Hour,
		Replicas:       1,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct {
		p *string
		v string
	}{
		{&c.DecisionStream, d.DecisionStream}, {&c.DecisionPrefix, d.DecisionPrefix},
		{&c.RoutesBucket, d.RoutesBucket}, {&c.RolloutsBucket, d.RolloutsBucket},
		{&c.StateBucket, d.StateBucket},
	} {
		if *f.p == "" {
			*f.p = f.v
		}
	}
	if c.Duplicates <= 0 {
		c.Duplicates = d.Duplicates
	}
	if c.MaxAge <= 0 {
		c.MaxAge = d.MaxAge
	}
	if c.Replicas <= 0 {
		c.Replicas = d.Replicas
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Setup creates or updates the decision stream and the three KV buckets.
// It is idempotent.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.withDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.DecisionStream,
		Description: "Verdict decisions, CloudEvents 1.0 JSON",
		Subjects:    []string{cfg.DecisionPrefix + ".>"},
		MaxAge:      cfg.MaxAge,
		Duplicates:  min(cfg.Duplicates, cfg.MaxAge),
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("actuator: set up stream %s: %w", cfg.DecisionStream, err)
	}
	for _, kc := range []jetstream.KeyValueConfig{
		{Bucket: cfg.RoutesBucket, Description: "Verdict route weights, watched by routers", History: 10},
		{Bucket: cfg.RolloutsBucket, Description: "Verdict rollout specs (desired state)", History: 10},
		{Bucket: cfg.StateBucket, Description: "Verdict engine checkpoints", History: 1},
	} {
		kc.Storage = jetstream.FileStorage
		kc.Replicas = cfg.Replicas
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("actuator: set up bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// Actuator publishes decisions and reads and writes Verdict's KV buckets.
// It is safe for concurrent use.
type Actuator struct {
	js                      jetstream.JetStream
	cfg                     Config
	routes, rollouts, state jetstream.KeyValue
}

// New binds an Actuator to the buckets Setup created.
func New(js jetstream.JetStream, cfg Config) (*Actuator, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := &Actuator{js: js, cfg: cfg}
	for _, b := range []struct {
		kv   *jetstream.KeyValue
		name string
	}{{&a.routes, cfg.RoutesBucket}, {&a.rollouts, cfg.RolloutsBucket}, {&a.state, cfg.StateBucket}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("actuator: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	return a, nil
}

// maxCASAttempts bounds the compare-and-set loops; each conflict means
// another writer made progress, so running out is a contention problem.
const maxCASAttempts = 16

// Apply publishes decision d, made at time t, as a CloudEvent on
// <DecisionPrefix>.<rollout> with Nats-Msg-Id d.EventID(), waits for the
// stream's acknowledgement (a duplicate is success: the decision was
// published before), then writes route r with compare-and-set: a stored
// route with a Seq at or above r.Seq is left alone, so a stale writer never
// overwrites a newer weight. Apply is idempotent and can be retried.
func (a *Actuator) Apply(ctx context.Context, d engine.Decision, t time.Time, r engine.Route) error {
	if !telemetry.ValidRollout(d.Rollout) {
		return fmt.Errorf("actuator: apply: invalid rollout id %q", d.Rollout)
	}
	if r.Rollout != d.Rollout {
		return fmt.Errorf("actuator: apply: route of %q for a decision of %q", r.Rollout, d.Rollout)
	}
	data, err := json.Marshal(d.CloudEvent(t))
	if err != nil {
		return fmt.Errorf("actuator: apply %s: encode: %w", d.EventID(), err)
	}
	m := nats.NewMsg(a.cfg.DecisionPrefix + "." + d.Rollout)
	m.Header.Set("Content-Type", "application/cloudevents+json")
	m.Data = data
	if _, err := a.js.PublishMsg(ctx, m, jetstream.WithMsgID(d.EventID())); err != nil {
		return fmt.Errorf("actuator: apply %s: publish: %w", d.EventID(), err)
	}
	faults.At(faults.AfterPublish)
	if err := a.putRoute(ctx, r); err != nil {
		return fmt.Errorf("actuator: apply %s: %w", d.EventID(), err)
	}
	return nil
}

// putRoute writes r unless the stored route is at the same or a later seq.
func (a *Actuator) putRoute(ctx context.Context, r engine.Route) error {
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode route: %w", err)
	}
	for range maxCASAttempts {
		e, err := a.routes.Get(ctx, r.Rollout)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = a.routes.Create(ctx, r.Rollout, val)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // created concurrently: compare with it
			}
		case err != nil:
			return fmt.Errorf("read route: %w", err)
		default:
			var cur engine.Route
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Seq >= r.Seq {
				return nil // as new or newer already; an undecodable route is replaced
			}
			_, err = a.routes.Update(ctx, r.Rollout, val, e.Revision())
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("write route: %w", err)
		}
		return nil
	}
	return fmt.Errorf("write route: %d compare-and-set conflicts in a row", maxCASAttempts)
}

// Routes returns every route entry, for `verdict rollout status`.
func (a *Actuator) Routes(ctx context.Context) ([]engine.Route, error) {
	var out []engine.Route
	err := snapshot(ctx, a.routes, func(e jetstream.KeyValueEntry) {
		var r engine.Route
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			a.cfg.Log.Warn("actuator: undecodable route", "key", e.Key(), "err", err)
			return
		}
		out = append(out, r)
	})
	if err != nil {
		return nil, fmt.Errorf("actuator: routes: %w", err)
	}
	return out, nil
}

// snapshot calls fn for the current value of every key of kv.
func snapshot(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil {
				return nil // initial values done
			}
			fn(e)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
