package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/ingest"
)

// Publish publishes n messages asynchronously and waits until the stream
// has acknowledged every one. msg returns the i-th subject and payload; the
// payload must not be reused (the client keeps it until the ack).
func Publish(ctx context.Context, js jetstream.JetStream, n int, msg func(i int) (string, []byte)) error {
	for i := range n {
		subj, data := msg(i)
		for {
			_, err := js.PublishAsync(subj, data)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return fmt.Errorf("publish %d: %w", i, err)
			}
			// The server is behind (a busy machine): let it catch up.
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("publish: %d unacknowledged: %w", js.PublishAsyncPending(), ctx.Err())
	}
}

// RawConsume measures a plain pull consumer on cfg's stream, which must
// hold at least n messages: the consumer settings of package ingest
// (durable, deliver all, AckWait, MaxAckPending, pull requests of
// BatchSize messages waiting at most FetchWait) and nothing else per
// message. With explicit false it uses AckAll and acknowledges the last
// message of each pull request with a double ack, as ingest acknowledges a
// batch; with explicit true every message is acknowledged on its own.
// It returns messages per second from the first pull request to the nth
// message (and, with AckAll, the ack of its batch).
// each, when not nil, is called with every message before it is counted.
func RawConsume(ctx context.Context, js jetstream.JetStream, cfg ingest.Config, n int, explicit bool, each func(jetstream.Msg)) (float64, error) {
	name, policy := "bench-raw-ackall", jetstream.AckAllPolicy
	if explicit {
		name, policy = "bench-raw-explicit", jetstream.AckExplicitPolicy
	}
	cons, err := rawConsumer(ctx, js, cfg, name, policy)
	if err != nil {
		return 0, err
	}
	d := ingest.DefaultConfig()
	batchSize, wait := or(cfg.BatchSize, d.BatchSize), or(cfg.FetchWait, d.FetchWait)
	got := 0
	start := time.Now()
	for got < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		batch, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(wait))
		if err != nil {
			return 0, fmt.Errorf("raw consumer: fetch: %w", err)
		}
		var last jetstream.Msg
		for m := range batch.Messages() {
			if each != nil {
				each(m)
			}
			got++
			if explicit {
				if err := m.Ack(); err != nil {
					return 0, fmt.Errorf("raw consumer: ack: %w", err)
				}
			}
			last = m
		}
		if !explicit && last != nil {
			if err := last.DoubleAck(ctx); err != nil {
				return 0, fmt.Errorf("raw consumer: ack: %w", err)
			}
		}
	}
	if explicit {
		// The acks are fire and forget: wait until the server has them.
		if err := js.Conn().FlushTimeout(30 * time.Second); err != nil {
			return 0, err
		}
	}
	return float64(got) / time.Since(start).Seconds(), nil
}

// RawPull measures ingest.PullRaw, the plain consumer with ingest's own
// pull protocol, on a durable consumer with ingest's settings: what the
// engine's transport delivers when nothing is done with the messages.
func RawPull(ctx context.Context, js jetstream.JetStream, cfg ingest.Config, n int) (float64, error) {
	const name = "bench-raw-pull"
	if _, err := rawConsumer(ctx, js, cfg, name, jetstream.AckAllPolicy); err != nil {
		return 0, err
	}
	cfg.Consumer = name
	start := time.Now()
	if err := ingest.PullRaw(ctx, js, cfg, n); err != nil {
		return 0, fmt.Errorf("raw pull: %w", err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// RawStream is RawConsume with AckAll, but pulling continuously
// (Consumer.Messages, which keeps up to two BatchSize pull requests
// outstanding) and acknowledging every BatchSize-th message without waiting
// for the server's reply: what a pipelined ingest could reach.
func RawStream(ctx context.Context, js jetstream.JetStream, cfg ingest.Config, n int) (float64, error) {
	cons, err := rawConsumer(ctx, js, cfg, "bench-raw-stream", jetstream.AckAllPolicy)
	if err != nil {
		return 0, err
	}
	batchSize := or(cfg.BatchSize, ingest.DefaultConfig().BatchSize)
	start := time.Now()
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * batchSize))
	if err != nil {
		return 0, fmt.Errorf("raw consumer: %w", err)
	}
	defer it.Stop()
	for got := 1; got <= n; got++ {
		m, err := it.Next()
		if err != nil {
			return 0, fmt.Errorf("raw consumer: next: %w", err)
		}
		if got%batchSize == 0 || got == n {
			if err := m.Ack(); err != nil {
				return 0, fmt.Errorf("raw consumer: ack: %w", err)
			}
		}
	}
	if err := js.Conn().FlushTimeout(30 * time.Second); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func rawConsumer(ctx context.Context, js jetstream.JetStream, cfg ingest.Config, name string, policy jetstream.AckPolicy) (jetstream.Consumer, error) {
	d := ingest.DefaultConfig()
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       name,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     policy,
		AckWait:       or(cfg.AckWait, d.AckWait),
		MaxDeliver:    -1,
		MaxAckPending: or(cfg.MaxAckPending, d.MaxAckPending),
		FilterSubject: cfg.SubjectPrefix + ".>",
	})
	if err != nil {
		return nil, fmt.Errorf("raw consumer: %w", err)
	}
	return cons, nil
}

func or[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// RawLive runs the AckAll plain consumer of RawConsume on cfg's stream
// until stop is closed, while something else publishes, and returns how
// many messages it consumed and how many were left in the stream.
func RawLive(ctx context.Context, js jetstream.JetStream, cfg ingest.Config, stop <-chan struct{}) (got int, backlog uint64, err error) {
	cons, err := rawConsumer(ctx, js, cfg, "bench-raw-live", jetstream.AckAllPolicy)
	if err != nil {
		return 0, 0, err
	}
	d := ingest.DefaultConfig()
	batchSize := or(cfg.BatchSize, d.BatchSize)
	for {
		select {
		case <-stop:
			info, err := cons.Info(ctx)
			if err != nil {
				return got, 0, err
			}
			return got, info.NumPending + uint64(info.NumAckPending), nil
		default:
		}
		batch, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(or(cfg.FetchWait, d.FetchWait)))
		if err != nil {
			return got, 0, fmt.Errorf("raw consumer: fetch: %w", err)
		}
		var last jetstream.Msg
		for m := range batch.Messages() {
			got++
			last = m
		}
		if last != nil {
			if err := last.DoubleAck(ctx); err != nil {
				return got, 0, fmt.Errorf("raw consumer: ack: %w", err)
			}
		}
	}
}
