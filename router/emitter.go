package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// DefaultSubjectPrefix is the telemetry subject prefix: events of rollout
// R are published on DefaultSubjectPrefix + R.
const DefaultSubjectPrefix = "verdict.events."

// EmitterOptions configures an Emitter. The zero value is usable: single
// events, a queue of 8192 requests, 512 publishes in flight.
type EmitterOptions struct {
	// SubjectPrefix is prepended to the rollout id to form the subject;
	// DefaultSubjectPrefix when empty.
	SubjectPrefix string
	// QueueSize bounds the requests waiting to be published; 8192 when
	// zero. When the queue is full, Emit drops the request and counts it.
	QueueSize int
	// Batch, when above 1, publishes the batch form: one message per Batch
	// requests of a rollout and variant, and at least every Interval.
	// When 0 or 1, every request is one event.
	Batch int
	// Interval is the longest a request waits in a partial batch; 1s when
	// zero. Unused for single events.
	Interval time.Duration
	// MaxPending bounds the publishes awaiting their ack; 512 when zero.
	MaxPending int
	// AckTimeout fails a publish whose ack has not arrived after this
	// long; 10s when zero.
	AckTimeout time.Duration
	// Now is the clock for event and batch times; time.Now when nil.
	Now func() time.Time
	// Logger receives publish errors; discarded when nil.
	Logger *slog.Logger
}

// Event is one request as a router saw it.
type Event struct {
	Rollout string
	Variant Variant
	// Unit is the user or session id; empty when unknown. Units longer
	// than telemetry.MaxIDLen or not valid UTF-8 are not sent.
	Unit string
	// Time is when the request started; the Emitter's clock when zero.
	Time time.Time
	// Latency is the request's duration; negative when unknown.
	Latency time.Duration
	// Failed is the outcome: a 5xx status or a transport error.
	Failed bool
	// Values are optional custom values (positive, finite), by name.
	Values map[string]float64
}

// Stats are an Emitter's counters. Requests are counted when emitted;
// messages (single events or batches) when published.
type Stats struct {
	Queued     uint64 // requests accepted into the queue
	Dropped    uint64 // requests dropped: queue full, bad rollout id, or emitted after Close
	Overridden uint64 // requests with a forced version, kept out of the analysis
	Published  uint64 // messages handed to the NATS client
	Emitted    uint64 // messages acknowledged by the stream
	Duplicates uint64 // of Emitted, acknowledged as duplicates (same Nats-Msg-Id)
	Errors     uint64 // messages that failed: encoding, publish, error ack, ack timeout, disconnect
}

// Emitter publishes telemetry to JetStream without ever blocking its
// callers. Emit puts a request on a bounded queue; one goroutine, started
// by NewEmitter and ended by Close, encodes (telemetry.Append, single or
// batch form) and publishes asynchronously with a unique Nats-Msg-Id per
// message (a random per-process prefix and a counter), which is also the
// event's id.
//
// Emit, Override and Stats are safe for concurrent use.
type Emitter struct {
	js       jetstream.JetStream
	prefix   string
	batch    int
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger

	queue     chan Event
	quit      chan struct{} // closed by Close: drain and flush
	abort     chan struct{} // closed by Close when its ctx ends: stop publishing
	done      chan struct{} // closed when the goroutine has returned
	closeOnce sync.Once
	abortMu   sync.Once
	closed    atomic.Bool

	idPrefix string
	idSeq    uint64 // owned by the goroutine
	builders map[batchKey]*telemetry.Builder
	buf      []byte
	vals     []telemetry.Value // reused for Record.Values

	queued, dropped, overridden, published, emitted, duplicates, errs atomic.Uint64
}

type batchKey struct {
	rollout string
	variant Variant
}

// NewEmitter returns an Emitter publishing on nc and starts its goroutine;
// call Close to flush and stop it. It uses its own JetStream context, so
// its acks and counters are its own. (That context's ack machinery, inside
// the NATS client, lives until nc is closed.)
func NewEmitter(nc *nats.Conn, opts EmitterOptions) (*Emitter, error) {
	e := &Emitter{
		prefix:   opts.SubjectPrefix,
		batch:    opts.Batch,
		interval: opts.Interval,
		now:      opts.Now,
		log:      opts.Logger,
		quit:     make(chan struct{}),
		abort:    make(chan struct{}),
		done:     make(chan struct{}),
		builders: make(map[batchKey]*telemetry.Builder),
	}
	if e.prefix == "" {
		e.prefix = DefaultSubjectPrefix
	}
	if e.interval <= 0 {
		e.interval = time.Second
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	size, pending, timeout := opts.QueueSize, opts.MaxPending, opts.AckTimeout
	if size <= 0 {
		size = 8192
	}
	if pending <= 0 {
		pending = 512
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	e.queue = make(chan Event, size)
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("router: id prefix: %w", err)
	}
	e.idPrefix = hex.EncodeToString(rnd[:]) + "-"
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(pending),
		jetstream.WithPublishAsyncTimeout(timeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, _ *nats.Msg, ack *jetstream.PubAck) {
			e.emitted.Add(1)
			if ack.Duplicate {
				e.duplicates.Add(1)
			}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			e.errs.Add(1)
			e.log.Warn("telemetry publish failed", "subject", m.Subject, "id", m.Header.Get(jetstream.MsgIDHeader), "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("router: jetstream: %w", err)
	}
	e.js = js
	go e.run()
	return e, nil
}

// Emit queues one request for publishing and reports whether it was
// accepted. It never blocks: when the queue is full, the rollout id or the
// variant is invalid, or Close has been called, the request is dropped and
// counted.
func (e *Emitter) Emit(ev Event) bool {
	if e.closed.Load() || ev.Variant > Canary || !telemetry.ValidRollout(ev.Rollout) {
		e.dropped.Add(1)
		return false
	}
	select {
	case e.queue <- ev:
		e.queued.Add(1)
		return true
	default:
		e.dropped.Add(1)
		return false
	}
}

// Override counts a request whose version was forced (an override header):
// such requests are kept out of the analysis and only counted here.
func (e *Emitter) Override() { e.overridden.Add(1) }

// Stats returns the Emitter's counters.
func (e *Emitter) Stats() Stats {
	return Stats{
		Queued:     e.queued.Load(),
		Dropped:    e.dropped.Load(),
		Overridden: e.overridden.Load(),
		Published:  e.published.Load(),
		Emitted:    e.emitted.Load(),
		Duplicates: e.duplicates.Load(),
		Errors:     e.errs.Load(),
	}
}

// Close stops accepting requests, publishes those queued and any partial
// batches, and waits for their acks, all within ctx. When ctx ends first,
// the requests not yet published are dropped (and counted) and Close
// returns ctx's error; the goroutine has ended either way. Close is
// idempotent.
func (e *Emitter) Close(ctx context.Context) error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		close(e.quit)
	})
	select {
	case <-e.done:
	case <-ctx.Done():
		e.abortOnce()
		<-e.done
		e.dropQueued()
		return fmt.Errorf("router: emitter close: %w", ctx.Err())
	}
	e.dropQueued()
	select {
	case <-e.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("router: emitter close: %d publishes unacknowledged: %w", e.js.PublishAsyncPending(), ctx.Err())
	}
}

// dropQueued counts as dropped what Emit calls racing with Close queued
// after the goroutine's last look at the queue.
func (e *Emitter) dropQueued() {
	for {
		select {
		case <-e.queue:
			e.dropped.Add(1)
		default:
			return
		}
	}
}

func (e *Emitter) abortOnce() { e.abortMu.Do(func() { close(e.abort) }) }

// run is the Emitter's goroutine: the only owner of builders, buf and idSeq.
func (e *Emitter) run() {
	defer close(e.done)
	var tick <-chan time.Time
	if e.batch > 1 {
		t := time.NewTicker(e.interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev := <-e.queue:
			e.handle(ev)
		case <-tick:
			e.flush()
		case <-e.quit:
			e.drain()
			e.flush()
			return
		}
	}
}

// drain handles what is left in the queue after Close.
func (e *Emitter) drain() {
	for {
		select {
		case ev := <-e.queue:
			e.handle(ev)
		default:
			return
		}
	}
}

func (e *Emitter) aborted() bool {
	select {
	case <-e.abort:
		return true
	default:
		return false
	}
}

// handle publishes one request, or adds it to its batch.
func (e *Emitter) handle(ev Event) {
	if e.aborted() {
		e.dropped.Add(1)
		return
	}
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	ms := -1.0
	if ev.Latency >= 0 {
		ms = min(max(float64(ev.Latency)/float64(time.Millisecond), telemetry.MinLatencyMs), telemetry.MaxLatencyMs)
	}
	if e.batch <= 1 {
		unit := ev.Unit
		if len(unit) > telemetry.MaxIDLen || !utf8.ValidString(unit) {
			unit = ""
		}
		rec := telemetry.Record{
			Rollout: ev.Rollout,
			Variant: analyzer.Variant(ev.Variant),
			Time:    ev.Time.UTC(),
			Unit:    unit,
			Values:  e.validValues(ev.Values),
			Single: analyzer.Observation{
				Variant:    analyzer.Variant(ev.Variant),
				HasOutcome: true,
				Error:      ev.Failed,
				HasLatency: ms >= 0,
				LatencyMs:  max(ms, 0),
			},
		}
		e.publish(&rec)
		return
	}
	k := batchKey{ev.Rollout, ev.Variant}
	b := e.builders[k]
	if b == nil {
		b = telemetry.NewBuilder(ev.Rollout, analyzer.Variant(ev.Variant))
		e.builders[k] = b
	}
	if ms >= 0 {
		b.Add(ms, ev.Failed)
	} else {
		b.AddOutcome(ev.Failed)
	}
	for name, v := range ev.Values {
		b.AddValue(name, v)
	}
	if b.Count() >= int64(e.batch) {
		e.publishBatch(b)
	}
}

// flush publishes every partial batch.
func (e *Emitter) flush() {
	for _, b := range e.builders {
		if b.Count() > 0 {
			if e.aborted() {
				e.dropped.Add(uint64(b.Count()))
				b.Reset()
				continue
			}
			e.publishBatch(b)
		}
	}
}

func (e *Emitter) publishBatch(b *telemetry.Builder) {
	rec := b.Record("", e.now())
	b.Reset()
	e.publish(&rec)
}

// publish encodes rec with a fresh id and publishes it asynchronously.
func (e *Emitter) publish(rec *telemetry.Record) {
	e.idSeq++
	rec.ID = e.idPrefix + strconv.FormatUint(e.idSeq, 10)
	var err error
	e.buf, err = telemetry.Append(e.buf[:0], rec)
	if err != nil {
		e.errs.Add(1)
		e.log.Warn("telemetry encode failed", "rollout", rec.Rollout, "err", err)
		return
	}
	// The client keeps the message until it is acked (for retries), so the
	// payload must not share e.buf.
	msg := &nats.Msg{Subject: e.prefix + rec.Rollout, Data: append([]byte(nil), e.buf...), Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, rec.ID)
	if _, err := e.js.PublishMsgAsync(msg); err != nil {
		e.errs.Add(1)
		e.log.Warn("telemetry publish failed", "subject", msg.Subject, "id", rec.ID, "err", err)
		return
	}
	e.published.Add(1)
}

// validValues returns vs as a telemetry.Record's values, sorted by name,
// without the values the wire format would reject (which would make ingest
// reject the whole event): names not matching [A-Za-z0-9_.-]{1,64}, values
// not in (0, MaxValue], beyond MaxValues. The slice is e.vals, reused by
// the next event: publish encodes it before then.
func (e *Emitter) validValues(vs map[string]float64) []telemetry.Value {
	if len(vs) == 0 {
		return nil
	}
	ok := func(name string, v float64) bool {
		if !(v > 0 && v <= telemetry.MaxValue) || len(name) == 0 || len(name) > telemetry.MaxNameLen {
			return false
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
				return false
			}
		}
		return true
	}
	out := e.vals[:0]
	for name, v := range vs {
		if ok(name, v) {
			out = append(out, telemetry.Value{Name: name, Value: v})
		}
	}
	slices.SortFunc(out, func(a, b telemetry.Value) int { return strings.Compare(a.Name, b.Name) })
	e.vals = out
	if len(out) == 0 {
		return nil
	}
	return out[:min(len(out), telemetry.MaxValues)]
}
