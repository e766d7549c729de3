package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// TestE2EStormMatchesReplay publishes a whole recorded trace (24,000
// events) as fast as JetStream takes it, a backlog far above any steady
// rate, and checks that serve decides exactly what `verdict replay`
// decided on the same trace (the golden file), byte for byte, and counts
// what replay counts.
func TestE2EStormMatchesReplay(t *testing.T) {
	set, err := policy.Load("../../testdata/replay/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns, nc, err := startEmbedded(embeddedOptions{dir: t.TempDir(), inProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	t.Cleanup(nc.Close)
	e := &e2e{t: t, ns: ns, nc: nc, pol: set}
	e.start()
	ctx := context.Background()
	const id = "bad-events"
	if err := e.st.act.PutSpec(ctx, engine.Spec{Rollout: id, Policy: "replay", Baseline: "v1", Canary: "v2"}); err != nil {
		t.Fatal(err)
	}
	e.waitRoute(id, func(r engine.Route) bool { return r.Seq >= 1 })

	data, err := os.ReadFile("../../testdata/replay/bad-events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var m *engine.Machine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := bytes.Clone(sc.Bytes())
		rec, err := telemetry.Decode(line)
		if err != nil {
			t.Fatalf("trace: %v", err)
		}
		if m == nil {
			if m, err = engine.NewMachine(engine.Spec{Rollout: id, Policy: "replay"}, set["replay"]); err != nil {
				t.Fatal(err)
			}
			m.Start(rec.Time)
		}
		m.ObserveRecord(rec.Time, &rec)
		if _, err := e.js.PublishAsync("verdict.events."+id, line, jetstream.WithMsgID(rec.ID)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing the trace took over 30s")
	}
	(&simRouter{e: e, id: id}).waitCounted()
	e.waitRoute(id, terminal)

	golden, err := os.ReadFile("../../testdata/replay/bad-events.golden")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(golden)), "\n")
	got := e.rawDecisions(id)
	if len(got) != len(want) {
		t.Fatalf("serve made %d decisions, replay %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("decision %d:\n serve  %s\n replay %s", i+1, got[i], want[i])
		}
	}
	b, c := m.Requests()
	if st := e.status(id); st.Requests != [2]int64{b, c} {
		t.Errorf("serve counted %v requests, replay [%d %d]", st.Requests, b, c)
	}
}

// rawDecisions returns a rollout's decisions as published.
func (e *e2e) rawDecisions(id string) []string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.js.OrderedConsumer(ctx, "VERDICT_DECISIONS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"verdict.decisions." + id},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for {
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, string(m.Data()))
		}
		if n == 0 {
			return out
		}
	}
}

// TestE2EServerRestart restarts the NATS server (same store, same port)
// in the middle of a rollout: the engine reconnects, resumes consuming,
// and the rollout ends as if nothing happened, every request counted once.
func TestE2EServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a server")
	}
	dir := t.TempDir()
	opts := &server.Options{ServerName: "restart", JetStream: true, StoreDir: dir, Host: "127.0.0.1", Port: -1, NoSigs: true}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pols, err := policy.Parse("e2e.yaml", []byte(e2ePolicy))
	if err != nil {
		t.Fatal(err)
	}
	e := &e2e{t: t, ns: ns, nc: nc, pol: policy.Set{"e2e": pols[0]}}
	e.start()
	e.startRollout("rs")
	r := newSimRouter(e, "rs", goodVersion, 4000)
	next := r.run(0, 300, func(rt engine.Route) bool { return rt.Step >= 1 })

	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(500 * time.Millisecond) // the engine sees the outage
	ns2, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns2.Start()
	t.Cleanup(ns2.Shutdown)
	if !ns2.ReadyForConnections(10 * time.Second) {
		t.Fatal("restarted server not ready")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.run(next, 600, terminal)
	checkCompletedAcross(t, e, r, "the server restart")
}

// TestE2EFencing runs two engines on one server: the second stands by
// while the first holds the lease; when the first's lease is taken from
// it, it stops deciding at once; and at no instant do both hold it.
func TestE2EFencing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a lease to expire")
	}
	ns, nc, err := startEmbedded(embeddedOptions{dir: t.TempDir(), inProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	t.Cleanup(nc.Close)
	pols, err := policy.Parse("e2e.yaml", []byte(e2ePolicy))
	if err != nil {
		t.Fatal(err)
	}
	cfg := stackConfig{policies: policy.Set{"e2e": pols[0]}, now: func() time.Time { return e2eStart }}
	const ttl = time.Second
	type engineProc struct {
		lease   *actuator.Lease
		running atomic.Int32 // stacks started
		stop    context.CancelFunc
		done    chan error
	}
	start := func(name string) *engineProc {
		c, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		js, _ := jetstream.New(c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := actuator.NewLease(ctx, js, leaseBucket, name, ttl, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := &engineProc{lease: l, done: make(chan error, 1)}
		rctx, stop := context.WithCancel(context.Background())
		p.stop = stop
		go func() { p.done <- runFenced(rctx, c, cfg, l, func(*stack) { p.running.Add(1) }) }()
		t.Cleanup(func() { stop(); <-p.done })
		return p
	}
	var both atomic.Bool
	watch := func(a, b *engineProc) (stop func()) {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(2 * time.Millisecond):
				}
				if a.lease.Held() && b.lease.Held() {
					both.Store(true)
				}
			}
		}()
		return func() { close(done) }
	}
	waitFor := func(what string, ok func() bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, within)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	a := start("a")
	waitFor("a leads", func() bool { return a.running.Load() == 1 }, 5*time.Second)
	b := start("b")
	defer watch(a, b)()
	time.Sleep(2 * ttl)
	if n := b.running.Load(); n != 0 {
		t.Fatalf("b started %d stacks while a held the lease", n)
	}

	// Someone else writes the key: a must notice within a renewal and
	// stop deciding; after the intruder's key expires, one engine leads.
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, leaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, actuator.LeaseKey, []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	waitFor("a loses the lease", func() bool { return !a.lease.Held() }, ttl)
	waitFor("a new leader", func() bool { return a.lease.Held() || b.lease.Held() }, 4*ttl)
	if both.Load() {
		t.Fatal("both engines held the lease at once")
	}

	// A graceful stop releases the lease: the standby takes over at once.
	leader, standby := a, b
	if b.lease.Held() {
		leader, standby = b, a
	}
	before := standby.running.Load()
	leader.stop()
	<-leader.done
	leader.done <- nil // for the cleanup
	waitFor("the standby takes over", func() bool { return standby.running.Load() > before }, ttl)
	if both.Load() {
		t.Fatal("both engines held the lease at once")
	}
}
