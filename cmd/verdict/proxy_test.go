package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/internal/natstest"
	"github.com/verdict-dev/verdict/router"
)

// syncBuffer is a bytes.Buffer safe for a writer and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProxyUsage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknown := write("unknown.yaml", "services:\n  - rollout: a\n    baseline: http://a\n    canary: http://b\n    weight: 5\n")
	badURL := write("bad.yaml", "services:\n  - rollout: a\n    baseline: http://a\n    canary: b\n")
	empty := write("empty.yaml", "services: []\n")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"proxy", "-h"}, 0, "Usage: verdict proxy --rollout ID"},
		{[]string{"proxy"}, 2, "--rollout"},
		{[]string{"proxy", "--rollout", "co", "--baseline", "http://a", "--canary", "ftp://b"}, 2, "--canary"},
		{[]string{"proxy", "--rollout", "c.o", "--baseline", "http://a", "--canary", "http://b"}, 2, "--rollout"},
		{[]string{"proxy", "--rollout", "co", "--baseline", "http://a", "--canary", "http://b", "extra"}, 2, "unexpected argument"},
		{[]string{"proxy", "--rollout", "co", "--baseline", "http://a", "--canary", "http://b", "--batch", "-1"}, 2, "--batch"},
		{[]string{"proxy", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"proxy", "--config", unknown}, 2, "field weight not found"},
		{[]string{"proxy", "--config", badURL}, 2, "services[0].canary"},
		{[]string{"proxy", "--config", empty}, 2, "no services"},
		{[]string{"proxy", "--config", filepath.Join(dir, "missing.yaml")}, 2, "--config"},
		{[]string{"proxy", "--config", empty, "--rollout", "a"}, 2, "--config replaces"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errb); code != tt.code || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, errb.String(), tt.code, tt.want)
			}
		})
	}
}

func TestProxyListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var errb bytes.Buffer
	args := []string{"proxy", "--rollout", "co", "--baseline", "http://a", "--canary", "http://b", "--listen", ln.Addr().String()}
	if code := run(context.Background(), args, io.Discard, &errb); code != 1 {
		t.Fatalf("run(%q) with the address taken = %d, want 1; stderr %s", args, code, errb.String())
	}
}

// proxyEnv is an in-process JetStream server with the routes bucket and
// the telemetry stream, and two backends: baseline answers 200, canary 503.
type proxyEnv struct {
	url              string
	kv               jetstream.KeyValue
	stream           jetstream.Stream
	baseline, canary string
}

func newProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	// The proxy connects over TCP, as in production.
	ns, nc := natstest.Start(t, func(o *server.Options) { o.Host, o.DontListen = "127.0.0.1", false })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := &proxyEnv{url: ns.ClientURL()}
	if e.kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "verdict_routes"}); err != nil {
		t.Fatal(err)
	}
	if e.stream, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "VERDICT_EVENTS", Subjects: []string{"verdict.events.>"}}); err != nil {
		t.Fatal(err)
	}
	backend := func(name string, code int) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, name)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	e.baseline, e.canary = backend("baseline", 200), backend("canary", 503)
	return e
}

func (e *proxyEnv) route(t *testing.T, rollout string, weight float64) {
	t.Helper()
	data, _ := json.Marshal(router.Route{Rollout: rollout, Baseline: "v1", Canary: "v2", Weight: weight, State: "progressing", Seq: 1})
	if _, err := e.kv.Put(context.Background(), rollout, data); err != nil {
		t.Fatal(err)
	}
}

// startProxy runs `verdict proxy args...` until the returned stop, which
// returns its exit code; it waits for the routes to be loaded.
func startProxy(t *testing.T, args ...string) (addr string, stderr *syncBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &syncBuffer{}
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"proxy", "--listen", "127.0.0.1:0"}, args...), io.Discard, stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "routes loaded") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("proxy did not start; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	addr = regexp.MustCompile(`msg="proxy listening" addr=(\S+)`).FindStringSubmatch(stderr.String())[1]
	return addr, stderr, func() int { cancel(); return <-code }
}

// get sends one request and returns its Verdict-Variant header, body and status.
func get(t *testing.T, url string, header ...string) (variant, body string, status int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Verdict-Variant"), string(b), resp.StatusCode
}

// counts reads the telemetry stream: requests and errors per rollout and
// variant, from batches.
func (e *proxyEnv) counts(t *testing.T) map[string][2]int64 {
	t.Helper()
	ctx := context.Background()
	info, err := e.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]int64{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := e.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			Rollout string `json:"rollout"`
			Variant string `json:"variant"`
			Count   int64  `json:"count"`
			Errors  int64  `json:"errors"`
		}
		if err := json.Unmarshal(m.Data, &b); err != nil || m.Header.Get("Nats-Msg-Id") == "" || b.Count == 0 {
			t.Fatalf("message %d: %s (Nats-Msg-Id %q): want a batch with an id; %v", seq, m.Data, m.Header.Get("Nats-Msg-Id"), err)
		}
		k := b.Rollout + "/" + b.Variant
		c := out[k]
		c[0] += b.Count
		c[1] += b.Errors
		out[k] = c
	}
	return out
}

// TestProxyCommand runs `verdict proxy` against an in-process JetStream
// server and two backends, then stops it as Ctrl-C would.
func TestProxyCommand(t *testing.T) {
	env := newProxyEnv(t)
	env.route(t, "co", 50)
	addr, stderr, stop := startProxy(t, "--rollout", "co", "--baseline", env.baseline, "--canary", env.canary,
		"--unit-header", "X-User-Id", "--nats", env.url, "--batch", "7", "--metrics", "127.0.0.1:0")

	const n = 200
	var perVariant [2]int64
	for i := range n {
		unit := fmt.Sprint("u", i)
		want := router.Route{Weight: 50}.Assign(unit)
		if v, body, _ := get(t, "http://"+addr+"/", "X-User-Id", unit); v != want.String() || body != v {
			t.Fatalf("unit %s: Verdict-Variant %q, body %q, want %v", unit, v, body, want)
		}
		perVariant[want]++
	}
	metricsAddr := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(stderr.String())
	if metricsAddr == nil {
		t.Fatalf("no metrics address in stderr:\n%s", stderr.String())
	}
	if _, metrics, _ := get(t, "http://"+metricsAddr[1]+"/metrics"); !strings.Contains(metrics, fmt.Sprintf(`verdict_router_requests_total{fate="queued"} %d`, n)) {
		t.Errorf("/metrics lacks %d queued requests:\n%s", n, metrics)
	}

	if c := stop(); c != 0 {
		t.Fatalf("proxy exit code %d, want 0; stderr:\n%s", c, stderr.String())
	}
	http.DefaultClient.CloseIdleConnections()
	// Every request is in the stream, in batches, with the canary's errors.
	got := env.counts(t)
	want := map[string][2]int64{
		"co/baseline": {perVariant[router.Baseline], 0},
		"co/canary":   {perVariant[router.Canary], perVariant[router.Canary]},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stream counts %v, want %v (every canary request an error)", got, want)
	}
	if !strings.Contains(stderr.String(), "proxy stopped") {
		t.Errorf("no shutdown summary in stderr:\n%s", stderr.String())
	}
}

// TestProxyConfig serves two rollouts from one --config file, by path.
func TestProxyConfig(t *testing.T) {
	env := newProxyEnv(t)
	env.route(t, "shop", 100)
	env.route(t, "api", 0)
	config := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`services:
  - rollout: shop
    pathPrefix: /shop
    baseline: %[1]s
    canary: %[2]s
  - rollout: api
    pathPrefix: /api
    baseline: %[1]s
    canary: %[2]s
    unitHeader: X-Api-Key
`, env.baseline, env.canary)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, stderr, stop := startProxy(t, "--config", config, "--nats", env.url, "--batch", "100")
	for range 10 {
		if v, _, code := get(t, "http://"+addr+"/shop/cart"); v != "canary" || code != 503 {
			t.Fatalf("/shop/cart: %s %d, want canary 503", v, code)
		}
		if v, _, code := get(t, "http://"+addr+"/api/orders", "X-Api-Key", "k1"); v != "baseline" || code != 200 {
			t.Fatalf("/api/orders: %s %d, want baseline 200", v, code)
		}
	}
	if _, _, code := get(t, "http://"+addr+"/elsewhere"); code != http.StatusNotFound {
		t.Fatalf("/elsewhere: status %d, want 404", code)
	}
	if c := stop(); c != 0 {
		t.Fatalf("proxy exit code %d, want 0; stderr:\n%s", c, stderr.String())
	}
	http.DefaultClient.CloseIdleConnections()
	want := map[string][2]int64{"shop/canary": {10, 10}, "api/baseline": {10, 0}}
	if got := env.counts(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stream counts %v, want %v", got, want)
	}
}
