package engine

import (
	"fmt"
	"time"
)

// Action is what a decision does to a rollout.
type Action uint8

// The decision actions of DESIGN.md.
const (
	ActionStart Action = iota + 1
	ActionPromote
	ActionComplete
	ActionHold
	ActionRollback
	ActionPause
	ActionResume
	ActionAbort
)

var actionNames = [...]string{"", "start", "promote", "complete", "hold", "rollback", "pause", "resume", "abort"}

func (a Action) String() string {
	if int(a) < len(actionNames) && a != 0 {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// MarshalText encodes the action by name.
func (a Action) MarshalText() ([]byte, error) {
	if a == 0 || int(a) >= len(actionNames) {
		return nil, fmt.Errorf("invalid action %d", uint8(a))
	}
	return []byte(actionNames[a]), nil
}

// UnmarshalText decodes an action name.
func (a *Action) UnmarshalText(b []byte) error {
	for i := 1; i < len(actionNames); i++ {
		if actionNames[i] == string(b) {
			*a = Action(i)
			return nil
		}
	}
	return fmt.Errorf("unknown action %q", b)
}

// State is where a rollout is in its life.
type State uint8

// Rollout states. Completed, RolledBack and Aborted are terminal.
const (
	StatePending State = iota + 1
	StateProgressing
	StatePaused
	StateCompleted
	StateRolledBack
	StateAborted
)

var stateNames = [...]string{"", "pending", "progressing", "paused", "completed", "rolledback", "aborted"}

func (s State) String() string {
	if int(s) < len(stateNames) && s != 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Terminal reports whether the rollout has ended.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateRolledBack || s == StateAborted
}

// MarshalText encodes the state by name.
func (s State) MarshalText() ([]byte, error) {
	if s == 0 || int(s) >= len(stateNames) {
		return nil, fmt.Errorf("invalid state %d", uint8(s))
	}
	return []byte(stateNames[s]), nil
}

// UnmarshalText decodes a state name.
func (s *State) UnmarshalText(b []byte) error {
	for i := 1; i < len(stateNames); i++ {
		if stateNames[i] == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown state %q", b)
}

// CloudEvent is a decision in CloudEvents 1.0 structured JSON mode, as
// published on verdict.decisions.<rollout>.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            Decision  `json:"data"`
}

// EventID is the CloudEvent id and Nats-Msg-Id of a decision: "<rollout>/<seq>".
func (d *Decision) EventID() string { return fmt.Sprintf("%s/%d", d.Rollout, d.Seq) }

// CloudEvent wraps the decision, made at time t, in its CloudEvent envelope.
func (d *Decision) CloudEvent(t time.Time) CloudEvent {
	return CloudEvent{
		SpecVersion:     "1.0",
		ID:              d.EventID(),
		Source:          "verdict",
		Type:            "verdict.decision",
		Subject:         d.Rollout,
		Time:            t.UTC(),
		DataContentType: "application/json",
		Data:            *d,
	}
}
