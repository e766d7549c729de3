package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/verdict-dev/verdict/router"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("proxy", command{summary: "reverse proxy that splits traffic by the engine's weights", run: runProxy})
}

const proxyUsage = `Usage: verdict proxy --rollout ID --baseline URL --canary URL [flags]

An HTTP reverse proxy for one rollout. It watches the rollout's route in KV
verdict_routes and sends each request to the baseline or the canary backend:
a request's unit (--unit-header, else --unit-cookie) is hashed to a fixed
point in [0,100) and goes to the canary when the point is below the canary
weight, so a user stays on the canary as the weight grows, and everyone is
back on the baseline the moment a rollback arrives. A request without a unit
gets a random variant of its own (no stickiness). Until a route is known,
and for a rollout without one, everything goes to the baseline; while NATS is
unreachable the last known weights stay in force.

Every proxied request is published as telemetry on verdict.events.<rollout>:
its latency and outcome (a 5xx status or a transport error is an error), one
event per request or, with --batch N, one batch per N requests of a variant
(and at least every --batch-interval). Publishing is asynchronous from a
bounded queue: when the queue is full, events are dropped and counted, never
waited for. Responses carry Verdict-Variant: baseline|canary.

A request carrying the override header (--override-header, "" to disable)
with value baseline or canary is sent to that version, marked with
Verdict-Overridden: 1, and left out of the analysis. Anyone who can set the
header can reach the canary: strip it at your edge if that matters.

Ctrl-C (SIGINT) or SIGTERM stops accepting requests, finishes those in
flight, publishes the remaining telemetry and exits 0. The exit status is 1
on a runtime error (for example the listen address is taken, or the
telemetry could not all be published before --shutdown-timeout) and 2 on a
usage error. The proxy starts even when NATS is unreachable: it serves the
baseline and reconnects in the background.

Flags:
`

// proxyConfig is the parsed command line of verdict proxy.
type proxyConfig struct {
	rollout, listen, metrics   string
	baseline, canary           *url.URL
	unitHeader, unitCookie     string
	overrideHeader             string
	natsURL, creds, bucket     string
	batch, queue               int
	batchInterval, stopTimeout time.Duration
}

func parseProxyFlags(args []string, stderr io.Writer) (proxyConfig, error) {
	var c proxyConfig
	var base, canary string
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.rollout, "rollout", "", "rollout `ID` whose route splits the traffic (required)")
	fs.StringVar(&c.listen, "listen", ":8080", "`address` to serve on")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on /metrics at this `address` (off when empty)")
	fs.StringVar(&base, "baseline", "", "baseline backend `URL` (required)")
	fs.StringVar(&canary, "canary", "", "canary backend `URL` (required)")
	fs.StringVar(&c.unitHeader, "unit-header", "", "request `header` carrying the unit (user or session id)")
	fs.StringVar(&c.unitCookie, "unit-cookie", "", "cookie `name` carrying the unit, when the header is absent")
	fs.StringVar(&c.overrideHeader, "override-header", router.DefaultOverrideHeader, "request `header` forcing a version (baseline|canary); \"\" disables")
	fs.StringVar(&c.natsURL, "nats", "nats://127.0.0.1:4222", "NATS server `URL`")
	fs.StringVar(&c.creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(&c.bucket, "bucket", router.DefaultRoutesBucket, "routes KV `bucket`")
	fs.IntVar(&c.batch, "batch", 0, "publish one batch per `N` requests of a variant; 0 publishes one event per request")
	fs.DurationVar(&c.batchInterval, "batch-interval", time.Second, "with --batch, publish partial batches at least this often")
	fs.IntVar(&c.queue, "queue", 8192, "telemetry queue `size`; requests beyond it are dropped and counted")
	fs.DurationVar(&c.stopTimeout, "shutdown-timeout", 10*time.Second, "on shutdown, wait this long for requests and telemetry")
	fs.Usage = func() { fmt.Fprint(stderr, proxyUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var problems []error
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if !telemetry.ValidRollout(c.rollout) {
		problems = append(problems, fmt.Errorf("--rollout %q: want [A-Za-z0-9_-]{1,64}", c.rollout))
	}
	var err error
	if c.baseline, err = backendURL("baseline", base); err != nil {
		problems = append(problems, err)
	}
	if c.canary, err = backendURL("canary", canary); err != nil {
		problems = append(problems, err)
	}
	if c.batch < 0 || c.queue < 1 || c.batchInterval <= 0 {
		problems = append(problems, errors.New("--batch must be >= 0, --queue >= 1, --batch-interval > 0"))
	}
	if len(problems) > 0 {
		return c, errors.Join(problems...)
	}
	return c, nil
}

func backendURL(name, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--%s %q: want an http:// or https:// URL", name, s)
	}
	return u, nil
}

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parseProxyFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "verdict proxy: %v\n\nRun 'verdict proxy -h' for usage.\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := proxy(ctx, c, logger); err != nil {
		fmt.Fprintln(stderr, "verdict proxy:", err)
		return 1
	}
	return 0
}

// proxy serves until ctx ends, then shuts down in order: stop accepting
// and finish requests in flight, flush telemetry, stop watching routes,
// drain the connection.
func proxy(ctx context.Context, c proxyConfig, logger *slog.Logger) (err error) {
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	nc, err := proxyConnect(c.natsURL, c.creds, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	routesCtx, stopRoutes := context.WithCancel(context.WithoutCancel(ctx))
	table := router.NewTable(js, router.TableOptions{Bucket: c.bucket, Logger: logger})
	routesDone := make(chan error, 1)
	go func() { routesDone <- table.Run(routesCtx) }()
	defer func() { stopRoutes(); <-routesDone }()

	emitter, err := router.NewEmitter(nc, router.EmitterOptions{
		Batch: c.batch, Interval: c.batchInterval, QueueSize: c.queue, Logger: logger,
	})
	if err != nil {
		return err
	}
	p, err := router.NewProxy(table, emitter, router.ProxyOptions{
		Rollout: c.rollout, Baseline: c.baseline, Canary: c.canary,
		UnitHeader: c.unitHeader, UnitCookie: c.unitCookie, OverrideHeader: c.overrideHeader,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	})
	if err != nil {
		_ = emitter.Close(context.Background())
		return err
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	if c.metrics != "" {
		msrv, err := serveMetrics(c.metrics, router.NewCollector(emitter, table), served, logger)
		if err != nil {
			_ = srv.Close()
			_ = emitter.Close(context.Background())
			return err
		}
		defer msrv.Close()
	}
	logger.Info("proxy listening", "addr", ln.Addr().String(), "rollout", c.rollout,
		"baseline", c.baseline.Redacted(), "canary", c.canary.Redacted(), "nats", c.natsURL)
	go func() {
		select {
		case <-table.Ready():
			r, ok := table.Route(c.rollout)
			logger.Info("routes loaded", "rollout", c.rollout, "known", ok, "weight", r.CanaryWeight(), "state", r.State)
		case <-routesCtx.Done():
		}
	}()

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("serve: %w", err)
	}
	stop, cancel := context.WithTimeout(context.Background(), c.stopTimeout)
	defer cancel()
	if serr := srv.Shutdown(stop); serr != nil {
		err = errors.Join(err, fmt.Errorf("shutdown: %w", serr))
	}
	if cerr := emitter.Close(stop); cerr != nil {
		err = errors.Join(err, cerr)
	}
	s := emitter.Stats()
	logger.Info("proxy stopped", "queued", s.Queued, "emitted", s.Emitted, "dropped", s.Dropped,
		"overridden", s.Overridden, "publish_errors", s.Errors)
	return err
}

// serveMetrics serves the router's metrics (and the Go runtime's) on
// addr/metrics; a serving error is sent on errs.
func serveMetrics(addr string, c prometheus.Collector, errs chan<- error, logger *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("metrics: %w", err)
		}
	}()
	logger.Info("metrics listening", "addr", ln.Addr().String())
	return srv, nil
}

// proxyConnect connects to NATS for a router: it starts even when NATS is
// down (serving the baseline) and reconnects for ever.
func proxyConnect(url, creds string, logger *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("verdict proxy"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected; keeping the last known routes", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { logger.Error("nats error", "err", err) }),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return nc, nil
}
