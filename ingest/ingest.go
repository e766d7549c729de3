package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/telemetry"
)

// Message is one accepted telemetry message.
type Message struct {
	Seq      uint64 // sequence in the telemetry stream
	Subject  string
	Record   telemetry.Record // Record.Time is the stream time when the event had none
	Received time.Time        // when JetStream stored the message
}

// Sink takes accepted messages. The engine implements it.
type Sink interface {
	// Known reports whether a rollout exists; messages of unknown rollouts
	// are dead-lettered. It is called for every message and must be cheap.
	Known(rollout string) bool
	// Deliver hands over msgs, in stream order, and returns once every
	// rollout owner has taken them; only then are they acknowledged. The
	// Sink owns msgs after the call. An error stops Run, and the messages
	// are delivered again to the next Run. ctx is done when the batch must
	// be abandoned, which is DrainTimeout after shutdown was requested.
	Deliver(ctx context.Context, msgs []Message) error
}

// Ingester consumes the telemetry stream with one durable pull consumer.
// Run it once at a time per durable consumer (see Run).
type Ingester struct {
	js   jetstream.JetStream
	dl   jetstream.JetStream // dead-letter publisher, with its own async timeout
	cfg  Config
	sink Sink
	log  *slog.Logger

	reasons  map[telemetry.Reason]int // index into rejected
	accepted atomic.Uint64
	rejected []atomic.Uint64
	dlErrors atomic.Uint64
	redeliv  atomic.Uint64
	batches  atomic.Uint64

	resume atomic.Uint64 // ResumeAt's sequence, taken by the next consumer set-up
	lastOK atomic.Int64  // unix nanos of the last pull request that ended well

	// Owned by Run.
	handled  uint64 // highest stream sequence handed over or dead-lettered
	lastCSeq uint64 // consumer sequence of the last message received; 0 after a (re)start
}

// New returns an Ingester; zero fields of cfg take their defaults and a nil
// log discards. Call Setup once before Run.
func New(js jetstream.JetStream, cfg Config, sink Sink, log *slog.Logger) *Ingester {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Ingester{
		js: js, cfg: cfg.withDefaults(), sink: sink, log: log,
		reasons: make(map[telemetry.Reason]int),
	}
	for i, r := range telemetry.Reasons() {
		in.reasons[r] = i
	}
	in.rejected = make([]atomic.Uint64, len(in.reasons))
	in.dl = deadLetterPublisher(js, in.cfg.DeadLetterTimeout, log)
	return in
}

var errGap = errors.New("deliveries lost in flight")

// ResumeAt makes the next Run deliver from stream sequence seq when the
// durable consumer has already acknowledged it: the engine's checkpoints
// lag the acknowledgements, so after a restart the events they lack are
// delivered again (the Sink skips what each rollout already has). A seq
// past the ack floor changes nothing. Call it before Run.
func (in *Ingester) ResumeAt(seq uint64) { in.resume.Store(seq) }

// Live reports whether telemetry is being read: a pull request ended
// without error within the last 3 FetchWaits.
func (in *Ingester) Live() bool {
	t := in.lastOK.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < 3*in.cfg.FetchWait
}

// Run consumes telemetry until ctx is done, then finishes the batch in hand
// (for at most DrainTimeout) and returns nil. It returns an error when the
// Sink fails; it retries setting up the consumer (with backoff up to 5s)
// until it succeeds or ctx is done.
//
// Acknowledgement. The consumer uses AckAll: after a batch was delivered
// and its dead letters were stored, the message with the highest stream
// sequence is acknowledged, which acknowledges every earlier one. That is
// one ack per batch instead of one per message (about 2.5x the throughput
// of explicit acks), and it is safe because there is one reader that
// handles messages in stream order, so everything below the acknowledged
// message has been handled. Two things could break that, and Run guards
// against both:
//
//   - Messages delivered to a previous process but never handled: on start,
//     if the consumer has pending acks, Run resets it to its ack floor + 1,
//     so they are delivered again, first and in order, instead of after
//     AckWait and after newer messages an AckAll would cover.
//   - Deliveries lost in flight (a pull request abandoned by the client, a
//     reconnect): the consumer sequence of each delivery must follow the
//     previous one; on a gap Run acknowledges what it handled before the
//     gap and resets the consumer the same way.
//
// A message redelivered after AckWait (a Sink slower than AckWait) whose
// stream sequence was already handled is skipped, so the Sink never sees a
// sequence twice from one Ingester. Never run two Ingesters on the same
// durable consumer at once: one's AckAll would acknowledge the other's
// messages.
func (in *Ingester) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	cons, err := in.consumer(ctx)
	for err != nil {
		// No server yet, or a reset that did not go through: the engine
		// must not run without consuming, so keep trying.
		in.log.Warn("ingest: cannot set up the consumer; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		cons, err = in.consumer(ctx)
	}
	backoff = 50 * time.Millisecond
	for ctx.Err() == nil {
		err := in.fetch(ctx, cons)
		var derr *deliverError
		switch {
		case err == nil:
			in.lastOK.Store(time.Now().UnixNano())
			backoff = 50 * time.Millisecond
			continue
		case errors.As(err, &derr):
			if ctx.Err() != nil {
				return nil
			}
			return err
		case errors.Is(err, errGap):
			in.log.Warn("ingest: deliveries lost in flight; resetting the consumer to its ack floor")
			if err = in.reset(ctx); err == nil {
				continue
			}
		}
		if ctx.Err() != nil {
			break
		}
		in.log.Warn("ingest: consuming failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		if c, err := in.consumer(ctx); err == nil {
			cons = c
		}
	}
	return nil
}

// consumer creates or updates the durable consumer and, when it has
// messages delivered but not acknowledged, resets it to its ack floor.
func (in *Ingester) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := in.js.CreateOrUpdateConsumer(ctx, in.cfg.Stream, jetstream.ConsumerConfig{
		Durable:       in.cfg.Consumer,
		Description:   "Verdict engine: telemetry in stream order, AckAll by a single reader",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       in.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: in.cfg.MaxAckPending,
		FilterSubject: in.cfg.SubjectPrefix + ".>",
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: create consumer %s: %w", in.cfg.Consumer, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("ingest: consumer info: %w", err)
	}
	in.lastCSeq = 0
	if seq := in.resume.Swap(0); seq > 0 && seq <= info.AckFloor.Stream {
		if err := in.resetTo(ctx, seq); err != nil {
			in.resume.Store(seq) // try again with the next set-up
			return nil, err
		}
		in.log.Info("ingest: replaying acknowledged telemetry the checkpoints lack",
			"from", seq, "ackFloor", info.AckFloor.Stream)
		return cons, nil
	}
	if info.NumAckPending > 0 {
		if err := in.reset(ctx); err != nil {
			return nil, err
		}
	}
	return cons, nil
}

// resetTo makes the consumer deliver again from stream sequence seq.
func (in *Ingester) resetTo(ctx context.Context, seq uint64) error {
	s, err := in.js.Stream(ctx, in.cfg.Stream)
	if err != nil {
		return fmt.Errorf("ingest: reset consumer: %w", err)
	}
	res, err := s.ResetConsumerToSequence(ctx, in.cfg.Consumer, seq)
	if err != nil {
		return fmt.Errorf("ingest: reset consumer to %d: %w", seq, err)
	}
	in.lastCSeq = 0
	if info, err := s.Info(ctx); err == nil && seq < info.State.FirstSeq {
		// Older telemetry expired (stream MaxAge): it cannot be replayed.
		in.log.Warn("ingest: telemetry the checkpoints lack has expired (stream MaxAge) and cannot be replayed",
			"asked", seq, "first", info.State.FirstSeq, "reset", res.ResetSeq)
	}
	return nil
}

// reset makes the consumer deliver again from its ack floor + 1.
func (in *Ingester) reset(ctx context.Context) error {
	s, err := in.js.Stream(ctx, in.cfg.Stream)
	if err != nil {
		return fmt.Errorf("ingest: reset consumer: %w", err)
	}
	res, err := s.ResetConsumer(ctx, in.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("ingest: reset consumer: %w", err)
	}
	in.lastCSeq = 0
	in.log.Info("ingest: consumer reset", "seq", res.ResetSeq)
	return nil
}

// received is a message with its parsed metadata.
type received struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
}

// fetch runs one pull request: it hands over messages in batches of up to
// BatchSize, flushing early whenever no further message is waiting, so a
// trickle of events is not held back until the request expires.
func (in *Ingester) fetch(ctx context.Context, cons jetstream.Consumer) error {
	batch, err := cons.Fetch(in.cfg.BatchSize, jetstream.FetchMaxWait(in.cfg.FetchWait))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	msgs := batch.Messages()
	// The pull request ends at BatchSize messages or when the server
	// expires it (FetchWait); wait for that so no goroutine outlives Run.
	defer func() {
		for range msgs {
		}
	}()
	hand := make([]received, 0, min(in.cfg.BatchSize, 256))
	flush := func() error {
		err := in.handle(ctx, hand)
		hand = hand[:0]
		return err
	}
	for {
		var m jetstream.Msg
		var ok bool
		if len(hand) == 0 {
			select {
			case m, ok = <-msgs:
			case <-ctx.Done():
				return nil
			}
		} else {
			select {
			case m, ok = <-msgs:
			default:
				if err := flush(); err != nil {
					return err
				}
				continue
			}
		}
		if !ok {
			if err := flush(); err != nil {
				return err
			}
			if err := batch.Error(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("fetch: %w", err)
			}
			return nil
		}
		meta, err := m.Metadata()
		if err != nil {
			in.log.Error("ingest: message without JetStream metadata; skipped", "subject", m.Subject(), "err", err)
			continue
		}
		if in.lastCSeq != 0 && meta.Sequence.Consumer != in.lastCSeq+1 {
			if err := flush(); err != nil {
				return err
			}
			return errGap
		}
		in.lastCSeq = meta.Sequence.Consumer
		hand = append(hand, received{m, meta})
		if len(hand) >= in.cfg.BatchSize || ctx.Err() != nil {
			if err := flush(); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

type deliverError struct{ err error }

func (e *deliverError) Error() string { return "ingest: deliver: " + e.err.Error() }
func (e *deliverError) Unwrap() error { return e.err }

// handle checks a batch, delivers the good messages, dead-letters the bad
// ones and acknowledges the batch.
func (in *Ingester) handle(ctx context.Context, hand []received) error {
	if len(hand) == 0 {
		return nil
	}
	gctx, cancel := graceful(ctx, in.cfg.DrainTimeout)
	defer cancel()

	good := make([]Message, 0, len(hand))
	var dead []deadLetter
	var last jetstream.Msg
	var lastSeq uint64
	for _, h := range hand {
		seq := h.meta.Sequence.Stream
		if seq > lastSeq {
			last, lastSeq = h.msg, seq
		}
		if seq <= in.handled {
			in.redeliv.Add(1)
			continue
		}
		rec, err := in.check(h)
		if err != nil {
			dead = append(dead, in.deadLetter(h, err))
			continue
		}
		good = append(good, Message{Seq: seq, Subject: h.msg.Subject(), Record: rec, Received: h.meta.Timestamp})
	}
	if len(good) > 0 {
		if err := in.sink.Deliver(gctx, good); err != nil {
			return &deliverError{err}
		}
	}
	in.awaitDeadLetters(gctx, dead)
	faults.At(faults.BeforeAck)
	if lastSeq > in.handled {
		in.handled = lastSeq
	}
	in.accepted.Add(uint64(len(good)))
	in.batches.Add(1)
	for _, d := range dead {
		in.rejected[in.reasons[d.reason]].Add(1)
	}
	if err := last.DoubleAck(gctx); err != nil {
		// The batch was handled; if the ack is lost it is delivered again
		// and skipped as already handled (or, after a restart, handed over
		// again: at least once across a crash).
		in.log.Warn("ingest: ack failed", "seq", lastSeq, "err", err)
	}
	return nil
}

// check validates one message against its transport context and decodes it.
func (in *Ingester) check(h received) (telemetry.Record, *telemetry.Error) {
	data := h.msg.Data()
	if len(data) > int(in.cfg.MaxMsgSize) {
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonTooLarge,
			Err: fmt.Errorf("message of %d bytes exceeds the limit of %d", len(data), in.cfg.MaxMsgSize)}
	}
	rec, err := telemetry.Decode(data)
	if err != nil {
		var te *telemetry.Error
		if errors.As(err, &te) {
			return telemetry.Record{}, te
		}
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonBadJSON, Err: err}
	}
	if token := subjectRollout(h.msg.Subject(), in.cfg.SubjectPrefix); token != rec.Rollout {
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonSubjectMismatch,
			Err: fmt.Errorf("rollout %q published on subject %s", rec.Rollout, h.msg.Subject())}
	}
	if !in.sink.Known(rec.Rollout) {
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonUnknownRollout,
			Err: fmt.Errorf("no rollout %q", rec.Rollout)}
	}
	if rec.Time.IsZero() {
		rec.Time = h.meta.Timestamp.UTC()
	}
	return rec, nil
}

// subjectRollout returns the rollout token of <prefix>.<rollout>, or "" when
// the subject has another shape.
func subjectRollout(subject, prefix string) string {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok || strings.Contains(rest, ".") {
		return ""
	}
	return rest
}

// graceful returns a context that is not cancelled with ctx but at most
// grace after it, so the batch in hand can finish after shutdown starts.
func graceful(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer *time.Timer
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		timer = time.AfterFunc(grace, cancel)
		mu.Unlock()
	})
	return gctx, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}
