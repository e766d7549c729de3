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
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// TestProxyCommand runs `verdict proxy` against an in-process JetStream
// server and two backends, then stops it as Ctrl-C would.
func TestProxyCommand(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "verdict_routes"})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "VERDICT_EVENTS", Subjects: []string{"verdict.events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	route, _ := json.Marshal(router.Route{Rollout: "co", Baseline: "v1", Canary: "v2", Weight: 50, State: "progressing", Seq: 1})
	if _, err := kv.Put(ctx, "co", route); err != nil {
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

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(runCtx, []string{"proxy", "--rollout", "co", "--listen", "127.0.0.1:0",
			"--baseline", backend("baseline", 200), "--canary", backend("canary", 503),
			"--unit-header", "X-User-Id", "--nats", ns.ClientURL(), "--batch", "7", "--metrics", "127.0.0.1:0"}, io.Discard, &stderr)
	}()
	addrRE := regexp.MustCompile(`msg="proxy listening" addr=(\S+)`)
	var addr string
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "routes loaded") {
		if time.Now().After(deadline) {
			t.Fatalf("proxy did not start; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	addr = addrRE.FindStringSubmatch(stderr.String())[1]

	const n = 200
	var perVariant [2]int64
	for i := range n {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		unit := fmt.Sprint("u", i)
		req.Header.Set("X-User-Id", unit)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := router.Route{Weight: 50}.Assign(unit)
		if got := resp.Header.Get("Verdict-Variant"); got != want.String() || string(body) != got {
			t.Fatalf("unit %s: Verdict-Variant %q, body %q, want %v", unit, got, body, want)
		}
		perVariant[want]++
	}
	metricsAddr := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(stderr.String())
	if metricsAddr == nil {
		t.Fatalf("no metrics address in stderr:\n%s", stderr.String())
	}
	resp, err := http.Get("http://" + metricsAddr[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`verdict_router_requests_total{fate="queued"} %d`, n); !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %q:\n%s", want, metrics)
	}

	stop()
	if c := <-code; c != 0 {
		t.Fatalf("proxy exit code %d, want 0; stderr:\n%s", c, stderr.String())
	}
	http.DefaultClient.CloseIdleConnections()

	// Every request is in the stream, in batches, with the canary's errors.
	var got [2]int64
	var errs [2]int64
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			Variant string `json:"variant"`
			Count   int64  `json:"count"`
			Errors  int64  `json:"errors"`
		}
		if err := json.Unmarshal(m.Data, &b); err != nil || m.Header.Get("Nats-Msg-Id") == "" {
			t.Fatalf("message %d: %s (Nats-Msg-Id %q): %v", seq, m.Data, m.Header.Get("Nats-Msg-Id"), err)
		}
		v, _ := router.ParseVariant(b.Variant)
		got[v] += b.Count
		errs[v] += b.Errors
	}
	if got != perVariant || errs != [2]int64{0, perVariant[router.Canary]} {
		t.Fatalf("stream counts %v errors %v, want %v and every canary request an error", got, errs, perVariant)
	}
	if !strings.Contains(stderr.String(), "proxy stopped") {
		t.Errorf("no shutdown summary in stderr:\n%s", stderr.String())
	}
}
