package router

import (
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// backend returns an httptest server answering with body and code.
func backend(t testing.TB, body string, code int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(VariantHeader, "lies") // the proxy's header wins
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// get sends one request through h and returns the variant header and body.
func get(t testing.TB, c *http.Client, url string, header ...string) (variant, body string, code int, overridden bool) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if vs := resp.Header.Values(VariantHeader); len(vs) != 1 {
		t.Fatalf("response has %s %q, want exactly one value", VariantHeader, vs)
	}
	return resp.Header.Get(VariantHeader), string(b), resp.StatusCode, resp.Header.Get(OverriddenHeader) == "1"
}

func TestProxyEndToEnd(t *testing.T) {
	n := newTestNATS(t)
	good := backend(t, "baseline", http.StatusOK)
	bad := backend(t, "canary", http.StatusInternalServerError)

	const weight = 30
	putRoute(t, n.kv, Route{Rollout: "co", Baseline: "v1", Canary: "v2", Weight: weight, State: "progressing", Step: 2, Seq: 4})
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	em, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProxy(tb, em, ProxyOptions{
		Rollout: "co", Baseline: mustURL(t, good.URL), Canary: mustURL(t, bad.URL),
		UnitHeader: "X-User-Id", UnitCookie: "uid", OverrideHeader: DefaultOverrideHeader,
	})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()
	c := front.Client()

	// N units, one request each: the split is the hash's, exactly, and
	// the share is the weight within 5 standard errors.
	const units = 2000
	var seen [2]int64
	variantOf := map[string]string{}
	for i := range units {
		u := fmt.Sprint("user-", i)
		v, body, code, _ := get(t, c, front.URL+"/x", "X-User-Id", u)
		want := Route{Weight: weight}.Assign(u).String()
		if v != want || body != v {
			t.Fatalf("unit %s: variant %q body %q, want %q from both", u, v, body, want)
		}
		if wantCode := map[string]int{"baseline": 200, "canary": 500}[v]; code != wantCode {
			t.Fatalf("unit %s on %s: status %d, want %d", u, v, code, wantCode)
		}
		variantOf[u] = v
		pv, _ := ParseVariant(v)
		seen[pv]++
	}
	share := 100 * float64(seen[Canary]) / units
	if tol := 100 * 5 * math.Sqrt(0.3*0.7/units); math.Abs(share-weight) > tol {
		t.Errorf("canary share %.2f%%, want %d%% within %.2f", share, weight, tol)
	}

	// Sticky: the same units, again, by cookie this time.
	for i := range 200 {
		u := fmt.Sprint("user-", i)
		req, _ := http.NewRequest("GET", front.URL+"/again", nil)
		req.AddCookie(&http.Cookie{Name: "uid", Value: u})
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(VariantHeader)
		if got != variantOf[u] {
			t.Fatalf("unit %s came back on %s, was on %s", u, got, variantOf[u])
		}
		pv, _ := ParseVariant(got)
		seen[pv]++
	}

	// Overrides force the version and are not analysed.
	for i := range 50 {
		force := []string{"canary", "baseline"}[i%2]
		v, _, _, overridden := get(t, c, front.URL+"/smoke", DefaultOverrideHeader, force, "X-User-Id", "user-1")
		if v != force || !overridden {
			t.Fatalf("override %s: served by %s (overridden %v)", force, v, overridden)
		}
	}

	closeEmitter(t, em)
	s := em.Stats()
	if s.Overridden != 50 || s.Dropped != 0 || s.Errors != 0 || s.Emitted != uint64(seen[0]+seen[1]) {
		t.Fatalf("Stats() = %+v, want 50 overridden and %d emitted", s, seen[0]+seen[1])
	}
	got := tallyOf(readEvents(t, n.js))
	if want := (tally{requests: seen, errors: [2]int64{0, seen[Canary]}}); got != want {
		t.Fatalf("stream tally %+v, want %+v (every canary request an error)", got, want)
	}
}

func TestProxyTransportErrorAndNoRoute(t *testing.T) {
	n := newTestNATS(t)
	good := backend(t, "baseline", http.StatusOK)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // connection refused

	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	em, err := NewEmitter(n.nc, EmitterOptions{Batch: 100})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProxy(tb, em, ProxyOptions{Rollout: "co", Baseline: mustURL(t, good.URL), Canary: mustURL(t, dead.URL),
		ErrorLog: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(p)
	defer front.Close()

	// No route yet: everything on the baseline, no unit needed.
	for range 20 {
		if v, _, code, _ := get(t, front.Client(), front.URL); v != "baseline" || code != 200 {
			t.Fatalf("no route: %s %d, want baseline 200", v, code)
		}
	}
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 100, State: "progressing", Seq: 1})
	eventually(t, "weight 100", seqIs(tb, "co", 1))
	for range 10 {
		if v, _, code, _ := get(t, front.Client(), front.URL); v != "canary" || code != http.StatusBadGateway {
			t.Fatalf("dead canary: %s %d, want canary 502", v, code)
		}
	}
	closeEmitter(t, em)
	got := tallyOf(readEvents(t, n.js))
	if want := (tally{requests: [2]int64{20, 10}, errors: [2]int64{0, 10}}); got != want {
		t.Fatalf("stream tally %+v, want %+v", got, want)
	}
}

func TestNewProxyRejectsBadOptions(t *testing.T) {
	u := &url.URL{Scheme: "http", Host: "x"}
	tb := &Table{}
	for _, o := range []ProxyOptions{
		{Rollout: "", Baseline: u, Canary: u},
		{Rollout: "a.b", Baseline: u, Canary: u},
		{Rollout: "a", Baseline: u},
	} {
		if _, err := NewProxy(tb, nil, o); err == nil {
			t.Errorf("NewProxy(%+v) = nil error", o)
		}
	}
	if _, err := NewProxy(nil, nil, ProxyOptions{Rollout: "a", Baseline: u, Canary: u}); err == nil {
		t.Error("NewProxy(nil table) = nil error")
	}
}

var discardLog = log.New(io.Discard, "", 0)

// A backend that dies in the middle of a response body is an error, even
// though its status was 200.
func TestProxyBackendAbortIsAnError(t *testing.T) {
	n := newTestNATS(t)
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dying.Close()
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 100, State: "progressing", Seq: 1})
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	em, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := mustURL(t, dying.URL)
	p, err := NewProxy(tb, em, ProxyOptions{Rollout: "co", Baseline: u, Canary: u, ErrorLog: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(p)
	front.Config.ErrorLog = discardLog
	front.Start()
	defer front.Close()
	resp, err := front.Client().Get(front.URL)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The client may see the broken response before the handler returns.
	eventually(t, "the request reported", func() bool { return em.Stats().Queued == 1 })
	closeEmitter(t, em)
	if got := tallyOf(readEvents(t, n.js)); got != (tally{requests: [2]int64{0, 1}, errors: [2]int64{0, 1}}) {
		t.Fatalf("stream tally %+v, want one failed canary request", got)
	}
}
