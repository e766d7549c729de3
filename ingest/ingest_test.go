package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/internal/natstest"
	"github.com/verdict-dev/verdict/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startJetStream runs an in-process JetStream server for the test and
// returns a client on it. Asynchronous connection errors (a denied
// permission, a slow consumer) fail the test.
func startJetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return startJetStreamWith(t, nil, func(err error) { t.Errorf("nats async error: %v", err) })
}

// startJetStreamWith lets the test adjust the server options (a nil
// function leaves them) and handle asynchronous connection errors. The
// client connects as user "engine", password "pw", when opts adds users.
func startJetStreamWith(t testing.TB, opts func(*server.Options), onErr func(error)) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	// Whether opts adds users is known only once Start has applied it,
	// which is before it connects: login looks then.
	var users bool
	login := func(c *nats.Options) error {
		if users {
			return nats.UserInfo("engine", "pw")(c)
		}
		return nil
	}
	_, nc := natstest.Start(t, func(o *server.Options) {
		if opts != nil {
			opts(o)
		}
		users = len(o.Users) > 0
	}, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { onErr(err) }), login)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// sink records deliveries. When gate is not nil, Deliver first waits on it
// (or ctx), so a test can hold a batch in hand.
type sink struct {
	known map[string]bool
	gate  chan struct{}

	mu     sync.Mutex
	msgs   []Message
	calls  int
	called chan struct{} // receives after each Deliver call starts
}

func newSink(known ...string) *sink {
	s := &sink{known: make(map[string]bool), called: make(chan struct{}, 1000)}
	for _, k := range known {
		s.known[k] = true
	}
	return s
}

// Rollout's route is the id behind "route:", so tests see it come back
// in Message.Route.
func (s *sink) Rollout(r string) (string, any, bool) {
	return strings.Clone(r), "route:" + r, s.known[r]
}

func (s *sink) Deliver(ctx context.Context, msgs []Message) error {
	s.called <- struct{}{}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.msgs = append(s.msgs, msgs...)
	return nil
}

func (s *sink) delivered() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

func testConfig() Config {
	c := DefaultConfig()
	c.FetchWait = 200 * time.Millisecond
	c.BatchSize = 64
	return c
}

// run starts in.Run and returns a function that stops it and returns its error.
func run(t testing.TB, in *Ingester) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = errors.New("Run did not return within 15s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publish(t testing.TB, js jetstream.JetStream, subject string, data []byte, opts ...jetstream.PublishOpt) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, data, opts...)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack
}

func good(rollout string, i int) []byte {
	return []byte(fmt.Sprintf(`{"rollout":%q,"variant":"canary","latency_ms":%d,"status":200,"id":"evt-%d"}`, rollout, i+1, i))
}

func setup(t testing.TB, js jetstream.JetStream, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Setup(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if err := Setup(ctx, js, cfg); err != nil { // idempotent
		t.Fatalf("second Setup: %v", err)
	}
}

func TestGoodAndBadInterleaved(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)

	bad := []struct {
		subject string
		data    []byte
		reason  telemetry.Reason
	}{
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"canary","latency_`), telemetry.ReasonBadJSON},
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"canary","status":"200"}`), telemetry.ReasonBadJSON},
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"canary","latency_ms":"NaN"}`), telemetry.ReasonBadJSON},
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"canary","latency_ms":-5}`), telemetry.ReasonBadValue},
		{"verdict.events.nope", []byte(`{"rollout":"nope","variant":"canary","status":200}`), telemetry.ReasonUnknownRollout},
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"green","status":200}`), telemetry.ReasonBadVariant},
		{"verdict.events.r1", []byte(`{"rollout":"r1","variant":"canary","status":200,"pad":"` + strings.Repeat("x", 100<<10) + `"}`), telemetry.ReasonTooLarge},
		{"verdict.events.r1", []byte("{\"rollout\":\"r1\",\"variant\":\"canary\",\"unit\":\"\xc3\x28\",\"status\":200}"), telemetry.ReasonBadEncoding},
		{"verdict.events.r2", []byte(`{"rollout":"r1","variant":"canary","status":200}`), telemetry.ReasonSubjectMismatch},
		{"verdict.events.r1", []byte(`{"variant":"canary","status":200}`), telemetry.ReasonMissingField},
		{"verdict.events.r1", []byte(`{"rollout":"r 1","variant":"canary","status":200}`), telemetry.ReasonBadRollout},
		{"verdict.events.r1.extra", []byte(`{"rollout":"r1","variant":"canary","status":200}`), telemetry.ReasonSubjectMismatch},
	}
	type want struct {
		seq    uint64
		reason telemetry.Reason
		data   []byte
		subj   string
	}
	var goodSeqs []uint64
	var wantBad []want
	n := 0
	for round := 0; round < 3; round++ {
		for _, b := range bad {
			for k := 0; k < 2; k++ {
				ack := publish(t, js, "verdict.events.r1", good("r1", n))
				goodSeqs = append(goodSeqs, ack.Sequence)
				n++
			}
			ack := publish(t, js, b.subject, b.data)
			wantBad = append(wantBad, want{ack.Sequence, b.reason, b.data, b.subject})
		}
	}
	// A batch record, too.
	bld := telemetry.NewBuilder("r2", analyzer.Baseline)
	for i := range 100 {
		bld.Add(float64(10+i), i%10 == 0)
	}
	rec := bld.Record("batch-1", time.Time{})
	data, err := telemetry.Encode(&rec)
	if err != nil {
		t.Fatal(err)
	}
	goodSeqs = append(goodSeqs, publish(t, js, "verdict.events.r2", data).Sequence)

	s := newSink("r1", "r2")
	in := New(js, cfg, s, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(in.Collectors()...)
	stop := run(t, in)
	eventually(t, "all messages handled", func() bool {
		st := in.Stats()
		var rej uint64
		for _, c := range st.Rejected {
			rej += c
		}
		return st.Accepted == uint64(len(goodSeqs)) && rej == uint64(len(wantBad))
	})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}

	got := s.delivered()
	if len(got) != len(goodSeqs) {
		t.Fatalf("delivered %d messages, want %d", len(got), len(goodSeqs))
	}
	for i, m := range got {
		if m.Seq != goodSeqs[i] {
			t.Fatalf("delivered[%d].Seq = %d, want %d (stream order)", i, m.Seq, goodSeqs[i])
		}
		if m.Record.Time.IsZero() || m.Received.IsZero() || !m.Record.Time.Equal(m.Received) {
			t.Errorf("delivered[%d]: Record.Time = %v, Received = %v; want the stream time for both", i, m.Record.Time, m.Received)
		}
		if want := "route:" + m.Record.Rollout; m.Route != want {
			t.Errorf("delivered[%d].Route = %v, want %q (what Sink.Rollout returned)", i, m.Route, want)
		}
	}
	last := got[len(got)-1]
	if last.Record.Batch == nil || last.Record.Batch.Requests != 100 || last.Record.Batch.Errors != 10 {
		t.Errorf("batch delivered as %+v", last.Record.Batch)
	}

	st := in.Stats()
	wantCounts := make(map[telemetry.Reason]uint64)
	for _, r := range telemetry.Reasons() {
		wantCounts[r] = 0
	}
	for _, b := range wantBad {
		wantCounts[b.reason]++
	}
	for r, c := range wantCounts {
		if st.Rejected[r] != c {
			t.Errorf("Stats().Rejected[%s] = %d, want %d", r, st.Rejected[r], c)
		}
		if got := gathered(t, reg, "verdict_ingest_rejected_total", string(r)); got != float64(c) {
			t.Errorf("verdict_ingest_rejected_total{reason=%q} = %v, want %d", r, got, c)
		}
	}
	if st.DeadLetterErrors != 0 {
		t.Errorf("DeadLetterErrors = %d", st.DeadLetterErrors)
	}
	if got := gathered(t, reg, "verdict_ingest_events_total", ""); got != float64(st.Accepted) {
		t.Errorf("verdict_ingest_events_total = %v, want %d", got, st.Accepted)
	}

	// The dead-letter stream holds each bad message once, with its headers.
	ctx := context.Background()
	rs, err := js.Stream(ctx, cfg.RejectedStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := rs.Info(ctx, jetstream.WithSubjectFilter(cfg.RejectedPrefix+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(wantBad)) {
		t.Errorf("rejected stream has %d messages, want %d", info.State.Msgs, len(wantBad))
	}
	for r, c := range wantCounts {
		if got := info.State.Subjects[cfg.RejectedPrefix+"."+string(r)]; got != c {
			t.Errorf("rejected stream subject %s has %d messages, want %d", r, got, c)
		}
	}
	bySeq := make(map[string]*jetstream.RawStreamMsg)
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := rs.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		bySeq[m.Header.Get(HeaderStreamSeq)] = m
	}
	for _, w := range wantBad {
		m := bySeq[strconv.FormatUint(w.seq, 10)]
		if m == nil {
			t.Errorf("no dead letter for stream seq %d (%s)", w.seq, w.reason)
			continue
		}
		if got := m.Header.Get(HeaderReason); got != string(w.reason) {
			t.Errorf("seq %d: %s = %q, want %q", w.seq, HeaderReason, got, w.reason)
		}
		if got := m.Subject; got != cfg.RejectedPrefix+"."+string(w.reason) {
			t.Errorf("seq %d: subject %q", w.seq, got)
		}
		if got := m.Header.Get(HeaderSubject); got != w.subj {
			t.Errorf("seq %d: %s = %q, want %q", w.seq, HeaderSubject, got, w.subj)
		}
		if m.Header.Get(HeaderError) == "" {
			t.Errorf("seq %d: no %s", w.seq, HeaderError)
		}
		wantData, truncated := w.data, ""
		if len(w.data) > cfg.TruncateRejected {
			wantData, truncated = w.data[:cfg.TruncateRejected], strconv.Itoa(len(w.data))
		}
		if string(m.Data) != string(wantData) {
			t.Errorf("seq %d: payload %.60q, want %.60q", w.seq, m.Data, wantData)
		}
		if got := m.Header.Get(HeaderTruncated); got != truncated {
			t.Errorf("seq %d: %s = %q, want %q", w.seq, HeaderTruncated, got, truncated)
		}
	}
}

// gathered returns the value of a counter, selected by its reason label
// when reason is not empty.
func gathered(t testing.TB, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{reason=%q}", name, reason)
	return 0
}

func TestDuplicatesDropped(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	a1 := publish(t, js, "verdict.events.r1", good("r1", 1), jetstream.WithMsgID("evt-1"))
	a2 := publish(t, js, "verdict.events.r1", good("r1", 1), jetstream.WithMsgID("evt-1"))
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Fatalf("acks %+v, %+v: want the second to be a duplicate of the first", a1, a2)
	}
	publish(t, js, "verdict.events.r1", good("r1", 2), jetstream.WithMsgID("evt-2"))

	s := newSink("r1")
	in := New(js, cfg, s, nil)
	stop := run(t, in)
	eventually(t, "two deliveries", func() bool { return in.Stats().Accepted == 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := s.delivered()
	if len(got) != 2 || got[0].Record.ID != "evt-1" || got[1].Record.ID != "evt-2" {
		t.Fatalf("delivered %+v, want evt-1 and evt-2 once each", got)
	}
}

func consumerInfo(t testing.TB, js jetstream.JetStream, cfg Config) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(context.Background(), cfg.Stream, cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return &jetstream.ConsumerInfo{} // Run has not created it yet
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestAckOnlyAfterDeliver(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	var last uint64
	for i := range 10 {
		last = publish(t, js, "verdict.events.r1", good("r1", i)).Sequence
	}
	s := newSink("r1")
	s.gate = make(chan struct{})
	in := New(js, cfg, s, nil)
	stop := run(t, in)

	<-s.called // a batch is in hand and the Sink holds it
	if info := consumerInfo(t, js, cfg); info.NumAckPending == 0 || info.AckFloor.Stream != 0 {
		t.Fatalf("while Deliver blocks: NumAckPending = %d, AckFloor = %d; want pending and nothing acked",
			info.NumAckPending, info.AckFloor.Stream)
	}
	close(s.gate)
	eventually(t, "all acknowledged", func() bool {
		info := consumerInfo(t, js, cfg)
		return info.NumAckPending == 0 && info.AckFloor.Stream == last
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := len(s.delivered()); got != 10 {
		t.Fatalf("delivered %d, want 10", got)
	}
}

func TestRestartResumesAfterLastAck(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	cfg.AckWait = time.Minute // a redelivery must come from the reset, not from AckWait
	cfg.DrainTimeout = 50 * time.Millisecond
	setup(t, js, cfg)

	// Phase 1: five messages, delivered and acknowledged.
	for i := range 5 {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	s1 := newSink("r1")
	in1 := New(js, cfg, s1, nil)
	stop1 := run(t, in1)
	eventually(t, "first five acknowledged", func() bool {
		return consumerInfo(t, js, cfg).AckFloor.Stream == 5
	})

	// Phase 2: five more reach the Ingester, but the Sink never takes them.
	s1.gate = nil
	blocked := make(chan struct{})
	s1.mu.Lock()
	s1.gate = blocked
	s1.mu.Unlock()
	for len(s1.called) > 0 {
		<-s1.called
	}
	for i := 5; i < 10; i++ {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	<-s1.called
	if err := stop1(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if info := consumerInfo(t, js, cfg); info.AckFloor.Stream != 5 || info.NumAckPending == 0 {
		t.Fatalf("after stop: AckFloor = %d, NumAckPending = %d; want 5 and some pending",
			info.AckFloor.Stream, info.NumAckPending)
	}

	// Phase 3: a new Ingester gets exactly 6..10, at once.
	s2 := newSink("r1")
	in2 := New(js, cfg, s2, nil)
	stop2 := run(t, in2)
	eventually(t, "redelivery of 6..10", func() bool { return len(s2.delivered()) >= 5 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	got := s2.delivered()
	if len(got) != 5 {
		t.Fatalf("second run delivered %d messages, want 5", len(got))
	}
	for i, m := range got {
		if want := uint64(6 + i); m.Seq != want {
			t.Errorf("second run delivered[%d].Seq = %d, want %d", i, m.Seq, want)
		}
	}
}

// TestDeniedDeadLetterDoesNotStop: a dead letter the engine may not publish
// (its permission is denied, which NATS reports only asynchronously) is
// counted as lost after DeadLetterTimeout, and the good events behind it
// are still delivered.
func TestDeniedDeadLetterDoesNotStop(t *testing.T) {
	asyncErrs := make(chan error, 10)
	_, js := startJetStreamWith(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "engine", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"verdict.rejected.>"}},
		}}}
	}, func(err error) { asyncErrs <- err })
	cfg := testConfig()
	cfg.DeadLetterTimeout = 300 * time.Millisecond
	setup(t, js, cfg)
	publish(t, js, "verdict.events.r1", []byte(`{"rollout":"r1"`))
	publish(t, js, "verdict.events.r1", good("r1", 1))

	s := newSink("r1")
	in := New(js, cfg, s, nil)
	stop := run(t, in)
	eventually(t, "the good event", func() bool { return in.Stats().Accepted == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st := in.Stats()
	if st.DeadLetterErrors != 1 || st.Rejected[telemetry.ReasonBadJSON] != 1 {
		t.Errorf("Stats() = %+v, want one bad-json rejection whose dead letter was lost", st)
	}
	select {
	case err := <-asyncErrs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("async error %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no asynchronous permissions violation reported")
	}
}

// TestGapInDeliveriesResets: a delivery the Ingester never receives (here
// taken by a stray reader of the same durable, as a delivery lost in flight
// would be) must not be covered by a later AckAll. The Ingester notices the
// gap in consumer sequences, resets the consumer to its ack floor and gets
// the missing message again, in order.
func TestGapInDeliveriesResets(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	cfg.AckWait = time.Minute // the redelivery must come from the reset
	setup(t, js, cfg)
	ctx := context.Background()
	for i := range 5 {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	s := newSink("r1")
	gate := make(chan struct{})
	in := New(js, cfg, s, nil)
	stop := run(t, in)
	eventually(t, "first five acknowledged", func() bool { return consumerInfo(t, js, cfg).AckFloor.Stream == 5 })

	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	for len(s.called) > 0 {
		<-s.called
	}
	publish(t, js, "verdict.events.r1", good("r1", 5)) // seq 6: the Ingester holds it in Deliver
	<-s.called
	// Fill the Ingester's next batch (seq 7 .. 6+BatchSize): with one
	// batch in Deliver and a full one waiting, it stops pulling.
	last := 6 + cfg.BatchSize
	for i := 6; i < last; i++ {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	eventually(t, "the Ingester to stop pulling", func() bool {
		info := consumerInfo(t, js, cfg)
		return info.NumWaiting == 0 && info.NumAckPending == 1+cfg.BatchSize
	})

	publish(t, js, "verdict.events.r1", good("r1", last)) // taken by a stray reader
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	stray, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var strayMsgs int
	for m := range stray.Messages() {
		strayMsgs++
		if md, _ := m.Metadata(); md.Sequence.Stream != uint64(last+1) {
			t.Fatalf("stray reader got stream seq %d, want %d", md.Sequence.Stream, last+1)
		}
	}
	if strayMsgs != 1 {
		t.Fatalf("stray reader got %d messages, want 1", strayMsgs)
	}
	publish(t, js, "verdict.events.r1", good("r1", last+1))
	close(gate)

	want := last + 2
	eventually(t, "all delivered", func() bool { return len(s.delivered()) >= want })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := s.delivered()
	if len(got) != want {
		t.Fatalf("delivered %d messages, want %d", len(got), want)
	}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("delivered[%d].Seq = %d, want %d", i, m.Seq, i+1)
		}
	}
	if info := consumerInfo(t, js, cfg); info.AckFloor.Stream != uint64(want) || info.NumAckPending != 0 {
		t.Fatalf("AckFloor = %d, NumAckPending = %d, want %d and 0", info.AckFloor.Stream, info.NumAckPending, want)
	}
}

// TestResumeAtReplaysAcknowledged: ResumeAt before an acknowledged
// sequence makes the next Run deliver again from there (the engine's
// checkpoints lag the acks); a sequence past the ack floor changes
// nothing.
func TestResumeAtReplaysAcknowledged(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	cfg.DrainTimeout = 50 * time.Millisecond
	setup(t, js, cfg)
	for i := range 10 {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	s1 := newSink("r1")
	stop1 := run(t, New(js, cfg, s1, nil))
	eventually(t, "ten acknowledged", func() bool { return consumerInfo(t, js, cfg).AckFloor.Stream == 10 })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		resume uint64
		want   []uint64
	}{
		{4, []uint64{4, 5, 6, 7, 8, 9, 10}},
		{11, nil}, // nothing to replay: only new messages come
	} {
		s := newSink("r1")
		in := New(js, cfg, s, nil)
		in.ResumeAt(tc.resume)
		stop := run(t, in)
		if tc.want != nil {
			eventually(t, "replay", func() bool { return len(s.delivered()) >= len(tc.want) })
		} else {
			eventually(t, "live", in.Live)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, m := range s.delivered() {
			got = append(got, m.Seq)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ResumeAt(%d): delivered %v, want %v", tc.resume, got, tc.want)
		}
	}
}

// TestPipelineKeepsOrder: many messages through small batches, two pull
// requests outstanding and a Sink that is sometimes slow: every sequence
// is delivered once, in stream order, and the last one is acknowledged.
func TestPipelineKeepsOrder(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	const n = 3000
	for i := range n {
		subj := fmt.Sprintf("verdict.events.r%d", i%3)
		if _, err := js.PublishAsync(subj, good(fmt.Sprintf("r%d", i%3), i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publish did not complete")
	}
	s := &slowSink{sink: newSink("r0", "r1", "r2")}
	in := New(js, cfg, s, nil)
	stop := run(t, in)
	eventually(t, "all delivered", func() bool { return len(s.delivered()) >= n })
	eventually(t, "all acknowledged", func() bool {
		info := consumerInfo(t, js, cfg)
		return info.AckFloor.Stream == n && info.NumAckPending == 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := s.delivered()
	if len(got) != n {
		t.Fatalf("delivered %d, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("delivered[%d].Seq = %d, want %d", i, m.Seq, i+1)
		}
	}
	if st := in.Stats(); st.Accepted != n || st.Redelivered != 0 {
		t.Fatalf("Stats() = %+v, want %d accepted and no redeliveries", st, n)
	}
}

// slowSink sleeps in every seventh Deliver, so batches pile up behind it.
type slowSink struct {
	*sink
	calls int
}

func (s *slowSink) Deliver(ctx context.Context, msgs []Message) error {
	if s.calls++; s.calls%7 == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	return s.sink.Deliver(ctx, msgs)
}

// TestLive: Live reports true while pull requests are answered (even with
// no telemetry: each expires after FetchWait), and false once Run stopped.
func TestLive(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	in := New(js, cfg, newSink("r1"), nil)
	if in.Live() {
		t.Fatal("Live before Run")
	}
	stop := run(t, in)
	eventually(t, "Live", in.Live)
	time.Sleep(4 * cfg.FetchWait)
	if !in.Live() {
		t.Fatal("not Live while idle and connected")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not Live after Run returned", func() bool { return !in.Live() })
}

func TestSubjectRollout(t *testing.T) {
	const prefix = "verdict.events"
	for subject, want := range map[string]string{
		"verdict.events.checkout-42":    "checkout-42",
		"verdict.events.a":              "a",
		"verdict.events":                "",
		"verdict.events.":               "",
		"verdict.eventsX.a":             "",
		"verdict.events.a.b":            "",
		"verdict.event.a":               "",
		"other.events.checkout-42":      "",
		"":                              "",
		"verdict.events.verdict.events": "",
	} {
		if got := subjectRollout(subject, prefix); got != want {
			t.Errorf("subjectRollout(%q, %q) = %q, want %q", subject, prefix, got, want)
		}
	}
}
