package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/internal/natstest"
	"github.com/verdict-dev/verdict/policy"
)

// cliServer is a JetStream server listening on a random loopback port with
// the engine running on it, for the client commands to talk to.
func cliServer(t *testing.T) (url string, e *e2e) {
	t.Helper()
	ns, nc := natstest.Start(t, func(o *server.Options) { o.Host, o.DontListen = "127.0.0.1", false })
	pols, err := policy.Parse("e2e.yaml", []byte(e2ePolicy))
	if err != nil {
		t.Fatal(err)
	}
	e = &e2e{t: t, ns: ns, nc: nc, pol: policy.Set{"e2e": pols[0]}}
	e.start()
	return ns.ClientURL(), e
}

func verdict(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIRollout(t *testing.T) {
	url, e := cliServer(t)
	code, out, errs := verdict(t, "rollout", "start", "web-1", "--policy", "e2e", "--baseline", "v1", "--canary", "v2", "--nats", url)
	if code != 0 || !strings.Contains(out, "rollout web-1 started") {
		t.Fatalf("rollout start: exit %d\n%s%s", code, out, errs)
	}
	e.waitRoute("web-1", func(r engine.Route) bool { return r.Seq >= 1 })
	if code, _, errs := verdict(t, "rollout", "start", "web-1", "--policy", "e2e", "--baseline", "v1", "--canary", "v2", "--nats", url); code != 1 || !strings.Contains(errs, "already exists") {
		t.Errorf("second start: exit %d, stderr %q; want 1 and 'already exists'", code, errs)
	}
	r := newSimRouter(e, "web-1", goodVersion, 2000)
	r.run(0, 5, nil)
	// status reads the evidence from the checkpoints, written about once
	// a second: wait for one that has it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out, errs = verdict(t, "rollout", "status", "--nats", url)
		if code != 0 {
			t.Fatalf("status: exit %d %s", code, errs)
		}
		if strings.Contains(out, "error-rate") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"ROLLOUT", "web-1", "e2e", "progressing", "5%", "error-rate", "latency"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = verdict(t, "rollout", "status", "web-1", "--json", "--nats", url)
	var row struct {
		Spec    engine.Spec  `json:"spec"`
		Route   engine.Route `json:"route"`
		Metrics []struct {
			Name string `json:"name"`
		} `json:"metrics"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &row) != nil || row.Route.Weight != 5 || len(row.Metrics) != 2 {
		t.Errorf("status --json: exit %d, %+v from %s", code, row, out)
	}

	for _, step := range []struct {
		sub   string
		state engine.State
	}{{"pause", engine.StatePaused}, {"resume", engine.StateProgressing}, {"abort", engine.StateAborted}} {
		if code, _, errs := verdict(t, "rollout", step.sub, "web-1", "--nats", url); code != 0 {
			t.Fatalf("rollout %s: exit %d %s", step.sub, code, errs)
		}
		e.waitRoute("web-1", func(r engine.Route) bool { return r.State == step.state })
	}

	// watch --json prints the decisions so far; it stops when ctx ends.
	var out2, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if code := run(ctx, []string{"watch", "web-1", "--json", "--nats", url}, &out2, &errb); code != 0 {
		t.Fatalf("watch: exit %d %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out2.String()), "\n")
	var actions []string
	for _, l := range lines {
		var ev engine.CloudEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("watch --json line %q: %v", l, err)
		}
		actions = append(actions, ev.Data.Action.String())
	}
	if got, want := strings.Join(actions, " "), "start pause resume abort"; got != want {
		t.Errorf("watch saw %q, want %q", got, want)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	out2.Reset()
	run(ctx2, []string{"watch", "--nats", url}, &out2, &errb)
	if !strings.Contains(out2.String(), "web-1 #4 abort") {
		t.Errorf("watch (human) lacks the abort line:\n%s", out2.String())
	}
}

func TestCLIUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"rollout"},
		{"rollout", "fly", "x"},
		{"rollout", "start", "x"},
		{"rollout", "start", "bad id!", "--policy", "p", "--baseline", "a", "--canary", "b"},
		{"rollout", "pause"},
		{"watch", "a", "b"},
		{"nosuchcommand"},
		{"serve", "extra"},
		{"serve", "--log-format", "xml"},
		{"serve", "--checkpoint-rate", "0"},
	} {
		if code, _, _ := verdict(t, args...); code != 2 {
			t.Errorf("verdict %v: exit %d, want 2", args, code)
		}
	}
	// No server: a clear error and exit 1.
	code, _, errs := verdict(t, "rollout", "status", "--nats", "nats://127.0.0.1:1", "--timeout", "1s")
	if code != 1 || !strings.Contains(errs, "is `verdict serve` running?") {
		t.Errorf("status without a server: exit %d, %q", code, errs)
	}
}
