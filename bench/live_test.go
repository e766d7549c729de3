package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/internal/natstest"
)

func startJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	_, nc := natstest.Start(t, nil)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// runBackground publishes at rate for d and returns what Background did.
func runBackground(nc *nats.Conn, prefix string, rate float64, d time.Duration) (BackgroundLoad, error) {
	stop := make(chan struct{})
	time.AfterFunc(d, func() { close(stop) })
	return Background(nc, prefix, RolloutIDs("bg", 7), rate, stop)
}

// Background's load is what the stream stored: every publish it counts
// is in the stream, at about the rate asked for.
func TestBackgroundStoresWhatItCounts(t *testing.T) {
	nc, js := startJetStream(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BG", Subjects: []string{"bg.>"}})
	if err != nil {
		t.Fatal(err)
	}
	load, err := runBackground(nc, "bg", 20000, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if load.Published == 0 || int64(info.State.Msgs) != load.Published {
		t.Errorf("Background published %d, the stream holds %d", load.Published, info.State.Msgs)
	}
	// Generous bounds: the rate must be about right, on a slow machine too.
	if load.PerSec < 10000 || load.PerSec > 21000 {
		t.Errorf("Background achieved %.0f/s, asked for 20000/s", load.PerSec)
	}
}

// A publish the stream refuses, or that no stream takes, fails the load.
func TestBackgroundRefused(t *testing.T) {
	nc, js := startJetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"},
		MaxMsgs: 10, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	if _, err := runBackground(nc, "full", 5000, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Background on a full stream: err = %v, want refused publishes", err)
	} else {
		t.Log(err)
	}
	if _, err := runBackground(nc, "nostream", 5000, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Background without a stream: err = %v, want status 503", err)
	}
}
