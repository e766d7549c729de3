package router

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/verdict-dev/verdict/telemetry"
)

// Headers set by Proxy.
const (
	// VariantHeader is set on every response (and on the request sent to
	// the backend) to the variant that served it: baseline or canary.
	VariantHeader = "Verdict-Variant"
	// OverriddenHeader is set to "1" on responses whose version was forced
	// by the override header; such requests are not analysed.
	OverriddenHeader = "Verdict-Overridden"
	// DefaultOverrideHeader is the conventional override header name.
	DefaultOverrideHeader = "Verdict-Version"
)

// ProxyOptions configures a Proxy.
type ProxyOptions struct {
	// Rollout is the rollout whose route decides the split. Required.
	Rollout string
	// Baseline and Canary are the backends' base URLs. Required.
	Baseline, Canary *url.URL
	// UnitHeader and UnitCookie name where a request's unit (user,
	// session) is read from; the header wins when both are set and
	// present. A request without a unit gets a random variant per request,
	// with no stickiness.
	UnitHeader, UnitCookie string
	// OverrideHeader names a request header whose value, "baseline" or
	// "canary", forces the version (for smoke tests). Such requests are
	// counted by Emitter.Override and not emitted as telemetry. Empty
	// disables overrides. Anyone who can set the header can reach the
	// canary: strip it at the edge if that matters.
	OverrideHeader string
	// Transport carries the proxied requests; a clone of
	// http.DefaultTransport with 256 idle connections per host when nil.
	Transport http.RoundTripper
	// ErrorLog receives the reverse proxy's errors; the log package's
	// standard logger when nil.
	ErrorLog *log.Logger
}

// Proxy is an http.Handler that sends each request to the baseline or the
// canary backend of one rollout, as its Table decides, and emits one
// telemetry event per request: its latency (until the handler returns,
// body included) and its outcome (a 5xx status or a transport error is an
// error). Requests cancelled by the client are not emitted. Every response
// carries VariantHeader.
//
// A Proxy is safe for concurrent use; it owns no goroutine.
type Proxy struct {
	table    *Table
	emitter  *Emitter
	opts     ProxyOptions
	rp       *httputil.ReverseProxy
	backends [2]*url.URL
}

type variantKey struct{}

// NewProxy returns a Proxy reading routes from t and emitting telemetry to
// e (no telemetry when e is nil). The caller runs t and closes e.
func NewProxy(t *Table, e *Emitter, opts ProxyOptions) (*Proxy, error) {
	switch {
	case t == nil:
		return nil, errors.New("router: proxy: nil table")
	case !telemetry.ValidRollout(opts.Rollout):
		return nil, fmt.Errorf("router: proxy: invalid rollout id %q", opts.Rollout)
	case opts.Baseline == nil || opts.Canary == nil:
		return nil, errors.New("router: proxy: baseline and canary URLs are required")
	}
	p := &Proxy{table: t, emitter: e, opts: opts, backends: [2]*url.URL{Baseline: opts.Baseline, Canary: opts.Canary}}
	tr := opts.Transport
	if tr == nil {
		dt := http.DefaultTransport.(*http.Transport).Clone()
		dt.MaxIdleConns = 1024
		dt.MaxIdleConnsPerHost = 256
		tr = dt
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			v, _ := pr.In.Context().Value(variantKey{}).(Variant)
			pr.SetURL(p.backends[v])
			pr.SetXForwarded()
			pr.Out.Header.Set(VariantHeader, v.String())
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(VariantHeader) // ours is already set on the writer
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if rec, ok := w.(*recorder); ok {
				rec.transportErr = true
				rec.canceled = r.Context().Err() != nil
			}
			if r.Context().Err() == nil {
				logger(p.opts.ErrorLog).Printf("verdict proxy: %s %s: %v", r.Method, r.URL.Path, err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		Transport:  tr,
		ErrorLog:   opts.ErrorLog,
		BufferPool: bufferPool{},
	}
	return p, nil
}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	route, _ := p.table.Route(p.opts.Rollout)
	unit := p.unit(r)
	v, forced := p.override(r)
	if !forced {
		v = route.Assign(unit)
	}
	h := w.Header()
	h.Set(VariantHeader, v.String())
	if forced {
		h.Set(OverriddenHeader, "1")
	}
	rec := &recorder{ResponseWriter: w}
	defer func() {
		// ReverseProxy aborts the response with http.ErrAbortHandler when
		// copying the body fails. Unless the client went away, the backend
		// did: that request failed, and is reported before the panic goes on.
		if rv := recover(); rv != nil {
			if rv == http.ErrAbortHandler && r.Context().Err() == nil {
				p.report(v, forced, unit, start, true)
			}
			panic(rv)
		}
	}()
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), variantKey{}, v)))
	if !rec.canceled {
		p.report(v, forced, unit, start, rec.transportErr || rec.status >= 500)
	}
}

// report emits one proxied request, or counts it when its version was forced.
func (p *Proxy) report(v Variant, forced bool, unit string, start time.Time, failed bool) {
	if p.emitter == nil {
		return
	}
	if forced {
		p.emitter.Override()
		return
	}
	p.emitter.Emit(Event{
		Rollout: p.opts.Rollout,
		Variant: v,
		Unit:    unit,
		Time:    start,
		Latency: time.Since(start),
		Failed:  failed,
	})
}

func (p *Proxy) unit(r *http.Request) string {
	if p.opts.UnitHeader != "" {
		if u := r.Header.Get(p.opts.UnitHeader); u != "" {
			return u
		}
	}
	if p.opts.UnitCookie != "" {
		if c, err := r.Cookie(p.opts.UnitCookie); err == nil && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

func (p *Proxy) override(r *http.Request) (Variant, bool) {
	if p.opts.OverrideHeader == "" {
		return Baseline, false
	}
	return ParseVariant(r.Header.Get(p.opts.OverrideHeader))
}

// bufferPool reuses the reverse proxy's copy buffers, which it would
// otherwise allocate (32 KiB) per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// recorder captures the status written through it. Unwrap lets
// http.ResponseController (used by ReverseProxy to flush) reach the
// underlying writer.
type recorder struct {
	http.ResponseWriter
	status       int
	transportErr bool
	canceled     bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func logger(l *log.Logger) *log.Logger {
	if l == nil {
		return log.Default()
	}
	return l
}
