// Command suite is Verdict's process-level fault-injection suite, run by
// `make faults`. It starts a real nats-server and `verdict serve --nats`
// as separate processes, publishes recorded traces, injects faults
// (SIGKILL of the engine at random and at critical points, a NATS server
// restart, duplicates, malformed messages, a canary that goes silent) and
// checks that the decision log equals, byte for byte, what an
// uninterrupted, offline run of the same state machine decides, and that
// every rollout counted exactly the distinct events it was sent.
//
// It prints one summary line and exits 1 on any difference.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.verdict, "verdict", "bin/verdict", "the verdict `binary`")
	flag.StringVar(&o.natsServer, "nats-server", "bin/nats-server", "the nats-server `binary`")
	flag.StringVar(&o.policy, "policy", "testdata/replay/policy.yaml", "policy `file` of the traces")
	flag.StringVar(&o.traces, "traces", "testdata/replay/bad-events.jsonl,testdata/replay/good-batches.jsonl", "comma-separated `traces` (JSON lines, one rollout each)")
	flag.IntVar(&o.minKills, "kills", 20, "at least this many engine kills in the kill scenario")
	flag.Uint64Var(&o.seed, "seed", uint64(time.Now().UnixNano()), "random `seed` of kill times and duplicates")
	flag.StringVar(&o.only, "run", "", "run only the scenarios whose name matches this `regexp`")
	flag.BoolVar(&o.verbose, "v", false, "say what happens")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs and stores of a successful run")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
}

type options struct {
	verdict, natsServer, policy, traces, only string
	minKills                                  int
	seed                                      uint64
	verbose, keep                             bool
}

// scenario is one run on a fresh server.
type scenario struct {
	name          string
	rate          int     // events per second published
	kills         bool    // SIGKILL the engine at random and at critical points
	serverRestart bool    // restart nats-server mid-rollout
	dupFrac       float64 // share of events sent a second time
	corpus        bool    // interleave malformed messages
	cutCanary     bool    // drop canary events after cutAt
	backlog       bool    // publish everything while the engine is down, then start it
	late          bool    // send some events far out of order, later than the lateness window
}

// tally adds up what the scenarios did.
type tally struct {
	kills, critical, restarts int
	lost, double              int64
	dups, dupsDropped         int
	bad                       int
	late                      int64
	peakRSS                   map[string]int64 // KiB, VmHWM of the last engine process
	backlogDrain              time.Duration    // from engine start to an empty consumer
	diffs                     []string
}

func run(o options) error {
	for _, p := range []string{o.verdict, o.natsServer} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (run make build bin/nats-server)", p, err)
		}
	}
	verdict, _ := filepath.Abs(o.verdict)
	natsBin, _ := filepath.Abs(o.natsServer)
	tr, err := loadTraces(o.policy, strings.Split(o.traces, ","))
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "verdict-faults-")
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(o.seed, 1))
	scenarios := []scenario{
		{name: "uninterrupted", rate: 6000},
		{name: "kills", rate: 900, kills: true},
		{name: "server-restart", rate: 1500, serverRestart: true},
		{name: "duplicates", rate: 6000, dupFrac: 0.3},
		{name: "malformed", rate: 6000, corpus: true},
		{name: "canary-stop", rate: 6000, cutCanary: true},
		{name: "backlog", rate: 20000, backlog: true},
		{name: "late", rate: 6000, late: true},
	}
	t := tally{peakRSS: map[string]int64{}}
	start := time.Now()
	ctx := context.Background()
	for _, sc := range scenarios {
		if ok, _ := regexp.MatchString(o.only, sc.name); !ok {
			continue
		}
		began := time.Now()
		r := &runner{o: &o, sc: sc, tr: tr, rng: rng, t: &t, verdict: verdict, natsBin: natsBin,
			dir: filepath.Join(root, sc.name)}
		n := len(t.diffs)
		err := r.run(ctx)
		if err != nil {
			t.diffs = append(t.diffs, fmt.Sprintf("%s: %v", sc.name, err))
		}
		status := "ok"
		if len(t.diffs) > n {
			status = "FAILED"
		}
		fmt.Printf("faults: %-15s %s in %s (engine peak RSS %d MiB)\n", sc.name, status,
			time.Since(began).Round(100*time.Millisecond), t.peakRSS[sc.name]>>10)
		for _, d := range t.diffs[n:] {
			fmt.Println("  ", d)
		}
	}
	if t.backlogDrain > 0 {
		fmt.Printf("faults: backlog of %d messages consumed in %s by a starting engine (%.0f msg/s)\n",
			len(tr.events), t.backlogDrain.Round(10*time.Millisecond), float64(len(tr.events))/t.backlogDrain.Seconds())
	}
	verdictWord := "decisions identical"
	if len(t.diffs) > 0 {
		verdictWord = fmt.Sprintf("%d differences", len(t.diffs))
	}
	fmt.Printf("faults: %d kills (%d at critical points), %d server restart, %d duplicates sent (%d dropped by JetStream), %d malformed dead-lettered, %d late counted, %d lost, %d double-counted, %s (%s, seed %d)\n",
		t.kills, t.critical, t.restarts, t.dups, t.dupsDropped, t.bad, t.late, t.lost, t.double, verdictWord,
		time.Since(start).Round(time.Second), o.seed)
	if len(t.diffs) > 0 {
		return errors.New("the engine did not survive every fault; logs under " + root)
	}
	if o.keep {
		fmt.Println("faults: logs and stores kept in", root)
		return nil
	}
	_ = os.RemoveAll(root)
	return nil
}
