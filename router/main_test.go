package router

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testNATS is an in-process JetStream server (on a TCP port, so a test
// can stop and restart it) with a client, the routes bucket and the
// telemetry stream.
type testNATS struct {
	srv  *server.Server
	dir  string
	port int
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
}

func startServer(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s
}

func newTestNATS(t testing.TB) *testNATS {
	t.Helper()
	n := &testNATS{dir: t.TempDir()}
	n.srv = startServer(t, n.dir, -1)
	n.port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { n.srv.Shutdown(); n.srv.WaitForShutdown() })
	n.nc = n.connect(t)
	var err error
	if n.js, err = jetstream.New(n.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n.kv, err = n.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultRoutesBucket, History: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err = n.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "VERDICT_EVENTS", Subjects: []string{DefaultSubjectPrefix + ">"}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// connect returns a client that reconnects for ever, closed at cleanup.
func (n *testNATS) connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// restart stops the server and starts a new one on the same port and
// store, as an operator restarting NATS would.
func (n *testNATS) restart(t testing.TB) {
	t.Helper()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = startServer(t, n.dir, n.port)
}

// eventually polls cond until it holds or 10s pass. The conditions wait on
// a real server's deliveries, so there is no clock to fake.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runTable starts t.Run and stops it at cleanup, checking it returns nil.
func runTable(t testing.TB, tb *Table) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tb.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Table.Run = %v, want nil", err)
		}
	})
	select {
	case <-tb.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("table not ready")
	}
}
