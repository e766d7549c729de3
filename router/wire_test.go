package router_test

import (
	"encoding/json"
	"testing"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/router"
)

// The route entry is written by the engine (engine.Route) and read by
// routers (router.Route, which does not import the engine so that router
// programs stay small). Every state the engine can write must read back
// with the same fields, and rolled-back states must send all traffic to
// the baseline.
func TestRouteWireMatchesEngine(t *testing.T) {
	for s := engine.StatePending; s <= engine.StateAborted; s++ {
		in := engine.Route{Rollout: "checkout-42", Baseline: "v41", Canary: "v42", Weight: 12.5, State: s, Step: 3, Seq: 9}
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := router.ParseRoute("checkout-42", data)
		want := router.Route{Rollout: "checkout-42", Baseline: "v41", Canary: "v42", Weight: 12.5, State: s.String(), Step: 3, Seq: 9}
		if err != nil || got != want {
			t.Fatalf("ParseRoute(%s) = %+v, %v, want %+v", data, got, err, want)
		}
		rolledBack := s == engine.StateRolledBack || s == engine.StateAborted
		if got.RolledBack() != rolledBack {
			t.Errorf("state %s: RolledBack() = %v, want %v", s, got.RolledBack(), rolledBack)
		}
	}
}
