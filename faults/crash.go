// Package faults holds Verdict's fault-injection hooks and, in
// faults/suite, the process-level fault suite run by `make faults`.
//
// The hooks are for tests only. With VERDICT_CRASH_AT=<point>:<n> in its
// environment, a process kills itself with SIGKILL the n-th time it passes
// the named point, so a test can crash the engine exactly between two
// steps that must survive a crash together. Without the variable a hook
// is one atomic load.
package faults

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Crash points.
const (
	// BeforeAck: a batch was delivered to the rollouts (their state is
	// updated in memory) and not yet acknowledged.
	BeforeAck = "before-ack"
	// AfterPublish: a decision was published and its route not yet written.
	AfterPublish = "after-publish"
	// AfterCheckpoint: a checkpoint was saved.
	AfterCheckpoint = "after-checkpoint"
)

var (
	point string
	nth   int64
	hits  atomic.Int64
)

func init() {
	v := os.Getenv("VERDICT_CRASH_AT")
	if v == "" {
		return
	}
	p, n, ok := strings.Cut(v, ":")
	k, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || k < 1 {
		return
	}
	point, nth = p, k
}

// At kills the process when it reaches the crash point VERDICT_CRASH_AT
// names for the n-th time; otherwise it does nothing.
func At(p string) {
	if point == "" || p != point {
		return
	}
	if hits.Add(1) == nth {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
