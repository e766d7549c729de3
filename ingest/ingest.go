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
	handled  uint64 // highest stream sequence handed over or dead-lettered (after consume returns)
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
		ok := in.lastOK.Load()
		err := in.consume(ctx, cons)
		if in.lastOK.Load() != ok {
			backoff = 50 * time.Millisecond // a pull request went well
		}
		var derr *deliverError
		switch {
		case err == nil:
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

// batch is a run of consecutive deliveries, checked, decoded and ready to
// hand over and acknowledge together.
type batch struct {
	good    []Message
	dead    []deadLetter
	n       int           // deliveries, redeliveries of handled messages included
	last    jetstream.Msg // the delivery with the highest stream sequence: its AckAll covers the batch
	lastSeq uint64
}

// consume runs ingest as a pipeline of two goroutines until ctx is done or
// something fails:
//
//   - this one receives: it sends pull requests of BatchSize one after the
//     other, checks the consumer sequence of every delivery, decodes and
//     validates it, starts the dead letters, and collects batches;
//   - a handler delivers each batch to the Sink, waits for its dead letters
//     and acknowledges it.
//
// So receiving and decoding overlap with the owners applying the previous
// batch and with the ack, instead of taking turns with them. A batch goes
// to the handler whenever the handler is free (so a trickle of events is
// handed over at once) or when it reaches BatchSize (then receiving waits:
// at most two batches are in hand). Batches go through one unbuffered
// channel and the handler takes them one at a time, so they are delivered
// and acknowledged in stream order, each ack after its own and every
// earlier batch were applied: what AckAll needs.
//
// One pull request is outstanding at a time, never two: the server
// spreads its deliveries over waiting requests round robin, and separate
// requests of Fetch arrive on separate subscriptions, which would lose
// the order.
func (in *Ingester) consume(ctx context.Context, cons jetstream.Consumer) error {
	gctx, cancel := graceful(ctx, in.cfg.DrainTimeout)
	defer cancel()
	work := make(chan *batch)
	stopped := make(chan struct{})
	handled := in.handled
	var herr error
	go func() {
		defer close(stopped)
		for b := range work {
			if herr = in.handle(gctx, b); herr != nil {
				return // the receiver sees stopped
			}
			handled = max(handled, b.lastSeq)
		}
	}()
	err := in.receive(ctx, cons, work, stopped)
	close(work)
	<-stopped
	// What was received but not delivered (a Sink error, a batch
	// abandoned at shutdown) must not be skipped by the next Run.
	in.handled = handled
	if herr != nil {
		return herr
	}
	return err
}

// receive is the first stage of consume. It returns nil when ctx is done
// or the handler stopped, and errGap or a fetch error otherwise; it hands
// over what it collected before returning.
func (in *Ingester) receive(ctx context.Context, cons jetstream.Consumer, work chan<- *batch, stopped <-chan struct{}) error {
	taken := in.handled // highest stream sequence put into a batch
	cur := in.newBatch(0)
	// give hands cur to the handler, waiting until it takes it.
	give := func() {
		if cur.n == 0 {
			return
		}
		select {
		case work <- cur:
			cur = in.newBatch(len(cur.good))
		case <-stopped:
		}
	}
	var pull jetstream.MessageBatch
	var msgs <-chan jetstream.Msg
	// A pull request ends at BatchSize messages or when the server expires
	// it (FetchWait); wait for that so no goroutine outlives Run. Messages
	// drained here are neither handled nor acknowledged.
	defer func() {
		if msgs != nil {
			for range msgs {
			}
		}
	}()
	for {
		if ctx.Err() != nil {
			give()
			return nil
		}
		if msgs == nil {
			p, err := cons.Fetch(in.cfg.BatchSize, jetstream.FetchMaxWait(in.cfg.FetchWait))
			if err != nil {
				give()
				return fmt.Errorf("fetch: %w", err)
			}
			pull, msgs = p, p.Messages()
		}
		recv := msgs
		if cur.n >= in.cfg.BatchSize {
			recv = nil // full: wait for the handler
		}
		var out chan<- *batch
		if cur.n > 0 {
			out = work
		}
		select {
		case m, ok := <-recv:
			if !ok {
				msgs = nil
				if err := pull.Error(); err != nil && ctx.Err() == nil {
					give()
					return fmt.Errorf("fetch: %w", err)
				}
				in.lastOK.Store(time.Now().UnixNano())
				continue
			}
			pos, err := positionOf(m)
			if err != nil {
				in.log.Error("ingest: message without JetStream metadata; skipped", "subject", m.Subject(), "err", err)
				continue
			}
			if in.lastCSeq != 0 && pos.consumer != in.lastCSeq+1 {
				give()
				return errGap
			}
			in.lastCSeq = pos.consumer
			cur.n++
			if pos.stream > cur.lastSeq {
				cur.last, cur.lastSeq = m, pos.stream
			}
			if pos.stream <= taken {
				in.redeliv.Add(1)
				continue
			}
			taken = pos.stream
			rec, rerr := in.check(m, pos)
			if rerr != nil {
				cur.dead = append(cur.dead, in.deadLetter(m, pos.stream, rerr))
				continue
			}
			cur.good = append(cur.good, Message{Seq: pos.stream, Subject: m.Subject(), Record: rec, Received: pos.time()})
		case out <- cur:
			cur = in.newBatch(len(cur.good))
		case <-stopped:
			return nil
		case <-ctx.Done():
			give()
			return nil
		}
	}
}

// newBatch returns an empty batch with room for about as many messages as
// the previous one had: the Sink keeps each batch's slice, so it cannot be
// reused, and a slice of BatchSize for every batch would cost a light load
// far more than it needs.
func (in *Ingester) newBatch(prev int) *batch {
	return &batch{good: make([]Message, 0, min(max(prev, 16), in.cfg.BatchSize))}
}

type deliverError struct{ err error }

func (e *deliverError) Error() string { return "ingest: deliver: " + e.err.Error() }
func (e *deliverError) Unwrap() error { return e.err }

// handle is the second stage of consume: it delivers the good messages of
// a batch, waits for its dead letters and acknowledges it.
func (in *Ingester) handle(ctx context.Context, b *batch) error {
	if len(b.good) > 0 {
		if err := in.sink.Deliver(ctx, b.good); err != nil {
			return &deliverError{err}
		}
	}
	in.awaitDeadLetters(ctx, b.dead)
	faults.At(faults.BeforeAck)
	in.accepted.Add(uint64(len(b.good)))
	in.batches.Add(1)
	for _, d := range b.dead {
		in.rejected[in.reasons[d.reason]].Add(1)
	}
	if err := b.last.DoubleAck(ctx); err != nil {
		// The batch was handled; if the ack is lost it is delivered again
		// and skipped as already handled (or, after a restart, handed over
		// again: at least once across a crash).
		in.log.Warn("ingest: ack failed", "seq", b.lastSeq, "err", err)
	}
	return nil
}

// check validates one message against its transport context and decodes it.
func (in *Ingester) check(m jetstream.Msg, pos position) (telemetry.Record, *telemetry.Error) {
	data := m.Data()
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
	if token := subjectRollout(m.Subject(), in.cfg.SubjectPrefix); token != rec.Rollout {
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonSubjectMismatch,
			Err: fmt.Errorf("rollout %q published on subject %s", rec.Rollout, m.Subject())}
	}
	if !in.sink.Known(rec.Rollout) {
		return telemetry.Record{}, &telemetry.Error{Reason: telemetry.ReasonUnknownRollout,
			Err: fmt.Errorf("no rollout %q", rec.Rollout)}
	}
	if rec.Time.IsZero() {
		rec.Time = pos.time().UTC()
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
