// Package ingest consumes telemetry from JetStream, decodes and validates
// it with package telemetry, dead-letters what it cannot use and hands the
// rest, in stream order, to a Sink (the engine).
//
// Delivery is at least once towards the Sink only across a crash; within a
// process every stream sequence is handed over at most once. See Run for the
// acknowledgement protocol.
package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Config names the streams and consumer and tunes the consumer. A zero field
// takes its value from DefaultConfig.
type Config struct {
	Stream         string        // telemetry stream, VERDICT_EVENTS
	SubjectPrefix  string        // verdict.events; a rollout's subject is <prefix>.<rollout>
	RejectedStream string        // dead-letter stream, VERDICT_REJECTED
	RejectedPrefix string        // verdict.rejected; subjects <prefix>.<reason>
	Consumer       string        // durable pull consumer, verdict-engine
	MaxAge         time.Duration // how long telemetry is kept, 24h
	RejectedMaxAge time.Duration // how long rejected messages are kept, 7 days
	Duplicates     time.Duration // Nats-Msg-Id duplicate window of both streams, 2m

	// MaxMsgSize is the largest message analysed, 64 KiB; larger messages
	// are dead-lettered as too-large. StreamMaxMsgSize, 1 MiB, is the
	// stream's own limit: it is larger on purpose, so that an oversized
	// message is stored, explained and dead-lettered instead of failing a
	// router's publish where nobody looks.
	MaxMsgSize       int32
	StreamMaxMsgSize int32
	// TruncateRejected is how much of an oversized payload is kept in the
	// dead letter, 4 KiB.
	TruncateRejected int

	BatchSize     int           // messages per pull request, 1000
	MaxAckPending int           // consumer's max_ack_pending, 20000
	AckWait       time.Duration // consumer's ack_wait, 30s
	FetchWait     time.Duration // how long one pull request waits for messages, 1s; bounds shutdown latency
	DrainTimeout  time.Duration // how long the batch in hand may take after ctx is done, 10s
	// DeadLetterTimeout bounds the wait for a batch's dead letters to be
	// stored, 5s; past it they are counted as lost and the batch is acked.
	DeadLetterTimeout time.Duration
	Replicas          int // stream replicas, 1
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		Stream:            "VERDICT_EVENTS",
		SubjectPrefix:     "verdict.events",
		RejectedStream:    "VERDICT_REJECTED",
		RejectedPrefix:    "verdict.rejected",
		Consumer:          "verdict-engine",
		MaxAge:            24 * time.Hour,
		RejectedMaxAge:    7 * 24 * time.Hour,
		Duplicates:        2 * time.Minute,
		MaxMsgSize:        64 << 10,
		StreamMaxMsgSize:  1 << 20,
		TruncateRejected:  4 << 10,
		BatchSize:         1000,
		MaxAckPending:     20000,
		AckWait:           30 * time.Second,
		FetchWait:         time.Second,
		DrainTimeout:      10 * time.Second,
		DeadLetterTimeout: 5 * time.Second,
		Replicas:          1,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setI := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&c.Stream, d.Stream)
	set(&c.SubjectPrefix, d.SubjectPrefix)
	set(&c.RejectedStream, d.RejectedStream)
	set(&c.RejectedPrefix, d.RejectedPrefix)
	set(&c.Consumer, d.Consumer)
	setD(&c.MaxAge, d.MaxAge)
	setD(&c.RejectedMaxAge, d.RejectedMaxAge)
	setD(&c.Duplicates, d.Duplicates)
	setD(&c.AckWait, d.AckWait)
	setD(&c.FetchWait, d.FetchWait)
	setD(&c.DrainTimeout, d.DrainTimeout)
	setD(&c.DeadLetterTimeout, d.DeadLetterTimeout)
	if c.MaxMsgSize <= 0 {
		c.MaxMsgSize = d.MaxMsgSize
	}
	if c.StreamMaxMsgSize <= 0 {
		c.StreamMaxMsgSize = d.StreamMaxMsgSize
	}
	setI(&c.TruncateRejected, d.TruncateRejected)
	setI(&c.BatchSize, d.BatchSize)
	setI(&c.MaxAckPending, d.MaxAckPending)
	setI(&c.Replicas, d.Replicas)
	return c
}

// Setup creates or updates the telemetry and dead-letter streams. It is
// idempotent; the consumer is created by Run.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg = cfg.withDefaults()
	streams := []jetstream.StreamConfig{{
		Name:        cfg.Stream,
		Description: "Verdict telemetry: one message per request or batch",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		MaxAge:      cfg.MaxAge,
		Duplicates:  cfg.Duplicates,
		MaxMsgSize:  cfg.StreamMaxMsgSize,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}, {
		Name:        cfg.RejectedStream,
		Description: "Verdict telemetry that could not be used, by reason",
		Subjects:    []string{cfg.RejectedPrefix + ".>"},
		MaxAge:      cfg.RejectedMaxAge,
		Duplicates:  cfg.Duplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ingest: set up stream %s: %w", sc.Name, err)
		}
	}
	return nil
}
