package main

import (
	"bytes"
	"cmp"
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
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"

	"github.com/verdict-dev/verdict/router"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("proxy", command{summary: "reverse proxy that splits traffic by the engine's weights", run: runProxy})
}

const proxyUsage = `Usage: verdict proxy --rollout ID --baseline URL --canary URL [flags]
       verdict proxy --config FILE [flags]

An HTTP reverse proxy for rollouts. It watches the rollouts' routes in KV
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

With --config, one proxy serves several rollouts, chosen by host and path
prefix (paths are forwarded unchanged; unmatched requests get 404):

  services:
    - rollout: checkout-42
      host: shop.example.com     # optional; any host when absent
      pathPrefix: /checkout      # optional; "/" when absent
      baseline: http://checkout-v41:8080
      canary: http://checkout-v42:8080
      unitHeader: X-User-Id      # optional; default --unit-header
      unitCookie: uid            # optional; default --unit-cookie

Ctrl-C (SIGINT) or SIGTERM stops accepting requests, finishes those in
flight, publishes the remaining telemetry and exits 0. The exit status is 1
on a runtime error (for example the listen address is taken, or the
telemetry could not all be published before --shutdown-timeout) and 2 on a
usage error, including a bad --config file. The proxy starts even when NATS
is unreachable: it serves the baseline and reconnects in the background.

Flags:
`

// proxyConfig is the parsed command line of verdict proxy.
type proxyConfig struct {
	listen, metrics            string
	overrideHeader             string
	natsURL, creds, bucket     string
	batch, queue               int
	batchInterval, stopTimeout time.Duration
	services                   []proxyService
}

// proxyService is one rollout behind the proxy: from the flags, or one
// entry of the --config file.
type proxyService struct {
	Rollout    string `yaml:"rollout"`
	Host       string `yaml:"host"`
	PathPrefix string `yaml:"pathPrefix"`
	Baseline   string `yaml:"baseline"`
	Canary     string `yaml:"canary"`
	UnitHeader string `yaml:"unitHeader"`
	UnitCookie string `yaml:"unitCookie"`

	baseline, canary *url.URL
}

// proxyFile is the --config file.
type proxyFile struct {
	Services []proxyService `yaml:"services"`
}

func parseProxyFlags(args []string, stderr io.Writer) (proxyConfig, error) {
	var c proxyConfig
	var one proxyService
	var configFile string
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&one.Rollout, "rollout", "", "rollout `ID` whose route splits the traffic (required without --config)")
	fs.StringVar(&one.Baseline, "baseline", "", "baseline backend `URL` (required without --config)")
	fs.StringVar(&one.Canary, "canary", "", "canary backend `URL` (required without --config)")
	fs.StringVar(&configFile, "config", "", "YAML or JSON `file` listing several services (instead of --rollout, --baseline, --canary)")
	fs.StringVar(&c.listen, "listen", ":8080", "`address` to serve on")
	fs.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics on /metrics at this `address` (off when empty)")
	fs.StringVar(&one.UnitHeader, "unit-header", "", "request `header` carrying the unit (user or session id)")
	fs.StringVar(&one.UnitCookie, "unit-cookie", "", "cookie `name` carrying the unit, when the header is absent")
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
	if c.batch < 0 || c.queue < 1 || c.batchInterval <= 0 {
		problems = append(problems, errors.New("--batch must be >= 0, --queue >= 1, --batch-interval > 0"))
	}
	if configFile == "" {
		c.services = []proxyService{one}
	} else if one.Rollout != "" || one.Baseline != "" || one.Canary != "" {
		problems = append(problems, errors.New("--config replaces --rollout, --baseline and --canary"))
	} else {
		services, err := readProxyFile(configFile)
		if err != nil {
			problems = append(problems, err)
		}
		for i := range services {
			services[i].UnitHeader = cmp.Or(services[i].UnitHeader, one.UnitHeader)
			services[i].UnitCookie = cmp.Or(services[i].UnitCookie, one.UnitCookie)
		}
		c.services = services
	}
	for i := range c.services {
		problems = append(problems, c.services[i].check(configFile, i)...)
	}
	if len(problems) > 0 {
		return c, errors.Join(problems...)
	}
	return c, nil
}

// readProxyFile reads the --config file, strictly: unknown fields are errors.
func readProxyFile(name string) ([]proxyService, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f proxyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(f.Services) == 0 {
		return nil, fmt.Errorf("%s: no services", name)
	}
	return f.Services, nil
}

// check validates s and parses its URLs; where names the flag or the
// config entry in messages.
func (s *proxyService) check(file string, i int) []error {
	where := func(field string) string {
		if file == "" {
			return "--" + field
		}
		return fmt.Sprintf("%s: services[%d].%s", file, i, field)
	}
	var problems []error
	if !telemetry.ValidRollout(s.Rollout) {
		problems = append(problems, fmt.Errorf("%s %q: want [A-Za-z0-9_-]{1,64}", where("rollout"), s.Rollout))
	}
	var err error
	if s.baseline, err = backendURL(where("baseline"), s.Baseline); err != nil {
		problems = append(problems, err)
	}
	if s.canary, err = backendURL(where("canary"), s.Canary); err != nil {
		problems = append(problems, err)
	}
	if s.PathPrefix != "" && !strings.HasPrefix(s.PathPrefix, "/") {
		problems = append(problems, fmt.Errorf("%s %q: must start with /", where("pathPrefix"), s.PathPrefix))
	}
	return problems
}

func backendURL(where, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want an http:// or https:// URL", where, s)
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
	handler, err := proxyHandler(table, emitter, c, logger)
	if err != nil {
		_ = emitter.Close(context.Background())
		return err
	}
	srv := &http.Server{
		Handler:           handler,
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
	logger.Info("proxy listening", "addr", ln.Addr().String(), "services", len(c.services), "nats", c.natsURL)
	for _, s := range c.services {
		logger.Info("service", "rollout", s.Rollout, "host", s.Host, "pathPrefix", s.PathPrefix,
			"baseline", s.baseline.Redacted(), "canary", s.canary.Redacted())
	}
	go func() {
		select {
		case <-table.Ready():
			for _, s := range c.services {
				r, ok := table.Route(s.Rollout)
				logger.Info("routes loaded", "rollout", s.Rollout, "known", ok, "weight", r.CanaryWeight(), "state", r.State)
			}
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

// proxyHandler is one Proxy for a single service on every path, or a Mux.
func proxyHandler(t *router.Table, e *router.Emitter, c proxyConfig, logger *slog.Logger) (http.Handler, error) {
	errorLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	services := make([]router.Service, len(c.services))
	for i, s := range c.services {
		services[i] = router.Service{Host: s.Host, PathPrefix: s.PathPrefix, Options: router.ProxyOptions{
			Rollout: s.Rollout, Baseline: s.baseline, Canary: s.canary,
			UnitHeader: s.UnitHeader, UnitCookie: s.UnitCookie, OverrideHeader: c.overrideHeader,
			ErrorLog: errorLog,
		}}
	}
	if len(services) == 1 && services[0].Host == "" && services[0].PathPrefix == "" {
		return router.NewProxy(t, e, services[0].Options)
	}
	return router.NewMux(t, e, services)
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
