package actuator

import (
	"context"
	"testing"
	"time"
)

// TestLease: one holder at a time; the same holder takes its lease back at
// once; a holder whose key is overwritten loses the lease at its next
// renewal; a released lease is free at once.
func TestLease(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	newLease := func(holder string) *Lease {
		l, err := NewLease(ctx, js, "lease_test", holder, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := newLease("a"), newLease("b")
	if ok, err := a.try(ctx); !ok || err != nil {
		t.Fatalf("a.try() = %v, %v; want true", ok, err)
	}
	if ok, err := b.try(ctx); ok || err != nil {
		t.Fatalf("b.try() = %v, %v while a holds; want false", ok, err)
	}
	if !a.Held() || b.Held() {
		t.Fatalf("Held: a %v b %v, want true false", a.Held(), b.Held())
	}
	a2 := newLease("a") // a restarted with the same id
	if ok, err := a2.try(ctx); !ok || err != nil {
		t.Fatalf("same holder: try() = %v, %v; want true", ok, err)
	}

	// a's revision is stale now: its renewal finds the lease taken.
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Keep(kctx); err == nil {
		t.Fatal("Keep of a stale holder returned nil, want lease lost")
	}
	if a.Held() {
		t.Error("a holds a lease it lost")
	}

	// a2 releases on a graceful stop: b gets it without waiting for the TTL.
	k2, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a2.Keep(k2) }()
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Keep after cancel = %v, want nil", err)
	}
	if ok, err := b.try(ctx); !ok || err != nil {
		t.Fatalf("b.try() after release = %v, %v; want true", ok, err)
	}
}
