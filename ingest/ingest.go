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

	"github.com/nats-io/nats.go"
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
	// Route is what Sink.Rollout returned for Record.Rollout besides the
	// id: the Sink's own handle of the rollout, so that Deliver need not
	// look the id up again.
	Route any
}

// Sink takes accepted messages. The engine implements it.
type Sink interface {
	// Rollout reports whether a rollout exists and returns the Sink's own
	// copy of its id, which delivered Records keep as their Rollout:
	// rollout aliases the message, and one copy shared by all of a
	// rollout's Records costs no allocation. route, which may be nil, is
	// passed back to Deliver as the Messages' Route. Messages of unknown
	// rollouts are dead-lettered. It is called for every message and must
	// be cheap.
	Rollout(rollout string) (id string, route any, ok bool)
	// Deliver hands over msgs, in stream order, and returns once every
	// rollout owner has taken them; only then are they acknowledged. After
	// it returns nil, ingest reuses msgs' memory for a later batch (a Sink
	// that keeps messages copies them); after an error the Sink keeps
	// msgs, which its owners may still be applying. An error stops Run,
	// and the messages are delivered again to the next Run. ctx is done
	// when the batch must be abandoned, which is DrainTimeout after
	// shutdown was requested.
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
	handled  uint64            // highest stream sequence handed over or dead-lettered (after consume returns)
	dec      telemetry.Decoder // used by consume's handler only, one at a time
	spare    []Message         // the handler's last delivered batch, to reuse
	lastCSeq uint64            // consumer sequence of the last message received; 0 after a (re)start
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
	in.dec.SharedRollout = true // check replaces it with the Sink's copy
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

// Run consumes telemetry until ctx is done, then finishes the batches in
// hand (for at most DrainTimeout) and returns nil. It returns an error when the
// Sink fails; it retries setting up the consumer (with backoff up to 5s)
// until it succeeds or ctx is done.
//
// Acknowledgement. The consumer uses AckAll: after a batch was delivered
// and its dead letters were stored, the message with the highest stream
// sequence is acknowledged, which acknowledges every earlier one. That is
// one ack per batch instead of one per message (about 2.5x the throughput
// of explicit acks), and it is safe because there is one reader that
// handles messages in stream order, so everything below the acknowledged
// message has been handled. The ack is sent without waiting for the
// server's reply (see consume for how receiving, delivering and acking
// overlap). Two things could break that, and Run guards against both:
//
//   - Messages delivered to a previous process but never handled: on start,
//     if the consumer has pending acks, Run resets it to its ack floor + 1,
//     so they are delivered again, first and in order, instead of after
//     AckWait and after newer messages an AckAll would cover.
//   - Deliveries lost in flight (pull requests abandoned by the client, a
//     reconnect, a full subscription channel): the consumer sequence of each delivery must follow the
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
	_, err := in.consumer(ctx)
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
		_, err = in.consumer(ctx)
	}
	backoff = 50 * time.Millisecond
	for ctx.Err() == nil {
		ok := in.lastOK.Load()
		err := in.consume(ctx)
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
		_, _ = in.consumer(ctx) // if it fails, the next pull fails too and comes back here
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

// batch is a run of consecutive deliveries, checked by the receiver, to be
// decoded, handed over and acknowledged together by the handler.
type batch struct {
	raw       []delivery // to decode: the deliveries not handled before, in stream order
	good      []Message  // set by decode
	dead      []deadLetter
	n         int    // deliveries, redeliveries of handled messages included
	lastReply string // reply subject of the delivery with the highest stream sequence: its AckAll covers the batch
	lastSeq   uint64
}

// delivery is a message received and checked, not yet decoded.
type delivery struct {
	m   *nats.Msg
	pos position
}

// consume runs ingest as a pipeline of two goroutines until ctx is done or
// something fails:
//
//   - this one receives: it keeps pull requests outstanding (puller),
//     checks the consumer sequence of every delivery, skips redeliveries
//     of handled messages, and collects batches;
//   - a handler decodes and validates each batch, starts its dead letters,
//     delivers it to the Sink, waits for its dead letters and
//     acknowledges it.
//
// So receiving overlaps with decoding, with the owners applying the
// previous batch and with the ack, instead of taking turns with them: the
// receiver, which keeps the pull requests filled, does as little per
// message as it can. Decoding in the handler keeps stream order, so dead
// letters start and batches are acknowledged in the same order as before. The receiver
// takes whatever has arrived, up to BatchSize, and hands the batch over as
// soon as nothing more is waiting and the handler is free, or once it is
// full (then receiving waits: at most two batches are in hand). A trickle
// of events is therefore handed over at once, and a flood makes full
// batches. Batches go through one unbuffered channel and the handler takes
// them one at a time, so they are delivered and acknowledged in stream
// order, each ack after its own and every earlier batch were applied:
// what AckAll needs.
func (in *Ingester) consume(ctx context.Context) error {
	pl, err := newPuller(in.js, in.cfg)
	if err != nil {
		return err
	}
	gctx, cancel := graceful(ctx, in.cfg.DrainTimeout)
	defer cancel()
	work := make(chan *batch)
	stopped := make(chan struct{})
	// free returns decoded batches' raw slices to the receiver for reuse.
	free := make(chan []delivery, 2)
	handled := in.handled
	var herr error
	go func() {
		defer close(stopped)
		for b := range work {
			if herr = in.handle(gctx, pl.nc, b); herr != nil {
				return // the receiver sees stopped
			}
			handled = max(handled, b.lastSeq)
			select {
			case free <- b.raw[:0]:
			default:
			}
		}
	}()
	err = in.receive(ctx, pl, work, stopped, free)
	close(work)
	<-stopped
	// A request expires FetchWait after it was sent, and the last was sent
	// at most then; unanswered requests are lost already.
	wait := 2*in.cfg.FetchWait + time.Second
	if errors.Is(err, errUnanswered) {
		wait = 0
	}
	pl.close(wait)
	// What was received but not delivered (a Sink error, a batch
	// abandoned at shutdown) must not be skipped by the next Run.
	in.handled = handled
	if herr != nil {
		return herr
	}
	return err
}

// receive is the first stage of consume. It returns nil when ctx is done
// or the handler stopped, and errGap or a pull error otherwise; it hands
// over what it collected before returning.
func (in *Ingester) receive(ctx context.Context, pl *puller, work chan<- *batch, stopped <-chan struct{}, free <-chan []delivery) error {
	taken := in.handled // highest stream sequence put into a batch
	newBatch := func() *batch {
		select {
		case raw := <-free:
			return &batch{raw: raw}
		default:
			return &batch{raw: make([]delivery, 0, in.cfg.BatchSize)}
		}
	}
	cur := newBatch()
	// give hands cur to the handler, waiting until it takes it.
	give := func() {
		if cur.n == 0 {
			return
		}
		select {
		case work <- cur:
			cur = newBatch()
		case <-stopped:
		}
	}
	// next handles one message from the subscription: a delivery or a
	// status.
	take := func(m *nats.Msg) error { return in.take(cur, m, &taken) }
	next := func(m *nats.Msg) error {
		answered, err := pl.next(m, take)
		if answered {
			// The server is there and telemetry is being read.
			in.lastOK.Store(time.Now().UnixNano())
		}
		return err
	}
	// Silence for `unanswered` FetchWaits while waiting for deliveries
	// means the requests are lost: the server expires each after one.
	tick := time.NewTicker(in.cfg.FetchWait)
	defer tick.Stop()
	heard, silent := false, 0
	for {
		if ctx.Err() != nil {
			give()
			return nil
		}
		// Take what has arrived, up to a full batch, without blocking: a
		// non-blocking receive costs much less than the select below, and
		// batches are larger (fewer acks and hand-overs) under load.
	drain:
		for cur.n < in.cfg.BatchSize {
			select {
			case m := <-pl.msgs:
				heard = true
				if err := next(m); err != nil {
					give()
					return err
				}
			default:
				break drain
			}
		}
		// Nothing more has arrived, or the batch is full: hand the batch
		// over as soon as the handler is free, or take the next message.
		recv, ticks := pl.msgs, tick.C
		if cur.n >= in.cfg.BatchSize {
			recv, ticks = nil, nil // full: wait for the handler
			heard = true           // and do not count this wait as silence
		}
		var out chan<- *batch
		if cur.n > 0 {
			out = work
		}
		select {
		case m := <-recv:
			heard = true
			if err := next(m); err != nil {
				give()
				return err
			}
		case <-ticks:
			if heard {
				heard, silent = false, 0
			} else if silent++; silent >= unanswered {
				give()
				return errUnanswered
			}
		case out <- cur:
			cur = newBatch()
			heard = true
		case <-stopped:
			return nil
		case <-ctx.Done():
			give()
			return nil
		}
	}
}

// take checks the delivery m and adds it to b. taken is the
// highest stream sequence put into a batch; a redelivery at or below it is
// counted and skipped. It returns errGap when a delivery is missing.
func (in *Ingester) take(b *batch, m *nats.Msg, taken *uint64) error {
	pos, err := positionOf(m)
	if err != nil {
		in.log.Error("ingest: message without JetStream metadata; skipped", "subject", m.Subject, "err", err)
		return nil
	}
	if in.lastCSeq != 0 && pos.consumer != in.lastCSeq+1 {
		return errGap
	}
	in.lastCSeq = pos.consumer
	b.n++
	if pos.stream > b.lastSeq {
		b.lastReply, b.lastSeq = m.Reply, pos.stream
	}
	if pos.stream <= *taken {
		in.redeliv.Add(1)
		return nil
	}
	*taken = pos.stream
	b.raw = append(b.raw, delivery{m, pos})
	return nil
}

// decode decodes and validates b's deliveries, in order, into its good
// messages and its dead letters, whose publishing it starts. The good
// messages go into the slice of the last batch the Sink took without an
// error (a Message is about 200 bytes, allocated and collected per event
// otherwise).
func (in *Ingester) decode(b *batch) {
	if len(b.raw) == 0 {
		return
	}
	if cap(in.spare) >= len(b.raw) {
		b.good, in.spare = in.spare[:0], nil
	} else {
		b.good = make([]Message, 0, len(b.raw))
	}
	for i := range b.raw {
		d := &b.raw[i]
		rec, route, rerr := in.check(d.m, d.pos)
		if rerr != nil {
			b.dead = append(b.dead, in.deadLetter(d.m, d.pos.stream, rerr))
		} else {
			b.good = append(b.good, Message{Seq: d.pos.stream, Subject: d.m.Subject, Record: rec, Received: d.pos.time(), Route: route})
		}
		*d = delivery{} // the slice is reused: keep no message alive
	}
}

type deliverError struct{ err error }

func (e *deliverError) Error() string { return "ingest: deliver: " + e.err.Error() }
func (e *deliverError) Unwrap() error { return e.err }

// handle is the second stage of consume: it decodes a batch, delivers its
// good messages, waits for its dead letters and acknowledges it on nc.
func (in *Ingester) handle(ctx context.Context, nc *nats.Conn, b *batch) error {
	in.decode(b)
	if len(b.good) > 0 {
		if err := in.sink.Deliver(ctx, b.good); err != nil {
			return &deliverError{err} // the Sink keeps b.good
		}
	}
	if cap(b.good) > cap(in.spare) {
		in.spare = b.good
	}
	in.awaitDeadLetters(ctx, b.dead)
	faults.At(faults.BeforeAck)
	in.accepted.Add(uint64(len(b.good)))
	in.batches.Add(1)
	for _, d := range b.dead {
		in.rejected[in.reasons[d.reason]].Add(1)
	}
	// The ack is sent without waiting for the server's reply: the batch
	// was handled, and an ack that is lost only means redelivery, of
	// messages skipped as already handled (or, after a restart, replayed
	// from the checkpoints anyway). Acks leave on the one connection in
	// the order of the batches, so the server applies them in stream order.
	if err := ack(nc, b.lastReply); err != nil {
		in.log.Warn("ingest: ack failed", "seq", b.lastSeq, "err", err)
	}
	return nil
}

// check validates one message against its transport context and decodes
// it, and returns the Sink's route of its rollout. Only consume's handler
// calls it (it uses in.dec).
func (in *Ingester) check(m *nats.Msg, pos position) (telemetry.Record, any, *telemetry.Error) {
	data := m.Data
	if len(data) > int(in.cfg.MaxMsgSize) {
		return telemetry.Record{}, nil, &telemetry.Error{Reason: telemetry.ReasonTooLarge,
			Err: fmt.Errorf("message of %d bytes exceeds the limit of %d", len(data), in.cfg.MaxMsgSize)}
	}
	rec, err := in.dec.Decode(data)
	if err != nil {
		var te *telemetry.Error
		if errors.As(err, &te) {
			return telemetry.Record{}, nil, te
		}
		return telemetry.Record{}, nil, &telemetry.Error{Reason: telemetry.ReasonBadJSON, Err: err}
	}
	if token := subjectRollout(m.Subject, in.cfg.SubjectPrefix); token != rec.Rollout {
		return telemetry.Record{}, nil, &telemetry.Error{Reason: telemetry.ReasonSubjectMismatch,
			Err: fmt.Errorf("rollout %q published on subject %s", rec.Rollout, m.Subject)}
	}
	id, route, ok := in.sink.Rollout(rec.Rollout) // rec.Rollout aliases data until here
	if !ok {
		return telemetry.Record{}, nil, &telemetry.Error{Reason: telemetry.ReasonUnknownRollout,
			Err: fmt.Errorf("no rollout %q", rec.Rollout)}
	}
	rec.Rollout = id
	if rec.Time.IsZero() {
		rec.Time = pos.time().UTC()
	}
	return rec, route, nil
}

// subjectRollout returns the rollout token of <prefix>.<rollout>, or "" when
// the subject has another shape.
func subjectRollout(subject, prefix string) string {
	// Not CutPrefix(subject, prefix+"."): that concatenates per event.
	if len(subject) <= len(prefix) || subject[len(prefix)] != '.' || subject[:len(prefix)] != prefix {
		return ""
	}
	rest := subject[len(prefix)+1:]
	if strings.Contains(rest, ".") {
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
