package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/faults"
	"github.com/verdict-dev/verdict/ingest"
)

// runner runs one scenario: its own nats-server, engine processes and
// checks.
type runner struct {
	o                *options
	sc               scenario
	tr               *traces
	rng              *rand.Rand
	t                *tally
	verdict, natsBin string
	dir              string

	port, metricsPort int
	ns                *exec.Cmd
	nsDone            chan struct{}
	eng               *proc
	nengines          int
	drainedAt         time.Time // when waitDrained first saw nothing pending
	nc                *nats.Conn
	js                jetstream.JetStream
}

// proc is a running engine process.
type proc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	crashEnv string // VERDICT_CRASH_AT it runs with, or ""
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// selfKilled reports whether the process died of the SIGKILL it sent itself.
func (p *proc) selfKilled() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func (r *runner) logf(format string, args ...any) {
	if r.o.verbose {
		fmt.Printf("  %s: %s\n", r.sc.name, fmt.Sprintf(format, args...))
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (r *runner) run(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	pdir := filepath.Join(r.dir, "policies")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return err
	}
	pol, err := os.ReadFile(r.tr.polFile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pdir, "policy.yaml"), pol, 0o644); err != nil {
		return err
	}
	r.port, r.metricsPort = freePort(), freePort()
	if err := r.startServer(); err != nil {
		return err
	}
	defer r.stopServer(syscall.SIGKILL)
	r.nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", r.port),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer r.nc.Close()
	r.js, err = jetstream.New(r.nc)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := ingest.Setup(sctx, r.js, ingest.Config{}); err != nil {
		return err
	}
	if err := actuator.Setup(sctx, r.js, actuator.Config{}); err != nil {
		return err
	}
	act, err := actuator.New(r.js, actuator.Config{})
	if err != nil {
		return err
	}
	for _, id := range r.tr.rollouts {
		if err := act.PutSpec(sctx, engine.Spec{Rollout: id, Policy: r.tr.pol.Name, Baseline: "v1", Canary: "v2"}); err != nil {
			return err
		}
	}

	evs := r.tr.events
	var cutAt time.Time
	if r.sc.cutCanary {
		evs, cutAt = r.tr.cutCanary(evs)
	}
	if r.sc.late {
		evs = delay(evs)
	}
	want, err := r.tr.expect(evs)
	if err != nil {
		return err
	}

	if err := r.startEngine(""); err != nil {
		return err
	}
	defer func() {
		if r.eng != nil && !r.eng.exited() {
			_ = r.eng.cmd.Process.Kill()
			<-r.eng.done
		}
	}()
	for _, id := range r.tr.rollouts {
		if err := r.waitRoute(ctx, act, id, func(rt engine.Route) bool { return rt.Seq >= 1 }, 30*time.Second); err != nil {
			return err
		}
	}

	published := make(chan error, 1)
	pctx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	var corpus []badMsg
	if r.sc.corpus {
		corpus = malformed(r.tr.rollouts[0])
	}
	if r.sc.backlog {
		// The whole trace arrives while no engine runs: a storm far above
		// the steady rate, held by the stream.
		_ = r.eng.cmd.Process.Signal(syscall.SIGTERM)
		<-r.eng.done
		if err := r.publish(pctx, evs, corpus); err != nil {
			return err
		}
		if err := r.startEngine(""); err != nil {
			return err
		}
		published <- nil
	} else {
		go func() { published <- r.publish(pctx, evs, corpus) }()
	}

	var pubErr error
	switch {
	case r.sc.kills:
		pubErr = r.killLoop(published)
	case r.sc.serverRestart:
		pubErr = r.restartLoop(published)
	default:
		pubErr = <-published
	}
	if pubErr != nil {
		return fmt.Errorf("publish: %w", pubErr)
	}
	// A clean engine finishes the work.
	if r.eng.exited() || r.eng.crashEnv != "" {
		if !r.eng.exited() {
			_ = r.eng.cmd.Process.Kill()
			<-r.eng.done
			r.t.kills++
		}
		if err := r.startEngine(""); err != nil {
			return err
		}
	}
	drainFrom := time.Now()
	if err := r.waitDrained(ctx, 60*time.Second); err != nil {
		return err
	}
	if r.sc.backlog {
		r.t.backlogDrain = r.drainedAt.Sub(drainFrom)
	}
	var metrics string
	if r.sc.corpus || r.sc.late {
		metrics, err = r.scrape()
		if err != nil {
			return err
		}
	}
	r.t.peakRSS[r.sc.name] = peakRSS(r.eng.cmd.Process.Pid)
	// SIGTERM: the engine checkpoints every rollout on its way out.
	_ = r.eng.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.eng.done:
	case <-time.After(30 * time.Second):
		return errors.New("engine did not stop within 30s of SIGTERM")
	}
	if !r.eng.cmd.ProcessState.Success() {
		return fmt.Errorf("engine exited with %v after SIGTERM (log %s)", r.eng.cmd.ProcessState, r.logFile(r.nengines))
	}
	r.check(ctx, act, want, cutAt)
	if r.sc.corpus {
		r.checkCorpus(ctx, corpus, metrics)
	}
	if r.sc.late {
		got := counter(metrics, "verdict_engine_late_events_total ")
		if got != want.late || got == 0 {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("late events counter %d, want %d (> 0)", got, want.late))
		}
		r.t.late += got
	}
	return nil
}

func (r *runner) startServer() error {
	sd := filepath.Join(r.dir, "jetstream")
	log, err := os.OpenFile(filepath.Join(r.dir, "nats-server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.natsBin, "-js", "-sd", sd, "-a", "127.0.0.1", "-p", strconv.Itoa(r.port), "-n", "faults")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	r.ns, r.nsDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(r.nsDone) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("nats-server did not listen within 10s")
}

func (r *runner) stopServer(sig syscall.Signal) {
	if r.ns == nil {
		return
	}
	_ = r.ns.Process.Signal(sig)
	<-r.nsDone
	r.ns = nil
}

func (r *runner) logFile(n int) string {
	return filepath.Join(r.dir, fmt.Sprintf("engine-%02d.log", n))
}

// startEngine runs `verdict serve --nats` with the clock fixed at the
// traces' start; crashEnv, when set, is its VERDICT_CRASH_AT.
func (r *runner) startEngine(crashEnv string) error {
	r.nengines++
	log, err := os.Create(r.logFile(r.nengines))
	if err != nil {
		return err
	}
	cmd := exec.Command(r.verdict, "serve", "--nats", fmt.Sprintf("nats://127.0.0.1:%d", r.port),
		"--policies", filepath.Join(r.dir, "policies"), "--engine-id", "faults", "--lease-ttl", "5s",
		"--metrics", fmt.Sprintf("127.0.0.1:%d", r.metricsPort), "--log-level", "debug")
	cmd.Env = append(os.Environ(), "VERDICT_TEST_NOW="+r.tr.start.Format(time.RFC3339Nano))
	if crashEnv != "" {
		cmd.Env = append(cmd.Env, "VERDICT_CRASH_AT="+crashEnv)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), crashEnv: crashEnv}
	go func() { _ = cmd.Wait(); log.Close(); close(p.done) }()
	r.eng = p
	r.logf("engine %d started %s", r.nengines, crashEnv)
	return nil
}

// publish sends evs at the scenario's rate, each with its Nats-Msg-Id,
// retrying through outages; dupFrac of them are sent again a little
// later, and the corpus is spread over the run.
func (r *runner) publish(ctx context.Context, evs []event, corpus []badMsg) error {
	every := time.Second / time.Duration(r.sc.rate)
	start := time.Now()
	var dups []int
	badEvery := 0
	if len(corpus) > 0 {
		badEvery = len(evs) / (len(corpus) + 1)
	}
	nbad := 0
	for i := range evs {
		if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		if _, err := r.send(ctx, evs[i]); err != nil {
			return err
		}
		if r.sc.dupFrac > 0 && r.rng.Float64() < r.sc.dupFrac {
			dups = append(dups, i)
		}
		// Duplicates go out about 50 events after their original.
		for len(dups) > 0 && dups[0] <= i-50 {
			dup, err := r.send(ctx, evs[dups[0]])
			if err != nil {
				return err
			}
			r.t.dups++
			if dup {
				r.t.dupsDropped++
			}
			dups = dups[1:]
		}
		if badEvery > 0 && i%badEvery == badEvery-1 && nbad < len(corpus) {
			b := corpus[nbad]
			nbad++
			if err := r.retry(ctx, func() error {
				_, err := r.js.Publish(ctx, b.subject, []byte(b.data))
				return err
			}); err != nil {
				return err
			}
		}
	}
	for _, i := range dups {
		dup, err := r.send(ctx, evs[i])
		if err != nil {
			return err
		}
		r.t.dups++
		if dup {
			r.t.dupsDropped++
		}
	}
	return nil
}

// send publishes one event until JetStream acknowledges it; it reports
// whether JetStream found it a duplicate.
func (r *runner) send(ctx context.Context, e event) (bool, error) {
	var dup bool
	err := r.retry(ctx, func() error {
		ack, err := r.js.Publish(ctx, "verdict.events."+e.rollout, e.data, jetstream.WithMsgID(e.rollout+"/"+e.id))
		if err == nil {
			dup = ack.Duplicate
		}
		return err
	})
	return dup, err
}

func (r *runner) retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// critical are the crash points the kill loop cycles through.
var critical = []string{faults.BeforeAck, faults.AfterPublish, faults.AfterCheckpoint}

// killLoop kills the engine while the events go out, at random times
// and, every third restart, at a critical point, and keeps going after
// the last event until it has at least minKills kills.
func (r *runner) killLoop(published chan error) error {
	var pubErr error
	pubDone := false
	n := 0
	for !pubDone || r.t.kills < r.o.minKills {
		wait := time.Duration(200+r.rng.IntN(1000)) * time.Millisecond
		select {
		case pubErr = <-published:
			pubDone = true
			if pubErr != nil {
				return pubErr
			}
		case <-r.eng.done:
		case <-time.After(wait):
		}
		if !pubDone && !r.eng.exited() && r.eng.crashEnv != "" {
			continue // let it reach its crash point
		}
		if r.eng.exited() {
			if r.eng.selfKilled() && r.eng.crashEnv != "" {
				r.t.kills++
				r.t.critical++
				r.logf("engine %d died at %s", r.nengines, r.eng.crashEnv)
			} else {
				return fmt.Errorf("engine exited unexpectedly: %v (log %s)", r.eng.cmd.ProcessState, r.logFile(r.nengines))
			}
		} else {
			_ = r.eng.cmd.Process.Signal(syscall.SIGKILL)
			<-r.eng.done
			r.t.kills++
			r.logf("engine %d killed", r.nengines)
		}
		n++
		env := ""
		if n%3 == 0 {
			p := critical[(n/3)%len(critical)]
			k := 1 + r.rng.IntN(3)
			if p == faults.AfterPublish {
				k = 1
			}
			env = fmt.Sprintf("%s:%d", p, k)
		}
		if err := r.startEngine(env); err != nil {
			return err
		}
	}
	return nil
}

// restartLoop restarts nats-server (SIGKILL, same store and port) once,
// a third of the way through.
func (r *runner) restartLoop(published chan error) error {
	select {
	case err := <-published:
		return fmt.Errorf("events all out before the restart: %v", err)
	case <-time.After(time.Duration(len(r.tr.events)/r.sc.rate/3) * time.Second):
	}
	r.logf("killing nats-server")
	r.stopServer(syscall.SIGKILL)
	time.Sleep(5 * time.Second) // longer than the lease (3/4 of 5s): the engine loses it and takes it back
	if err := r.startServer(); err != nil {
		return err
	}
	r.t.restarts++
	r.logf("nats-server restarted")
	if err := <-published; err != nil {
		return err
	}
	if r.eng.exited() {
		return fmt.Errorf("engine died across the server restart: %v (log %s)", r.eng.cmd.ProcessState, r.logFile(r.nengines))
	}
	return nil
}

// waitDrained waits until the engine has consumed every message for a
// while in a row (a new engine may first rewind the consumer).
func (r *runner) waitDrained(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	ok := 0
	for time.Now().Before(deadline) {
		if r.eng.exited() {
			return fmt.Errorf("engine exited: %v (log %s)", r.eng.cmd.ProcessState, r.logFile(r.nengines))
		}
		c, err := r.js.Consumer(ctx, "VERDICT_EVENTS", "verdict-engine")
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				if ok == 0 {
					r.drainedAt = time.Now()
				}
				ok++
				if ok >= 10 {
					return nil
				}
			} else {
				ok = 0
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("engine did not consume the telemetry within %s", timeout)
}

func (r *runner) waitRoute(ctx context.Context, act *actuator.Actuator, id string, ok func(engine.Route) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if rt, err := act.Route(ctx, id); err == nil && ok(rt) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("route of %s not as wanted within %s (log %s)", id, timeout, r.logFile(r.nengines))
}

// check compares decisions and counts with the uninterrupted offline run.
func (r *runner) check(ctx context.Context, act *actuator.Actuator, want expected, cutAt time.Time) {
	got, err := r.decisions(ctx)
	if err != nil {
		r.t.diffs = append(r.t.diffs, err.Error())
		return
	}
	for _, id := range r.tr.rollouts {
		g, w := got[id], want.decisions[id]
		if len(g) != len(w) {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: %d decisions, want %d", id, len(g), len(w)))
		}
		for i := range min(len(g), len(w)) {
			if !bytes.Equal(g[i], w[i]) {
				r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: decision %d differs:\n got %s\nwant %s", id, i+1, g[i], w[i]))
				break
			}
		}
		if !cutAt.IsZero() {
			for _, b := range g {
				var ev engine.CloudEvent
				if json.Unmarshal(b, &ev) == nil && !ev.Data.At.Before(cutAt) &&
					(ev.Data.Action == engine.ActionPromote || ev.Data.Action == engine.ActionComplete) {
					r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: %s after the canary went silent", id, ev.ID))
				}
			}
		}
		data, err := act.LoadState(ctx, id)
		if err != nil {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: checkpoint: %v", id, err))
			continue
		}
		st, err := engine.DecodeStatus(data)
		if err != nil {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: checkpoint: %v", id, err))
			continue
		}
		wc := want.counts[id]
		for v := range 2 {
			switch d := st.Requests[v] - wc[v]; {
			case d < 0:
				r.t.lost += -d
			case d > 0:
				r.t.double += d
			}
		}
		if st.Requests != wc {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("%s: counted %v requests (baseline, canary), want %v", id, st.Requests, wc))
		}
	}
}

// decisions reads the decision stream: per rollout, the payloads in order.
func (r *runner) decisions(ctx context.Context) (map[string][][]byte, error) {
	out := map[string][][]byte{}
	err := r.readStream(ctx, "VERDICT_DECISIONS", func(m jetstream.Msg) {
		var ev engine.CloudEvent
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			out["?"] = append(out["?"], m.Data())
			return
		}
		if got := m.Headers().Get(jetstream.MsgIDHeader); got != ev.ID {
			out["?"] = append(out["?"], []byte("Nats-Msg-Id "+got+" for "+ev.ID))
		}
		out[ev.Subject] = append(out[ev.Subject], bytes.Clone(m.Data()))
	})
	if len(out["?"]) > 0 {
		return nil, fmt.Errorf("bad decisions: %q", out["?"])
	}
	return out, err
}

func (r *runner) readStream(ctx context.Context, stream string, fn func(jetstream.Msg)) error {
	c, err := r.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			fn(m)
		}
		if n == 0 {
			return nil
		}
	}
}

// scrape reads the engine's Prometheus metrics.
func (r *runner) scrape() (string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metricsPort))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// checkCorpus checks that every malformed message was dead-lettered once
// with its reason and that the engine's counters say so.
func (r *runner) checkCorpus(ctx context.Context, corpus []badMsg, metrics string) {
	want := map[string]int{}
	for _, b := range corpus {
		want[string(b.reason)]++
	}
	got := map[string]int{}
	err := r.readStream(ctx, "VERDICT_REJECTED", func(m jetstream.Msg) {
		got[m.Headers().Get(ingest.HeaderReason)]++
	})
	if err != nil {
		r.t.diffs = append(r.t.diffs, "dead letters: "+err.Error())
		return
	}
	counters := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(metrics))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, `verdict_ingest_rejected_total{reason="`)
		if !ok {
			continue
		}
		reason, val, _ := strings.Cut(rest, `"} `)
		n, _ := strconv.ParseFloat(val, 64)
		if n > 0 {
			counters[reason] = int(n)
		}
	}
	for reason := range merge(want, got, counters) {
		if got[reason] != want[reason] || counters[reason] != want[reason] {
			r.t.diffs = append(r.t.diffs, fmt.Sprintf("reason %s: %d dead letters, counter %d, want %d",
				reason, got[reason], counters[reason], want[reason]))
		}
	}
	for _, n := range got {
		r.t.bad += n
	}
}

func merge(ms ...map[string]int) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			out[k] = true
		}
	}
	return out
}

// peakRSS is a process's peak resident set size in KiB (Linux), or 0.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// counter returns the value of the metric line starting with prefix.
func counter(metrics, prefix string) int64 {
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f)
		}
	}
	return -1
}
