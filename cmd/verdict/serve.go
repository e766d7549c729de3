package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/policy"
)

func init() {
	register("serve", command{summary: "run the engine (embedded JetStream by default)", run: runServe})
}

const serveUsage = `Usage: verdict serve [flags]

Runs the engine: consumes telemetry from JetStream, analyzes every rollout in
KV verdict_rollouts under its policy, publishes decisions and writes route
weights. By default it starts an embedded JetStream server on --listen with
its data in --data, so routers and the CLI can connect to it; with --nats it
connects to an existing server or cluster instead. Policies are read from
--policies and reloaded when the directory changes (an invalid set is
reported and the previous one kept). SIGINT or SIGTERM stop it cleanly:
fetching stops, rollouts apply what they hold and checkpoint, and the
connection drains.

Only one engine decides at a time: each takes the leader lease in KV
verdict_leader first (renewed every --lease-ttl/3) and stands by while
another holds it; an engine that loses the lease stops deciding at once.
A restarted engine with the same --engine-id takes its lease back at once.
See docs/RELIABILITY.md for what survives a crash.

Flags:
`

type serveFlags struct {
	listen, data, natsURL, creds, user, password string
	tlsCert, tlsKey, tlsCA                       string
	policies                                     string
	reload                                       time.Duration
	engineID                                     string
	leaseTTL                                     time.Duration
	metrics, logFormat, logLevel                 string
	checkpointRate                               int
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:4222", "client `address` of the embedded server")
	fs.StringVar(&f.data, "data", "./verdict-data", "`directory` of the embedded server's JetStream store")
	fs.StringVar(&f.natsURL, "nats", "", "connect to this NATS `URL` instead of embedding a server")
	addAuthFlags(fs, &f.creds, &f.user, &f.password, &f.tlsCert, &f.tlsKey, &f.tlsCA)
	fs.StringVar(&f.policies, "policies", "./policies", "`directory` of policy files (*.yaml, *.yml)")
	fs.DurationVar(&f.reload, "reload", 5*time.Second, "how often to look for policy changes")
	host, _ := os.Hostname()
	fs.StringVar(&f.engineID, "engine-id", fmt.Sprintf("%s-%d", host, os.Getpid()), "this engine's `name` in the leader lease")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", 10*time.Second, "leader lease `duration`: a standby takes over this long after the leader stops renewing")
	fs.IntVar(&f.checkpointRate, "checkpoint-rate", 1000, "at most `n` rollout checkpoints a second on the engine's own schedule: with more active rollouts each is checkpointed every active/rate seconds, which bounds what a restart replays (docs/RELIABILITY.md)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this `address` (e.g. :9090); off when empty")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() { fmt.Fprint(stderr, serveUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if f.checkpointRate < 1 {
		fmt.Fprintf(stderr, "verdict serve: --checkpoint-rate %d: need at least 1\n", f.checkpointRate)
		return 2
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "verdict serve:", err)
		return 2
	}
	if err := serve(ctx, f, log); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, f serveFlags, log *slog.Logger) error {
	set, err := policy.Load(f.policies)
	if err != nil {
		return fmt.Errorf("policies: %w", err)
	}
	log.Info("policies loaded", "dir", f.policies, "count", len(set))

	var nc *nats.Conn
	if f.natsURL == "" {
		if err := os.MkdirAll(f.data, 0o755); err != nil {
			return err
		}
		ns, c, err := startEmbedded(embeddedOptions{dir: f.data, listen: f.listen})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		nc = c
		log.Info("embedded JetStream server started", "listen", ns.ClientURL(), "data", f.data)
	} else {
		opts, err := connectOptions(f.creds, f.user, f.password, f.tlsCert, f.tlsKey, f.tlsCA, log)
		if err != nil {
			return err
		}
		// A server that is not up yet is waited for, as one that goes away.
		opts = append(opts, nats.RetryOnFailedConnect(true))
		nc, err = nats.Connect(f.natsURL, opts...)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", f.natsURL, err)
		}
		log.Info("connected", "url", nc.ConnectedUrlRedacted())
	}
	defer nc.Close()

	now, err := testClock()
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	js, err := jetstream.New(nc)
	var lease *actuator.Lease
	if err == nil {
		lease, err = actuator.NewLease(lctx, js, leaseBucket, f.engineID, f.leaseTTL, log)
	}
	cancel()
	if err != nil {
		return err
	}
	cur := &current{}
	cur.setPolicies(set)
	wctx, stopWatcher := context.WithCancel(context.Background())
	watcherDone := make(chan error, 1)
	go func() {
		w := policy.NewWatcher(f.policies, f.reload)
		watcherDone <- w.Run(wctx, func(s policy.Set) {
			cur.setPolicies(s)
			log.Info("policies reloaded", "count", len(s))
		}, func(err error) {
			log.Error("policy reload rejected; keeping the previous set", "err", err)
		})
	}()
	var srv *http.Server
	if f.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
		reg.MustRegister(cur)
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv = &http.Server{Addr: f.metrics, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
	}
	err = runFenced(ctx, nc, stackConfig{policies: cur.policies(), log: log, now: now, checkpointRate: f.checkpointRate}, lease, func(st *stack) {
		cur.setStack(st)
		log.Info("engine running")
	})
	log.Info("shutting down")
	stopWatcher()
	<-watcherDone
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	if derr := nc.Drain(); derr != nil {
		err = errors.Join(err, derr)
	}
	log.Info("stopped")
	return err
}

// leaseBucket is the KV bucket of the engines' leader lease.
const leaseBucket = "verdict_leader"

// testClock returns the engine's wall clock: time.Now, or, for the fault
// suite only, the fixed instant in VERDICT_TEST_NOW (RFC 3339), so that a
// recorded trace is judged the same on every run (rollouts start at that
// instant and time then moves with the events only).
func testClock() (func() time.Time, error) {
	v := os.Getenv("VERDICT_TEST_NOW")
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, fmt.Errorf("VERDICT_TEST_NOW: %w", err)
	}
	return func() time.Time { return t }, nil
}

// current is the running stack of a fenced engine, which changes each
// time the lease is won again, and the policy set to give it.
type current struct {
	mu  sync.Mutex
	st  *stack
	pol policy.Set
}

func (c *current) setStack(st *stack) {
	c.mu.Lock()
	c.st = st
	st.eng.SetPolicies(c.pol)
	c.mu.Unlock()
}

func (c *current) setPolicies(s policy.Set) {
	c.mu.Lock()
	c.pol = s
	if c.st != nil {
		c.st.eng.SetPolicies(s)
	}
	c.mu.Unlock()
}

func (c *current) policies() policy.Set {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pol
}

// Describe sends nothing: the collector is unchecked, as its ingest
// counters belong to whichever stack runs.
func (c *current) Describe(chan<- *prometheus.Desc) {}

// Collect reports the running stack's ingest counters and late events.
func (c *current) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	if st == nil {
		return
	}
	for _, col := range st.in.Collectors() {
		col.Collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(descLate, prometheus.CounterValue, float64(st.eng.Late()))
}

var descLate = prometheus.NewDesc("verdict_engine_late_events_total",
	"Telemetry more than the lateness window behind its rollout's clock (still counted).", nil, nil)

// addAuthFlags registers the connection flags shared by every command
// that talks to a NATS server.
func addAuthFlags(fs *flag.FlagSet, creds, user, password, cert, key, ca *string) {
	fs.StringVar(creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(user, "user", "", "NATS user name")
	fs.StringVar(password, "password", "", "NATS password")
	fs.StringVar(cert, "tls-cert", "", "client TLS certificate `file`")
	fs.StringVar(key, "tls-key", "", "client TLS key `file`")
	fs.StringVar(ca, "tls-ca", "", "TLS root CA `file` to verify the server")
}

// connectOptions turns the connection flags into nats.Options, with
// endless reconnects and an error handler: a denied permission only shows
// up there.
func connectOptions(creds, user, password, cert, key, ca string, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("verdict"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats error", "subject", subj, "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: the connection was closed on purpose
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if user != "" {
		opts = append(opts, nats.UserInfo(user, password))
	}
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, errors.New("--tls-cert and --tls-key go together")
		}
		opts = append(opts, nats.ClientCert(cert, key))
	}
	if ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	return opts, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
