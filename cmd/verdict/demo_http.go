package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/router"
)

// demoHTTPPolicy is the policy of `verdict demo --http`: real time, so
// short steps.
const demoHTTPPolicy = `apiVersion: verdict/v1
kind: Policy
name: demo-http
steps: [10, 50, 100]
stepDefaults:
  minDuration: 5s
  maxDuration: 2m
  minRequests: 200
onTimeout: rollback
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 50%
  - name: latency
    type: latency
    maxIncrease: 10%
`

// backend is a simulated service version behind a real HTTP server.
type backend struct {
	v   version
	srv *http.Server
	url *url.URL
	mu  sync.Mutex
	rng *rand.Rand
}

func startBackend(v version, seed uint64) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{v: v, rng: rand.New(rand.NewPCG(seed, 99))}
	b.url = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

func (b *backend) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	ms, failed := b.v.sample(b.rng)
	b.mu.Unlock()
	time.Sleep(time.Duration(math.Min(ms, 500) * float64(time.Millisecond)))
	if failed {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	io.WriteString(w, "ok\n")
}

func (b *backend) close() { _ = b.srv.Close() }

// httpDemoResult is what the HTTP demo observed.
type httpDemoResult struct {
	final       engine.Decision
	requests    int64
	canary      int64
	afterTotal  int64 // requests sent after the rollback reached the proxy
	afterCanary int64 // of which the proxy still sent to the canary
}

// demoHTTP runs a real HTTP rollout: two backends, the Verdict proxy in
// front of them, and a load generator through it. The bad canary must be
// rolled back on the proxy's own telemetry.
func demoHTTP(ctx context.Context, o demoOptions, out io.Writer) error {
	res, err := runHTTPDemo(ctx, o, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nReport:\n  web       %s at step %d (%s%% canary) after %s HTTP requests (%s to the canary)\n            why: %s\n",
		res.final.Action, res.final.Step+1, fmtWeight(res.final.PreviousWeight), fmtCount(res.requests),
		fmtCount(res.canary), res.final.Reason)
	fmt.Fprintf(out, "  after the rollback reached the proxy: %s requests, %d of them to the canary\n",
		fmtCount(res.afterTotal), res.afterCanary)
	if res.final.Action != engine.ActionRollback {
		return fmt.Errorf("the bad canary ended with %s, expected rollback", res.final.Action)
	}
	if res.afterCanary != 0 {
		return fmt.Errorf("%d requests reached the canary after the rollback", res.afterCanary)
	}
	return nil
}

func runHTTPDemo(ctx context.Context, o demoOptions, out io.Writer) (httpDemoResult, error) {
	var res httpDemoResult
	st, _, stop, err := startDemoStack("demo-http.yaml", demoHTTPPolicy, o.log)
	if err != nil {
		return res, err
	}
	defer stop()
	nc := st.js.Conn()

	good := version{errRate: 0.02, medianMs: 4, logSD: 0.5}
	bad := version{errRate: 0.08, medianMs: 4, logSD: 0.5, tailQ: 1.64, tailMult: 2}
	base, err := startBackend(good, o.seed)
	if err != nil {
		return res, err
	}
	defer base.close()
	can, err := startBackend(bad, o.seed+1)
	if err != nil {
		return res, err
	}
	defer can.close()

	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	table := router.NewTable(st.js, router.TableOptions{})
	tableDone := make(chan error, 1)
	go func() { tableDone <- table.Run(runCtx) }()
	em, err := router.NewEmitter(nc, router.EmitterOptions{Batch: 100, Interval: 200 * time.Millisecond})
	if err != nil {
		return res, err
	}
	proxy, err := router.NewProxy(table, em, router.ProxyOptions{
		Rollout: "web", Baseline: base.url, Canary: can.url, UnitHeader: "X-User-Id",
	})
	if err != nil {
		return res, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	psrv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = psrv.Serve(ln) }()
	defer psrv.Close()
	proxyURL := "http://" + ln.Addr().String() + "/"

	decisions := make(chan engine.Decision, 16)
	if err := followDecisions(runCtx, st.js, decisions); err != nil {
		return res, err
	}
	if err := st.act.PutSpec(runCtx, engine.Spec{Rollout: "web", Policy: "demo-http", Baseline: "v1", Canary: "v2"}); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "verdict demo --http: backends %s (v1, good) and %s (v2, 4x errors, slow tail)\n", base.url.Host, can.url.Host)
	fmt.Fprintf(out, "  proxy %s routes rollout \"web\" by X-User-Id; a load generator sends real HTTP requests through it\n\n", ln.Addr())

	var (
		total, canary, afterTotal, afterCanary atomic.Int64
		rolledBack                             atomic.Bool
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.seed, uint64(w)))
			for runCtx.Err() == nil {
				req, _ := http.NewRequestWithContext(runCtx, http.MethodGet, proxyURL, nil)
				req.Header.Set("X-User-Id", fmt.Sprintf("user-%d", rng.IntN(100_000)))
				after := rolledBack.Load()
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				isCanary := resp.Header.Get(router.VariantHeader) == "canary"
				total.Add(1)
				if isCanary {
					canary.Add(1)
				}
				if after {
					afterTotal.Add(1)
					if isCanary {
						afterCanary.Add(1)
					}
				}
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for res.final.Action == 0 && runCtx.Err() == nil {
		select {
		case d := <-decisions:
			fmt.Fprintf(out, "[%4.1fs] web  %-8s step %d  %s%% -> %s%%  %s\n", time.Since(start).Seconds(),
				d.Action, d.Step+1, fmtWeight(d.PreviousWeight), fmtWeight(d.Weight), d.Reason)
			if d.Action == engine.ActionRollback || d.Action == engine.ActionComplete || d.Action == engine.ActionAbort {
				res.final = d
			}
		case <-tick.C:
			fmt.Fprintf(out, "[%4.1fs] %s requests, %s to the canary\n", time.Since(start).Seconds(),
				fmtCount(total.Load()), fmtCount(canary.Load()))
		case <-runCtx.Done():
		}
	}
	if res.final.Action != 0 {
		// Wait until the proxy has the new route, then watch a second of
		// traffic: none of it may reach the canary.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if r, ok := table.Route("web"); ok && r.Seq >= res.final.Seq {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		rolledBack.Store(true)
		time.Sleep(time.Second)
	}
	cancel()
	wg.Wait()
	res.requests, res.canary = total.Load(), canary.Load()
	res.afterTotal, res.afterCanary = afterTotal.Load(), afterCanary.Load()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if err := em.Close(cctx); err != nil {
		return res, fmt.Errorf("flush telemetry: %w", err)
	}
	if err := <-tableDone; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	if res.final.Action == 0 {
		return res, fmt.Errorf("no decision within %s", o.timeout)
	}
	return res, nil
}
