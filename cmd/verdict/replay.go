package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

func init() {
	register("replay", command{
		summary: "print the decisions a policy would have made on recorded events",
		run:     runReplay,
	})
}

const replayUsage = `Usage: verdict replay --policy FILE [--name NAME] EVENTS.jsonl

Runs the rollout state machine offline over recorded telemetry (JSON lines in
the event or batch format, ordered by time) and prints the decisions as JSON
lines, in CloudEvents form, exactly as serve would publish them. Each rollout
found in the events starts at its first event's time. The output is the same,
byte for byte, on every run. Lines that are not valid telemetry are reported
on stderr with their line number and skipped. Use - to read standard input.

Flags:
`

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	polFile := fs.String("policy", "", "policy `FILE` (YAML)")
	name := fs.String("name", "", "policy `NAME` to use when the file holds several")
	fs.Usage = func() { fmt.Fprint(stderr, replayUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *polFile == "" || fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	pol, err := loadOnePolicy(*polFile, *name)
	if err != nil {
		fmt.Fprintln(stderr, "verdict replay:", err)
		return 1
	}
	in, closeIn, err := openInput(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "verdict replay:", err)
		return 1
	}
	defer closeIn()
	r := &replayer{pol: pol, machines: map[string]*engine.Machine{}}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	bad, err := r.run(in, func(d engine.Decision) error {
		return enc.Encode(d.CloudEvent(d.At))
	}, func(line int, err error) {
		fmt.Fprintf(stderr, "%s:%d: %v\n", fs.Arg(0), line, err)
	})
	if err != nil {
		fmt.Fprintln(stderr, "verdict replay:", err)
		return 1
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "verdict replay: skipped %d invalid lines\n", bad)
	}
	return 0
}

// replayer drives one Machine per rollout over a telemetry file.
type replayer struct {
	pol      *policy.Policy
	machines map[string]*engine.Machine
}

// run reads JSON lines from in and passes every decision to emit, in order.
// Invalid lines go to bad; it returns how many there were.
func (r *replayer) run(in io.Reader, emit func(engine.Decision) error, bad func(line int, err error)) (int, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	n, skipped := 0, 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		rec, err := telemetry.Decode(line)
		if err == nil && rec.Time.IsZero() {
			err = errors.New("replay needs the event time")
		}
		if err != nil {
			skipped++
			bad(n, err)
			continue
		}
		m, ds, err := r.machine(&rec)
		if err != nil {
			return skipped, err
		}
		ds = append(ds, m.ObserveRecord(rec.Time, &rec)...)
		for _, d := range ds {
			if err := emit(d); err != nil {
				return skipped, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return skipped, fmt.Errorf("line %d: %w", n+1, err)
	}
	return skipped, nil
}

func (r *replayer) machine(rec *telemetry.Record) (*engine.Machine, []engine.Decision, error) {
	if m := r.machines[rec.Rollout]; m != nil {
		return m, nil, nil
	}
	m, err := engine.NewMachine(engine.Spec{Rollout: rec.Rollout, Policy: r.pol.Name}, r.pol)
	if err != nil {
		return nil, nil, err
	}
	r.machines[rec.Rollout] = m
	return m, m.Start(rec.Time), nil
}

// loadOnePolicy reads a policy file; name picks one when it holds several.
func loadOnePolicy(file, name string) (*policy.Policy, error) {
	set, err := policy.Load(file)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if p := set[name]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("%s: no policy named %q", file, name)
	}
	if len(set) != 1 {
		return nil, fmt.Errorf("%s holds %d policies; pick one with --name", file, len(set))
	}
	for _, p := range set {
		return p, nil
	}
	return nil, nil
}

func openInput(path string) (io.Reader, func(), error) {
	if path == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}
