package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/policy"
)

// embeddedOptions configures the embedded JetStream server.
type embeddedOptions struct {
	dir       string // JetStream store
	listen    string // host:port for clients; ignored when inProcess
	inProcess bool   // no network listener: only this process connects
}

// startEmbedded starts an embedded JetStream server and connects to it.
func startEmbedded(o embeddedOptions) (*server.Server, *nats.Conn, error) {
	opts := &server.Options{
		ServerName: "verdict",
		JetStream:  true,
		StoreDir:   o.dir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if o.inProcess {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.listen)
		if err != nil {
			return nil, nil, fmt.Errorf("--listen %q: %w", o.listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, nil, fmt.Errorf("--listen %q: bad port", o.listen)
		}
		opts.Host, opts.Port = host, p
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, nil, errors.New("embedded server did not start within 10s")
	}
	copts := []nats.Option{nats.Name("verdict")}
	url := ns.ClientURL()
	if o.inProcess {
		copts = append(copts, nats.InProcessServer(ns))
	}
	nc, err := nats.Connect(url, copts...)
	if err != nil {
		ns.Shutdown()
		return nil, nil, fmt.Errorf("connect to embedded server: %w", err)
	}
	return ns, nc, nil
}

// stackConfig configures the engine's actors.
type stackConfig struct {
	ingest   ingest.Config   // zero: ingest.DefaultConfig()
	actuator actuator.Config // zero: actuator.DefaultConfig()
	policies policy.Set      // the initial policy set
	log      *slog.Logger
	now      func() time.Time
	// checkpointRate is engine.Options.MaxCheckpointRate (0: its default).
	checkpointRate int
	// lease, when set, fences the stack: decisions and checkpoints are
	// refused unless the lease is held. runFenced sets it.
	lease *actuator.Lease
}

// stack is a running engine: ingest feeding rollout owners that publish
// through the actuator. shutdown stops it in a fixed order.
type stack struct {
	js  jetstream.JetStream
	act *actuator.Actuator
	in  *ingest.Ingester
	eng *engine.Engine

	stopIngest, stopEngine, stopWatch context.CancelFunc
	ingestDone, engineDone, watchDone chan error
	once                              sync.Once
}

// startStack creates the streams and buckets if absent, loads the rollout
// specs, and starts the engine, the spec watcher and ingest, in that order,
// so no telemetry is judged before the rollouts it belongs to are known.
func startStack(nc *nats.Conn, cfg stackConfig) (*stack, error) {
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	if cfg.ingest.Stream == "" {
		cfg.ingest = ingest.DefaultConfig()
	}
	if cfg.actuator.DecisionStream == "" {
		cfg.actuator = actuator.DefaultConfig()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ingest.Setup(ctx, js, cfg.ingest); err != nil {
		return nil, fmt.Errorf("set up telemetry streams: %w", err)
	}
	if err := actuator.Setup(ctx, js, cfg.actuator); err != nil {
		return nil, fmt.Errorf("set up decision stream and buckets: %w", err)
	}
	act, err := actuator.New(js, cfg.actuator)
	if err != nil {
		return nil, err
	}
	var in *ingest.Ingester
	eng := engine.New(engine.Options{Store: store{act, cfg.lease}, Log: cfg.log, Now: cfg.now,
		MaxCheckpointRate: cfg.checkpointRate, Live: func() bool { return in.Live() }})
	in = ingest.New(js, cfg.ingest, eng, cfg.log)
	eng.SetPolicies(cfg.policies)
	specs, err := act.Specs(ctx)
	if err != nil {
		return nil, fmt.Errorf("read rollouts: %w", err)
	}
	for _, s := range specs {
		eng.SetSpec(s, false)
	}
	s := &stack{js: js, act: act, eng: eng, in: in,
		ingestDone: make(chan error, 1), engineDone: make(chan error, 1), watchDone: make(chan error, 1)}

	var ectx, wctx, ictx context.Context
	ectx, s.stopEngine = context.WithCancel(context.Background())
	go func() { s.engineDone <- eng.Run(ectx) }()
	wctx, s.stopWatch = context.WithCancel(context.Background())
	go func() { s.watchDone <- act.WatchSpecs(wctx, eng.SetSpec) }()
	// Every rollout known now has its owner before the first delivery,
	// and consumption resumes at the oldest event a checkpoint lacks.
	<-eng.Ready()
	seq, ok, err := eng.ResumeSeq(ctx)
	if err != nil {
		s.stopWatch()
		s.stopEngine()
		<-s.engineDone
		<-s.watchDone
		return nil, err
	}
	if ok {
		in.ResumeAt(seq)
	}
	ictx, s.stopIngest = context.WithCancel(context.Background())
	go func() { s.ingestDone <- s.in.Run(ictx) }()
	return s, nil
}

// runFenced runs a stack only while this process holds the leader lease:
// it stands by until it acquires the lease, starts a stack, and stops it
// the moment the lease is lost (its Store refuses to decide from then
// on), then stands by again. started is called with each new stack. It
// returns when ctx ends, after stopping the stack and releasing the lease.
func runFenced(ctx context.Context, nc *nats.Conn, cfg stackConfig, lease *actuator.Lease, started func(*stack)) error {
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	cfg.lease = lease
	for {
		if err := lease.Acquire(ctx); err != nil {
			return nil // ctx ended while standing by
		}
		kctx, stopKeep := context.WithCancel(context.Background())
		lost := make(chan error, 1)
		go func() { lost <- lease.Keep(kctx) }()
		st, err := startStack(nc, cfg)
		if err != nil {
			stopKeep()
			<-lost
			return err
		}
		started(st)
		select {
		case <-ctx.Done():
			err := st.shutdown(20 * time.Second)
			stopKeep()
			<-lost
			return err
		case lerr := <-lost:
			cfg.log.Error("leader lease lost: stopped deciding", "err", lerr)
			if err := st.shutdown(20 * time.Second); err != nil {
				cfg.log.Warn("stopping after the lease was lost", "err", err)
			}
			stopKeep()
		}
	}
}

// shutdown stops fetching telemetry, lets the owners apply what they hold
// and write their last checkpoints, then stops watching specs. It does not
// close the connection: the caller drains it last.
func (s *stack) shutdown(timeout time.Duration) error {
	var errs []error
	s.once.Do(func() {
		deadline := time.After(timeout)
		wait := func(name string, ch chan error) {
			select {
			case err := <-ch:
				if err != nil && !errors.Is(err, context.Canceled) {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
				}
			case <-deadline:
				errs = append(errs, fmt.Errorf("%s: did not stop within %s", name, timeout))
			}
		}
		s.stopIngest()
		wait("ingest", s.ingestDone)
		s.stopEngine()
		wait("engine", s.engineDone)
		s.stopWatch()
		wait("spec watch", s.watchDone)
	})
	return errors.Join(errs...)
}

// store adapts the actuator to the engine's Store. With a lease it is
// fenced: nothing is written unless the lease is held.
type store struct {
	a     *actuator.Actuator
	lease *actuator.Lease
}

var _ engine.Store = store{}

// errFenced is returned for writes of a process that lost the lease.
var errFenced = errors.New("fenced: this engine does not hold the leader lease")

func (s store) Apply(ctx context.Context, d engine.Decision, r engine.Route) error {
	if s.lease != nil && !s.lease.Held() {
		return errFenced
	}
	return s.a.Apply(ctx, d, d.At, r)
}

func (s store) SaveState(ctx context.Context, rollout string, data []byte) error {
	if s.lease != nil && !s.lease.Held() {
		return errFenced
	}
	return s.a.SaveState(ctx, rollout, data)
}

func (s store) LoadState(ctx context.Context, rollout string) ([]byte, bool, error) {
	data, err := s.a.LoadState(ctx, rollout)
	if errors.Is(err, actuator.ErrNotFound) {
		return nil, false, nil
	}
	return data, err == nil, err
}

func (s store) LoadRoute(ctx context.Context, rollout string) (engine.Route, bool, error) {
	r, err := s.a.Route(ctx, rollout)
	if errors.Is(err, actuator.ErrNotFound) {
		return engine.Route{}, false, nil
	}
	return r, err == nil, err
}
