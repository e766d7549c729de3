package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"testing"
	"time"
)

// Proxy overhead: the same GET against an httptest backend, directly and
// through a Proxy that assigns a variant from a Table (weight 50) and
// emits telemetry to an in-process JetStream server.
//
//	go test -run '^$' -bench . -benchtime 20000x ./router

func benchGet(b *testing.B, c *http.Client, url string, parallel bool) {
	b.Helper()
	do := func(i int) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-User-Id", fmt.Sprint("user-", i))
		resp, err := c.Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				do(i)
			}
		})
		return
	}
	for i := range b.N {
		do(i)
	}
}

func benchClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	return &http.Client{Transport: tr}
}

func BenchmarkProxyOverhead(b *testing.B) {
	backendSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backendSrv.Close()
	for _, parallel := range []bool{false, true} {
		name := "serial"
		if parallel {
			name = "parallel"
		}
		b.Run("direct/"+name, func(b *testing.B) {
			c := benchClient()
			defer c.CloseIdleConnections()
			benchGet(b, c, backendSrv.URL, parallel)
		})
		// The extra hop alone: a bare ReverseProxy, no routes, no telemetry.
		b.Run("reverseproxy/"+name, func(b *testing.B) {
			u := mustURL(b, backendSrv.URL)
			rp := httputil.NewSingleHostReverseProxy(u)
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 256
			rp.Transport = tr
			front := httptest.NewServer(rp)
			defer front.Close()
			defer tr.CloseIdleConnections()
			c := benchClient()
			defer c.CloseIdleConnections()
			benchGet(b, c, front.URL, parallel)
		})
		for _, batch := range []int{0, 100} {
			b.Run(fmt.Sprintf("proxy/batch=%d/%s", batch, name), func(b *testing.B) {
				n := newTestNATS(b)
				putRoute(b, n.kv, Route{Rollout: "co", Weight: 50, State: "progressing", Seq: 1})
				tb := NewTable(n.js, TableOptions{})
				runTable(b, tb)
				em, err := NewEmitter(n.nc, EmitterOptions{Batch: batch})
				if err != nil {
					b.Fatal(err)
				}
				u := mustURL(b, backendSrv.URL)
				p, err := NewProxy(tb, em, ProxyOptions{Rollout: "co", Baseline: u, Canary: u, UnitHeader: "X-User-Id"})
				if err != nil {
					b.Fatal(err)
				}
				front := httptest.NewServer(p)
				c := benchClient()
				benchGet(b, c, front.URL, parallel)
				b.StopTimer()
				c.CloseIdleConnections()
				front.Close()
				p.rp.Transport.(*http.Transport).CloseIdleConnections()
				closeEmitter(b, em)
				s := em.Stats()
				b.ReportMetric(float64(s.Dropped)/float64(b.N), "dropped/op")
			})
		}
	}
}

func BenchmarkAssign(b *testing.B) {
	n := newTestNATS(b)
	putRoute(b, n.kv, Route{Rollout: "co", Weight: 25, State: "progressing", Seq: 1})
	tb := NewTable(n.js, TableOptions{})
	runTable(b, tb)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Assign("co", "user-123")
		}
	})
}

// BenchmarkEmitterPublish measures the sustained publish rate of single
// events into an in-process JetStream stream, until every ack is in.
func BenchmarkEmitterPublish(b *testing.B) {
	for _, batch := range []int{0, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			n := newTestNATS(b)
			em, err := NewEmitter(n.nc, EmitterOptions{Batch: batch, QueueSize: 1 << 16})
			if err != nil {
				b.Fatal(err)
			}
			ev := Event{Rollout: "co", Variant: Canary, Unit: "user-1", Latency: 3 * time.Millisecond}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				for !em.Emit(ev) { // a benchmark may wait; a request path never does
					em.dropped.Add(^uint64(0))
					time.Sleep(10 * time.Microsecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := em.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkRequestPath is what the SDK adds to a request handler: a route
// lookup, the assignment and an Emit (batches, so the publisher keeps up).
func BenchmarkRequestPath(b *testing.B) {
	n := newTestNATS(b)
	putRoute(b, n.kv, Route{Rollout: "co", Weight: 25, State: "progressing", Seq: 1})
	tb := NewTable(n.js, TableOptions{})
	runTable(b, tb)
	em, err := NewEmitter(n.nc, EmitterOptions{Batch: 100, QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		start := time.Now()
		for pb.Next() {
			v := tb.Assign("co", "user-123")
			em.Emit(Event{Rollout: "co", Variant: v, Unit: "user-123", Time: start, Latency: time.Millisecond})
		}
	})
	b.StopTimer()
	closeEmitter(b, em)
	b.ReportMetric(float64(em.Stats().Dropped)/float64(b.N), "dropped/op")
}
