package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("rollout", command{summary: "start, pause, resume, abort a rollout, or show status", run: runRollout})
}

const rolloutUsage = `Usage:
  verdict rollout start ID --policy P --baseline V1 --canary V2 [--nats URL]
  verdict rollout status [ID] [--json] [--nats URL]
  verdict rollout pause ID [--nats URL]
  verdict rollout resume ID [--nats URL]
  verdict rollout abort ID [--nats URL]

Writes a rollout's desired state to KV verdict_rollouts; the engine picks it
up at once (and after a restart). A rollout id matches [A-Za-z0-9_-]{1,64} and
is used once: start a new id for a new canary. pause stops promotions (a
rollback still happens), resume lets it advance again, abort sends all traffic
to the baseline and ends the rollout. status prints every rollout (or one)
with its state, step, weight and each metric's estimate and interval.

Flags:
`

// clientFlags are the connection flags of the client commands.
type clientFlags struct {
	url, creds, user, password, tlsCert, tlsKey, tlsCA string
	timeout                                            time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "nats", "nats://127.0.0.1:4222", "NATS server `URL`")
	addAuthFlags(fs, &c.creds, &c.user, &c.password, &c.tlsCert, &c.tlsKey, &c.tlsCA)
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up after this long")
}

func (c *clientFlags) connect(stderr io.Writer) (*nats.Conn, jetstream.JetStream, error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts, err := connectOptions(c.creds, c.user, c.password, c.tlsCert, c.tlsKey, c.tlsCA, log)
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, nats.MaxReconnects(0), nats.Timeout(c.timeout))
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w (is `verdict serve` running?)", c.url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runRollout(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rollout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	pol := fs.String("policy", "", "policy `name` (start)")
	base := fs.String("baseline", "", "baseline version (start)")
	canary := fs.String("canary", "", "canary version (start)")
	asJSON := fs.Bool("json", false, "print JSON (status)")
	fs.Usage = func() { fmt.Fprint(stderr, rolloutUsage); fs.PrintDefaults() }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "verdict rollout: %s\n\n", msg)
		fs.Usage()
		return 2
	}
	if len(pos) == 0 {
		return usageErr("missing subcommand")
	}
	sub, rest := pos[0], pos[1:]
	var id string
	switch sub {
	case "start", "pause", "resume", "abort":
		if len(rest) != 1 {
			return usageErr(sub + " takes one rollout id")
		}
		id = rest[0]
	case "status":
		if len(rest) > 1 {
			return usageErr("status takes at most one rollout id")
		}
		if len(rest) == 1 {
			id = rest[0]
		}
	default:
		return usageErr(fmt.Sprintf("unknown subcommand %q", sub))
	}
	if id != "" && !telemetry.ValidRollout(id) {
		return usageErr(fmt.Sprintf("rollout id %q must match [A-Za-z0-9_-]{1,64}", id))
	}
	if sub == "start" && (*pol == "" || *base == "" || *canary == "") {
		return usageErr("start needs --policy, --baseline and --canary")
	}
	nc, js, err := c.connect(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "verdict rollout:", err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	act, err := actuator.New(js, actuator.DefaultConfig())
	if err != nil {
		fmt.Fprintln(stderr, "verdict rollout:", err)
		return 1
	}
	switch sub {
	case "start":
		err = startRollout(ctx, act, engine.Spec{Rollout: id, Policy: *pol, Baseline: *base, Canary: *canary})
		if err == nil {
			fmt.Fprintf(stdout, "rollout %s started: %s -> %s under policy %s\n", id, *base, *canary, *pol)
		}
	case "pause", "resume", "abort":
		err = act.UpdateSpec(ctx, id, func(s *engine.Spec) error {
			switch sub {
			case "pause":
				s.Paused = true
			case "resume":
				s.Paused = false
			case "abort":
				s.Abort = true
			}
			return nil
		})
		if errors.Is(err, actuator.ErrNotFound) {
			err = fmt.Errorf("no rollout %q", id)
		}
		if err == nil {
			fmt.Fprintf(stdout, "rollout %s: %s requested\n", id, sub)
		}
	case "status":
		err = rolloutStatus(ctx, act, id, *asJSON, stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "verdict rollout:", err)
		return 1
	}
	return 0
}

func startRollout(ctx context.Context, act *actuator.Actuator, s engine.Spec) error {
	if _, _, err := act.GetSpec(ctx, s.Rollout); err == nil {
		return fmt.Errorf("rollout %s already exists; a rollout id is used once, start a new one", s.Rollout)
	} else if !errors.Is(err, actuator.ErrNotFound) {
		return err
	}
	return act.PutSpec(ctx, s)
}

func rolloutStatus(ctx context.Context, act *actuator.Actuator, id string, asJSON bool, w io.Writer) error {
	specs, err := act.Specs(ctx)
	if err != nil {
		return err
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Rollout < specs[j].Rollout })
	type row struct {
		spec   engine.Spec
		status engine.Status
		known  bool
	}
	var rows []row
	for _, s := range specs {
		if id != "" && s.Rollout != id {
			continue
		}
		r := row{spec: s}
		if data, err := act.LoadState(ctx, s.Rollout); err == nil {
			if st, err := engine.DecodeStatus(data); err == nil {
				r.status, r.known = st, true
			}
		}
		if !r.known {
			if rt, err := act.Route(ctx, s.Rollout); err == nil {
				r.status, r.known = engine.Status{Route: rt}, true
			}
		}
		rows = append(rows, r)
	}
	if id != "" && len(rows) == 0 {
		return fmt.Errorf("no rollout %q", id)
	}
	if asJSON {
		type out struct {
			Spec    engine.Spec  `json:"spec"`
			Route   engine.Route `json:"route"`
			Metrics any          `json:"metrics"`
		}
		enc := json.NewEncoder(w)
		for _, r := range rows {
			o := out{Spec: r.spec, Route: r.status.Route, Metrics: r.status.Metrics}
			if !r.known {
				o.Route = engine.Route{Rollout: r.spec.Rollout, State: engine.StatePending}
			}
			if o.Metrics == nil {
				o.Metrics = []any{}
			}
			if err := enc.Encode(o); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLLOUT\tPOLICY\tBASELINE\tCANARY\tSTATE\tSTEP\tWEIGHT\tDECISIONS")
	for _, r := range rows {
		state, step, weight := "pending", "-", "0%"
		if r.known {
			state = r.status.Route.State.String()
			step = fmt.Sprint(r.status.Route.Step + 1)
			weight = fmtWeight(r.status.Route.Weight) + "%"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.spec.Rollout, r.spec.Policy,
			r.spec.Baseline, r.spec.Canary, state, step, weight, r.status.Route.Seq)
	}
	tw.Flush()
	for _, r := range rows {
		if len(r.status.Metrics) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", r.spec.Rollout)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  METRIC\tBASELINE\tCANARY\tCANARY/BASELINE\tINTERVAL\tE-VALUE\tSAMPLES")
		for _, m := range r.status.Metrics {
			fmt.Fprintf(tw, "  %s\t%.4g\t%.4g\t%.3fx\t[%.3fx, %.3fx]\t%.3g\t%d / %d\n", m.Name, m.Baseline, m.Canary,
				m.Estimate, m.Lower, m.Upper, m.EValue, m.Samples.Baseline, m.Samples.Canary)
		}
		tw.Flush()
	}
	return nil
}

// fmtDecision is the one-line, human-readable form of a decision.
func fmtDecision(ev engine.CloudEvent) string {
	d := ev.Data
	return fmt.Sprintf("%s %s #%d %-8s step %d  %s%% -> %s%%  %s",
		ev.Time.UTC().Format(time.RFC3339), d.Rollout, d.Seq, d.Action, d.Step+1,
		fmtWeight(d.PreviousWeight), fmtWeight(d.Weight), strings.TrimSpace(d.Reason))
}
