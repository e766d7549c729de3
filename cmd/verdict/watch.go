package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("watch", command{summary: "follow decisions as they are made", run: runWatch})
}

const watchUsage = `Usage: verdict watch [ROLLOUT] [--json] [--new] [--nats URL]

Follows the decisions stream (verdict.decisions.<rollout>), one line per
decision: time, rollout, sequence number, action, step, weight change and the
reason. With ROLLOUT only that rollout's decisions are shown. By default the
decisions already made are printed first; --new shows only new ones. --json
prints the raw CloudEvents, one per line. Stops on Ctrl-C.

Flags:
`

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	asJSON := fs.Bool("json", false, "print the raw CloudEvents as JSON lines")
	onlyNew := fs.Bool("new", false, "only decisions made from now on")
	fs.Usage = func() { fmt.Fprint(stderr, watchUsage); fs.PrintDefaults() }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(pos) > 1 || (len(pos) == 1 && !telemetry.ValidRollout(pos[0])) {
		fs.Usage()
		return 2
	}
	filter := "verdict.decisions.>"
	if len(pos) == 1 {
		filter = "verdict.decisions." + pos[0]
	}
	nc, js, err := c.connect(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "verdict watch:", err)
		return 1
	}
	defer nc.Close()
	if err := watch(ctx, js, filter, *onlyNew, *asJSON, stdout); err != nil {
		fmt.Fprintln(stderr, "verdict watch:", err)
		return 1
	}
	return 0
}

// watch prints decisions on the filter subject until ctx ends.
func watch(ctx context.Context, js jetstream.JetStream, filter string, onlyNew, asJSON bool, w io.Writer) error {
	policy := jetstream.DeliverAllPolicy
	if onlyNew {
		policy = jetstream.DeliverNewPolicy
	}
	cons, err := js.OrderedConsumer(ctx, "VERDICT_DECISIONS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  policy,
	})
	if err != nil {
		return fmt.Errorf("follow decisions: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		if asJSON {
			fmt.Fprintf(w, "%s\n", msg.Data())
			continue
		}
		var ev engine.CloudEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			fmt.Fprintf(w, "(undecodable decision on %s: %v)\n", msg.Subject(), err)
			continue
		}
		fmt.Fprintln(w, fmtDecision(ev))
	}
}
