// Package natstest starts an embedded NATS server with JetStream for tests,
// and connects a client to it. It is for tests only: nothing outside
// _test.go files should import it.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Start runs a JetStream server for the test and returns it with a client
// connected to it.
//
// The server starts with Port -1, JetStream on, a StoreDir from
// t.TempDir(), DontListen, NoLog and NoSigs; configure, when not nil,
// adjusts those options first. The client connects in process while
// DontListen is set, else to the server's client URL, with opts.
//
// The test's cleanup closes the client, then shuts the server down and
// waits until it has, so that no goroutine of either outlives the test.
func Start(t testing.TB, configure func(*server.Options), opts ...nats.Option) (*server.Server, *nats.Conn) {
	t.Helper()
	o := &server.Options{
		Port: -1, JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoLog: true, NoSigs: true,
	}
	if configure != nil {
		configure(o)
	}
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: nats server not ready for connections within 10s")
	}
	url := ns.ClientURL()
	if o.DontListen {
		url = ""
		opts = append([]nats.Option{nats.InProcessServer(ns)}, opts...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close) // runs before the server's shutdown above
	return ns, nc
}
