package bench

import (
	"errors"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// TipSequence returns the single events of a rollout whose canary fails
// every request while its baseline never does (the variants alternate, so
// a 50% step sees no sample ratio mismatch), and the index of the event
// that tips the rollback: events[:tip] decide nothing, events[tip] makes
// the engine roll back.
//
// The index is found by running the events through an engine.Machine with
// pol, the code the engine's owners run. A Machine is deterministic and
// evaluates every engine.EvalEvery observations, so as long as no step
// deadline passes (pol's minimum duration is far away), the engine decides
// at the same event.
func TipSequence(rollout string, pol *policy.Policy, t time.Time, max int) (events [][]byte, tip int, err error) {
	m, err := engine.NewMachine(engine.Spec{Rollout: rollout, Policy: pol.Name, Baseline: "v1", Canary: "v2"}, pol)
	if err != nil {
		return nil, 0, err
	}
	m.Start(t)
	for i := range max {
		data := tipEvent(rollout, i, t.Add(time.Duration(i)*time.Microsecond))
		rec, err := telemetry.Decode(data)
		if err != nil {
			return nil, 0, err
		}
		events = append(events, data)
		for _, d := range m.ObserveRecord(rec.Time, &rec) {
			if d.Action == engine.ActionRollback {
				return events, i, nil
			}
			return nil, 0, errors.New("tip sequence: decision " + d.Action.String() + " before the rollback")
		}
	}
	return nil, 0, errors.New("tip sequence: no rollback")
}

func tipEvent(rollout string, i int, t time.Time) []byte {
	dst := []byte(`{"rollout":"` + rollout + `","time":"`)
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	if i&1 == 0 {
		return append(dst, `","variant":"baseline","latency_ms":10,"status":200,"error":false}`...)
	}
	return append(dst, `","variant":"canary","latency_ms":10,"status":500,"error":true}`...)
}
