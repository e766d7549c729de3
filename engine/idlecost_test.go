package engine

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/verdict-dev/verdict/policy"
)

// cpuNow is the CPU time (user and system) the process has used.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleCost measures what 10,000 idle rollouts cost: CPU time of the
// process per second of (synctest) wall time, once every rollout has been
// idle for IdleAfter. A measurement, not a check: it runs only with
// VERDICT_MEASURE_IDLE=1 (go test -run TestIdleCost -v ./engine).
func TestIdleCost(t *testing.T) {
	if os.Getenv("VERDICT_MEASURE_IDLE") == "" {
		t.Skip()
	}
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		pol := mustPolicy(t, "hold", "")
		e := New(Options{Store: st, Now: func() time.Time { return t0 }})
		e.SetPolicies(policy.Set{pol.Name: pol})
		const n = 10000
		for i := range n {
			e.SetSpec(Spec{Rollout: fmt.Sprintf("r%d", i), Policy: "test"}, false)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		time.Sleep(20 * time.Second) // all idle after IdleAfter
		synctest.Wait()
		c0 := cpuNow()
		const secs = 60
		for range secs {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		c1 := cpuNow()
		t.Logf("%d idle rollouts: %v CPU per second of wall time", n, (c1-c0)/secs)
		cancel()
		<-done
	})
}
