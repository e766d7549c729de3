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

// PutSpec writes a rollout's desired state, replacing any previous one.
func (a *Actuator) PutSpec(ctx context.Context, s engine.Spec) error {
	if !telemetry.ValidRollout(s.Rollout) {
		return fmt.Errorf("actuator: put spec: invalid rollout id %q", s.Rollout)
	}
	val, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("actuator: put spec %s: %w", s.Rollout, err)
	}
	if _, err := a.rollouts.Put(ctx, s.Rollout, val); err != nil {
		return fmt.Errorf("actuator: put spec %s: %w", s.Rollout, err)
	}
	return nil
}

// GetSpec returns a rollout's spec and its KV revision; ErrNotFound when
// there is none.
func (a *Actuator) GetSpec(ctx context.Context, id string) (engine.Spec, uint64, error) {
	if !telemetry.ValidRollout(id) {
		return engine.Spec{}, 0, fmt.Errorf("actuator: get spec: invalid rollout id %q", id)
	}
	e, err := a.rollouts.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return engine.Spec{}, 0, fmt.Errorf("actuator: spec %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return engine.Spec{}, 0, fmt.Errorf("actuator: get spec %s: %w", id, err)
	}
	var s engine.Spec
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return engine.Spec{}, 0, fmt.Errorf("actuator: spec %s: decode: %w", id, err)
	}
	return s, e.Revision(), nil
}

// UpdateSpec applies fn to a rollout's spec with compare-and-set, retrying
// when another writer got there first; fn may run more than once and must
// only modify the spec. An error from fn aborts the update and is returned.
// ErrNotFound when the rollout has no spec.
func (a *Actuator) UpdateSpec(ctx context.Context, id string, fn func(*engine.Spec) error) error {
	for range maxCASAttempts {
		s, rev, err := a.GetSpec(ctx, id)
		if err != nil {
			return err
		}
		if err := fn(&s); err != nil {
			return err
		}
		if s.Rollout != id {
			return fmt.Errorf("actuator: update spec %s: the rollout id cannot change", id)
		}
		val, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("actuator: update spec %s: %w", id, err)
		}
		_, err = a.rollouts.Update(ctx, id, val, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("actuator: update spec %s: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("actuator: update spec %s: %d compare-and-set conflicts in a row", id, maxCASAttempts)
}

// DeleteSpec removes a rollout's spec; watchers see it as deleted.
func (a *Actuator) DeleteSpec(ctx context.Context, id string) error {
	if !telemetry.ValidRollout(id) {
		return fmt.Errorf("actuator: delete spec: invalid rollout id %q", id)
	}
	if err := a.rollouts.Delete(ctx, id); err != nil {
		return fmt.Errorf("actuator: delete spec %s: %w", id, err)
	}
	return nil
}

// WatchSpecs calls fn with every current spec, then with every change, until
// ctx is done; it then returns nil. A deleted or purged spec is reported as
// Spec{Rollout: id} with deleted true. fn runs on WatchSpecs' goroutine, one
// call at a time. An entry that does not decode is logged and skipped.
func (a *Actuator) WatchSpecs(ctx context.Context, fn func(spec engine.Spec, deleted bool)) error {
	w, err := a.rollouts.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("actuator: watch specs: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("actuator: watch specs: watcher closed")
			}
			if e == nil {
				continue // the marker after the initial values
			}
			switch e.Operation() {
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				fn(engine.Spec{Rollout: e.Key()}, true)
			default:
				var s engine.Spec
				if err := json.Unmarshal(e.Value(), &s); err != nil {
					a.cfg.Log.Warn("actuator: undecodable spec skipped", "key", e.Key(), "revision", e.Revision(), "err", err)
					continue
				}
				fn(s, false)
			}
		}
	}
}

// SaveState stores a rollout's engine checkpoint.
func (a *Actuator) SaveState(ctx context.Context, rollout string, data []byte) error {
	if !telemetry.ValidRollout(rollout) {
		return fmt.Errorf("actuator: save state: invalid rollout id %q", rollout)
	}
	if _, err := a.state.Put(ctx, rollout, data); err != nil {
		return fmt.Errorf("actuator: save state %s: %w", rollout, err)
	}
	return nil
}

// LoadState returns a rollout's last checkpoint; ErrNotFound when there is
// none.
func (a *Actuator) LoadState(ctx context.Context, rollout string) ([]byte, error) {
	if !telemetry.ValidRollout(rollout) {
		return nil, fmt.Errorf("actuator: load state: invalid rollout id %q", rollout)
	}
	e, err := a.state.Get(ctx, rollout)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("actuator: state %s: %w", rollout, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("actuator: load state %s: %w", rollout, err)
	}
	return e.Value(), nil
}
