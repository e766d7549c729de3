package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/verdict-dev/verdict/internal/natstest"
)

// The cleanup Start registers must leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartJetStream(t *testing.T) {
	_, nc := natstest.Start(t, nil)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatalf("CreateStream: %v", err)
	}
	ack, err := js.Publish(ctx, "t.one", []byte("hello"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if ack.Stream != "T" || ack.Sequence != 1 {
		t.Errorf("PubAck = %+v, want stream T, sequence 1", ack)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestStartConfigure(t *testing.T) {
	var ran bool
	ns, nc := natstest.Start(t, func(o *server.Options) {
		ran = true
		o.ServerName = "configured"
		o.MaxPayload = 4096
	})
	if !ran {
		t.Fatal("configure was not called")
	}
	if got := ns.Name(); got != "configured" {
		t.Errorf("server name %q, want %q", got, "configured")
	}
	if got := nc.MaxPayload(); got != 4096 {
		t.Errorf("client's max payload %d, want 4096 (the configured server's)", got)
	}
}

// Without DontListen the client connects over TCP, to the server's URL.
func TestStartListening(t *testing.T) {
	ns, nc := natstest.Start(t, func(o *server.Options) { o.Host, o.DontListen = "127.0.0.1", false })
	if got, want := nc.ConnectedUrl(), ns.ClientURL(); got != want {
		t.Errorf("connected to %q, want %q", got, want)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
