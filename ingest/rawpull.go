package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats.go/jetstream"
)

// PullRaw reads n messages from the durable consumer cfg.Consumer on
// cfg.Stream with Run's pull protocol (two pull requests of BatchSize
// outstanding on one subscription) and does nothing else with them: no
// sequence check, no decoding, no delivery. The last message of every
// BatchSize, and the nth, is acknowledged (AckAll) without waiting for the
// server, as Run acknowledges a batch. It returns once the nth message was
// received and its acknowledgement flushed, without waiting for the pull
// requests still outstanding.
//
// It is the plain consumer `verdict bench` compares Run with: the same
// transport, so the ratio of the two is what ingest's own work costs.
func PullRaw(ctx context.Context, js jetstream.JetStream, cfg Config, n int) error {
	cfg = cfg.withDefaults()
	p, err := newPuller(js, cfg)
	if err != nil {
		return err
	}
	// Unsubscribe at once rather than wait for the outstanding requests
	// to expire (p.close): a measurement ends with its last message, as
	// Run's does. What the server still sends to the dead inbox is
	// dropped unacknowledged; Run resets a consumer before it pulls.
	defer func() { _ = p.sub.Unsubscribe() }()
	got := 0
	count := func(m *nats.Msg) error {
		if got++; got%cfg.BatchSize == 0 || got == n {
			if err := ack(p.nc, m.Reply); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
		return nil
	}
	for got < n {
		select {
		case m := <-p.msgs:
			if _, err := p.next(m, count); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.nc.FlushTimeout(flushTimeout)
}

// flushTimeout bounds PullRaw's wait for the server to take its last ack.
const flushTimeout = 30 * time.Second
