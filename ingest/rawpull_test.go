package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestPullRawReadsAndAcks: PullRaw reads exactly n messages with ingest's
// pull protocol and leaves them all acknowledged (AckAll), so it measures
// the same transport Run uses, end to end.
func TestPullRawReadsAndAcks(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	const n = 1000 // not a multiple of BatchSize: the last ack is partial
	for i := range n {
		publish(t, js, cfg.SubjectPrefix+".r1", good("r1", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable: cfg.Consumer, AckPolicy: jetstream.AckAllPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait: cfg.AckWait, MaxAckPending: cfg.MaxAckPending,
	}); err != nil {
		t.Fatal(err)
	}
	if err := PullRaw(ctx, js, cfg, n); err != nil {
		t.Fatalf("PullRaw: %v", err)
	}
	eventually(t, "every message acknowledged", func() bool {
		info := consumerInfo(t, js, cfg)
		return info.AckFloor.Stream == n && info.NumAckPending == 0
	})
	if got := consumerInfo(t, js, cfg).Delivered.Stream; got < n {
		t.Errorf("delivered up to stream sequence %d, want %d", got, n)
	}
}
