package ingest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestPositionMatchesMetadata: the hand-written reply parser reads the
// same sequences and time as jetstream.Msg.Metadata for real deliveries.
func TestPositionMatchesMetadata(t *testing.T) {
	_, js := startJetStream(t)
	cfg := testConfig()
	setup(t, js, cfg)
	for i := range 5 {
		publish(t, js, "verdict.events.r1", good("r1", i))
	}
	cons, err := js.CreateOrUpdateConsumer(t.Context(), cfg.Stream, jetstream.ConsumerConfig{
		Durable: "positions", AckPolicy: jetstream.AckAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		p, ok := parseAckReply(m.Reply())
		if !ok {
			t.Fatalf("parseAckReply(%q) failed", m.Reply())
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if p.stream != meta.Sequence.Stream || p.consumer != meta.Sequence.Consumer || !p.time().Equal(meta.Timestamp) {
			t.Errorf("parseAckReply(%q) = %+v, Metadata = %+v", m.Reply(), p, meta)
		}
	}
	if n != 5 {
		t.Fatalf("got %d messages, want 5", n)
	}
}

func TestParseAckReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want position
		ok   bool
	}{
		{"$JS.ACK.S.C.1.42.7.1764151200123456789.0", position{42, 7, 1764151200123456789}, true},
		{"$JS.ACK._.ACCHASH.S.C.2.42.7.1764151200123456789.3.rnd", position{42, 7, 1764151200123456789}, true},
		{"$JS.ACK.dom.ACCHASH.S.C.2.42.7.99.3", position{42, 7, 99}, true},       // 11 tokens
		{"$JS.ACK.dom.ACCHASH.S.C.2.42.7.99.3.x.y.z", position{42, 7, 99}, true}, // more
		{"$JS.ACK.S.C.1.42.7.99", position{}, false},                             // 8 tokens
		{"$JS.ACK.dom.ACCHASH.S.C.2.42.7.99", position{}, false},                 // 10 tokens
		{"$JS.ACK.S.C.1.4x.7.99.0", position{}, false},                           // not a number
		{"$JS.ACK.S.C.1..7.99.0", position{}, false},                             // empty
		{"$JS.ACK.S.C.1.42.7.99999999999999999999.0", position{}, false},         // too long
		{"$JS.NAK.S.C.1.42.7.99.0", position{}, false},                           // prefix
		{"", position{}, false},
	} {
		got, ok := parseAckReply(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseAckReply(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { parseAckReply("$JS.ACK.S.C.1.42.7.1764151200123456789.0") }); n != 0 {
		t.Errorf("parseAckReply allocates %v times", n)
	}
}
