package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// streamMsg is a telemetry message read back from the stream.
type streamMsg struct {
	id  string // Nats-Msg-Id
	rec telemetry.Record
}

// readEvents returns every message of the telemetry stream, decoded.
func readEvents(t testing.TB, js jetstream.JetStream) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "VERDICT_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		rec, err := telemetry.Decode(m.Data)
		if err != nil {
			t.Fatalf("Decode(%s) = %v", m.Data, err)
		}
		out = append(out, streamMsg{id: m.Header.Get(jetstream.MsgIDHeader), rec: rec})
	}
	return out
}

// tally counts requests and errors per variant, from single events and
// batches alike.
type tally struct{ requests, errors [2]int64 }

func tallyOf(msgs []streamMsg) tally {
	var c tally
	for _, m := range msgs {
		v := m.rec.Variant
		if b := m.rec.Batch; b != nil {
			c.requests[v] += b.Requests
			c.errors[v] += b.Errors
			continue
		}
		c.requests[v]++
		if m.rec.Single.Error {
			c.errors[v]++
		}
	}
	return c
}

func closeEmitter(t testing.TB, e *Emitter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

func TestEmitterSingleEvents(t *testing.T) {
	n := newTestNATS(t)
	e, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const total = 300
	for i := range total {
		ev := Event{Rollout: "co", Variant: Variant(i % 2), Unit: fmt.Sprint("user-", i), Time: t0,
			Latency: time.Duration(i+1) * time.Millisecond, Failed: i%10 == 1}
		if !e.Emit(ev) {
			t.Fatalf("Emit(%d) dropped", i)
		}
	}
	closeEmitter(t, e)
	if s := e.Stats(); s.Queued != total || s.Published != total || s.Emitted != total || s.Errors != 0 || s.Dropped != 0 {
		t.Fatalf("Stats() = %+v, want %d queued, published and emitted", s, total)
	}
	msgs := readEvents(t, n.js)
	if len(msgs) != total {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), total)
	}
	ids := map[string]bool{}
	for i, m := range msgs {
		if m.id == "" || m.id != m.rec.ID || ids[m.id] {
			t.Fatalf("message %d: Nats-Msg-Id %q, event id %q: want equal, non-empty and unique", i, m.id, m.rec.ID)
		}
		ids[m.id] = true
		want := analyzer.Observation{Variant: analyzer.Variant(i % 2), HasLatency: true, HasOutcome: true,
			Error: i%10 == 1, LatencyMs: float64(i + 1), Unit: telemetry.UnitHash(fmt.Sprint("user-", i))}
		if m.rec.Rollout != "co" || !m.rec.Time.Equal(t0) || m.rec.Unit != fmt.Sprint("user-", i) ||
			m.rec.Single.Variant != want.Variant || m.rec.Single.Error != want.Error ||
			m.rec.Single.LatencyMs != want.LatencyMs || m.rec.Single.Unit != want.Unit {
			t.Fatalf("message %d = %+v, want %+v", i, m.rec, want)
		}
	}
	if got := tallyOf(msgs); got.errors != [2]int64{0, 30} {
		t.Fatalf("errors per variant = %v, want [0 30]", got.errors)
	}
}

func TestEmitterBatchesAndCloseFlushes(t *testing.T) {
	n := newTestNATS(t)
	// The interval is far away: only the size and Close flush.
	e, err := NewEmitter(n.nc, EmitterOptions{Batch: 10, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		e.Emit(Event{Rollout: "co", Variant: Baseline, Latency: 5 * time.Millisecond, Failed: i < 3})
	}
	for range 4 {
		e.Emit(Event{Rollout: "co", Variant: Canary, Latency: 7 * time.Millisecond})
	}
	closeEmitter(t, e)
	msgs := readEvents(t, n.js)
	// baseline: 10 + 10 + 5 (flushed by Close); canary: 4 (flushed by Close).
	if len(msgs) != 4 {
		t.Fatalf("stream holds %d messages, want 4 batches", len(msgs))
	}
	for _, m := range msgs {
		if m.rec.Batch == nil || m.id != m.rec.ID {
			t.Fatalf("message %+v: want a batch whose id is its Nats-Msg-Id %q", m.rec, m.id)
		}
	}
	got := tallyOf(msgs)
	if want := (tally{requests: [2]int64{25, 4}, errors: [2]int64{3, 0}}); got != want {
		t.Fatalf("batches carry %+v, want %+v", got, want)
	}
	if s := e.Stats(); s.Queued != 29 || s.Emitted != 4 {
		t.Fatalf("Stats() = %+v, want 29 queued, 4 emitted", s)
	}
}

func TestEmitterBatchInterval(t *testing.T) {
	n := newTestNATS(t)
	e, err := NewEmitter(n.nc, EmitterOptions{Batch: 1000, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer closeEmitter(t, e)
	e.Emit(Event{Rollout: "co", Variant: Canary, Latency: time.Millisecond})
	eventually(t, "a partial batch flushed by the interval", func() bool { return e.Stats().Emitted == 1 })
}

func TestEmitterDropsWhenFullWithoutBlocking(t *testing.T) {
	n := newTestNATS(t)
	// No stream listens on this prefix: every publish waits for retries,
	// and one publish in flight at a time keeps the goroutine stalled.
	e, err := NewEmitter(n.nc, EmitterOptions{SubjectPrefix: "nowhere.", QueueSize: 4, MaxPending: 1, AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const total = 10000
	start := time.Now()
	for range total {
		e.Emit(Event{Rollout: "co", Variant: Canary, Latency: time.Millisecond})
	}
	// 10,000 non-blocking sends take about a millisecond; blocking ones
	// would wait for the stalled publisher (200ms per stall) thousands of
	// times. The bound is loose for loaded CI machines.
	if d := time.Since(start); d > time.Second {
		t.Errorf("%d Emit calls took %v: the request path blocked", total, d)
	}
	s := e.Stats()
	if s.Queued+s.Dropped != total || s.Dropped < total/2 {
		t.Fatalf("Stats() = %+v, want queued+dropped = %d and most dropped", s, total)
	}
	// Close gives up when its context ends, dropping what is left; the
	// goroutine has ended (goleak checks) and later Emits are dropped.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.Close(ctx); err == nil {
		t.Error("Close with nowhere to publish = nil, want a timeout")
	}
	if e.Emit(Event{Rollout: "co", Variant: Canary}) {
		t.Error("Emit after Close accepted the event")
	}
	n.nc.Close() // fails the pending publishes, so the client's goroutines end
}

func TestEmitterRejectsBadRollout(t *testing.T) {
	n := newTestNATS(t)
	e, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeEmitter(t, e)
	if e.Emit(Event{Rollout: "no.dots", Variant: Canary}) {
		t.Fatal("Emit with rollout no.dots accepted")
	}
	if got := e.Stats().Dropped; got != 1 {
		t.Fatalf("Dropped = %d, want 1", got)
	}
}

func TestEmitterValuesAndBadVariant(t *testing.T) {
	n := newTestNATS(t)
	e, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Emit(Event{Rollout: "co", Variant: Variant(7)}) {
		t.Error("Emit with Variant(7) accepted")
	}
	// Values ingest would reject are left out, not the whole event.
	e.Emit(Event{Rollout: "co", Variant: Canary, Latency: -1,
		Values: map[string]float64{"cpu_ms": 3, "zero": 0, "bad name": 1}})
	closeEmitter(t, e)
	msgs := readEvents(t, n.js)
	if len(msgs) != 1 {
		t.Fatalf("stream holds %d messages, want 1", len(msgs))
	}
	rec := msgs[0].rec
	if len(rec.Values) != 1 || rec.Values[0] != (telemetry.Value{Name: "cpu_ms", Value: 3}) || rec.Single.HasLatency {
		t.Fatalf("event = %+v, want only value cpu_ms=3 and no latency", rec)
	}
	if got := e.Stats().Dropped; got != 1 {
		t.Fatalf("Dropped = %d, want 1", got)
	}
}
