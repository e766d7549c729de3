package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/telemetry"
)

// Route returns a rollout's route entry; ErrNotFound when it has none.
func (a *Actuator) Route(ctx context.Context, id string) (engine.Route, error) {
	if !telemetry.ValidRollout(id) {
		return engine.Route{}, fmt.Errorf("actuator: route: invalid rollout id %q", id)
	}
	e, err := a.routes.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return engine.Route{}, fmt.Errorf("actuator: route %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return engine.Route{}, fmt.Errorf("actuator: route %s: %w", id, err)
	}
	var r engine.Route
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return engine.Route{}, fmt.Errorf("actuator: route %s: decode: %w", id, err)
	}
	return r, nil
}

// Specs returns every rollout spec, as the engine reads them at start
// before it follows changes with WatchSpecs. Undecodable entries are
// logged and skipped.
func (a *Actuator) Specs(ctx context.Context) ([]engine.Spec, error) {
	var out []engine.Spec
	err := snapshot(ctx, a.rollouts, func(e jetstream.KeyValueEntry) {
		var s engine.Spec
		if err := json.Unmarshal(e.Value(), &s); err != nil || s.Rollout != e.Key() {
			a.cfg.Log.Warn("actuator: undecodable rollout spec", "key", e.Key(), "err", err)
			return
		}
		out = append(out, s)
	})
	if err != nil {
		return nil, fmt.Errorf("actuator: specs: %w", err)
	}
	return out, nil
}
