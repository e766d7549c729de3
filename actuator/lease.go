package actuator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseKey is the key of the engine's leader lease in its bucket.
const LeaseKey = "engine"

// Lease is the leader lease that fences engine processes: only the
// holder consumes telemetry and decides. It lives in a KV bucket whose
// TTL is the lease's: the holder rewrites the key (compare-and-set on its
// revision) every TTL/3, and when the holder stops doing so the key
// expires and a standby's Create succeeds.
//
// The holder considers the lease held until TTL - TTL/4 after the start
// of its last successful write, that is strictly before the key can
// expire on the server; a standby acquires it only after expiry. So two
// processes never both hold it, as long as clocks run at about the same
// rate (no synchronisation of wall clocks is assumed).
type Lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	rev   uint64
	until time.Time // monotonic: held while time.Now() is before it
}

// NewLease creates the lease bucket if needed and returns a lease that
// holder (a name unique to the process, or stable across restarts of the
// same process: a holder takes back its own lease at once) can acquire.
func NewLease(ctx context.Context, js jetstream.JetStream, bucket, holder string, ttl time.Duration, log *slog.Logger) (*Lease, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("actuator: lease ttl %s: want at least 1s", ttl)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "Verdict engine leader lease", History: 1,
		TTL: ttl, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("actuator: lease bucket %s: %w", bucket, err)
	}
	return &Lease{kv: kv, holder: holder, ttl: ttl, log: log}, nil
}

// Held reports whether this process holds the lease now.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until)
}

// Acquire waits until it holds the lease or ctx ends.
func (l *Lease) Acquire(ctx context.Context) error {
	logged := false
	for {
		ok, err := l.try(ctx)
		if ok {
			l.log.Info("leader lease acquired", "holder", l.holder)
			return nil
		}
		if err != nil {
			l.log.Warn("leader lease: cannot reach the bucket", "err", err)
		} else if !logged {
			l.log.Info("standing by: another engine holds the leader lease", "ttl", l.ttl)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.ttl / 4):
		}
	}
}

// try takes the lease when it is free or already ours.
func (l *Lease) try(ctx context.Context) (bool, error) {
	start := time.Now()
	rev, err := l.kv.Create(ctx, LeaseKey, []byte(l.holder))
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := l.kv.Get(ctx, LeaseKey)
		if gerr != nil {
			if errors.Is(gerr, jetstream.ErrKeyNotFound) {
				return false, nil // expired meanwhile: next round
			}
			return false, gerr
		}
		if string(e.Value()) != l.holder {
			return false, nil
		}
		rev, err = l.kv.Update(ctx, LeaseKey, []byte(l.holder), e.Revision())
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, nil
		}
		return false, err
	}
	l.held(rev, start)
	return true, nil
}

func (l *Lease) held(rev uint64, start time.Time) {
	l.mu.Lock()
	l.rev, l.until = rev, start.Add(l.ttl-l.ttl/4)
	l.mu.Unlock()
}

// Keep renews the lease every TTL/3 until ctx ends (then it releases it)
// or the lease is lost: another holder took it, or it could not be
// renewed before it ran out. It returns nil when ctx ended, else an
// error saying why the lease was lost; Held is false from that moment.
func (l *Lease) Keep(ctx context.Context) error {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.release()
			return nil
		case <-t.C:
		}
		l.mu.Lock()
		rev, until := l.rev, l.until
		l.mu.Unlock()
		if !time.Now().Before(until) {
			return errors.New("leader lease ran out before it could be renewed")
		}
		start := time.Now()
		rctx, cancel := context.WithDeadline(ctx, until)
		nrev, err := l.kv.Update(rctx, LeaseKey, []byte(l.holder), rev)
		cancel()
		switch {
		case err == nil:
			l.held(nrev, start)
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
			l.drop()
			return fmt.Errorf("leader lease taken over: %w", err)
		default:
			l.log.Warn("leader lease: renewal failed; retrying", "err", err)
		}
	}
}

func (l *Lease) drop() {
	l.mu.Lock()
	l.until = time.Time{}
	l.mu.Unlock()
}

// release deletes the key, so a standby takes over without waiting for it
// to expire.
func (l *Lease) release() {
	l.mu.Lock()
	rev := l.rev
	l.until = time.Time{}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, LeaseKey, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("leader lease: release", "err", err)
	}
}
