package router

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
)

// Service is one rollout behind a Mux: the requests for Host (any host
// when empty) whose path is under PathPrefix ("/" when empty) are proxied
// as Options says.
type Service struct {
	Host       string
	PathPrefix string
	Options    ProxyOptions
}

// Mux sends each request to the Proxy of the service that matches it: a
// service naming the request's host wins over one for any host, then the
// longest path prefix wins. A prefix matches whole path segments ("/api"
// matches "/api" and "/api/x", not "/apix"). Requests no service matches
// get 404 and are not reported. A Mux is safe for concurrent use.
type Mux struct {
	routes []muxRoute // most specific first
}

type muxRoute struct {
	host, prefix string
	proxy        *Proxy
}

// NewMux returns a Mux over services, all reading t and emitting to e. Two
// services may not share both host and prefix.
func NewMux(t *Table, e *Emitter, services []Service) (*Mux, error) {
	if len(services) == 0 {
		return nil, errors.New("router: mux: no services")
	}
	m := &Mux{}
	seen := map[[2]string]string{}
	for i, s := range services {
		host, prefix := strings.ToLower(s.Host), s.PathPrefix
		if prefix == "" {
			prefix = "/"
		}
		if !strings.HasPrefix(prefix, "/") {
			return nil, fmt.Errorf("router: mux: service %d (%s): path prefix %q must start with /", i+1, s.Options.Rollout, prefix)
		}
		if prefix != "/" {
			prefix = strings.TrimSuffix(prefix, "/")
		}
		if other, dup := seen[[2]string{host, prefix}]; dup {
			return nil, fmt.Errorf("router: mux: services %s and %s both serve host %q, prefix %q", other, s.Options.Rollout, host, prefix)
		}
		seen[[2]string{host, prefix}] = s.Options.Rollout
		p, err := NewProxy(t, e, s.Options)
		if err != nil {
			return nil, fmt.Errorf("router: mux: service %d: %w", i+1, err)
		}
		m.routes = append(m.routes, muxRoute{host: host, prefix: prefix, proxy: p})
	}
	sort.SliceStable(m.routes, func(i, j int) bool {
		a, b := m.routes[i], m.routes[j]
		if (a.host != "") != (b.host != "") {
			return a.host != ""
		}
		return len(a.prefix) > len(b.prefix)
	})
	return m, nil
}

// ServeHTTP proxies r through the matching service.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	path := r.URL.Path
	for _, rt := range m.routes {
		if rt.host != "" && rt.host != host {
			continue
		}
		if rt.prefix == "/" || path == rt.prefix || strings.HasPrefix(path, rt.prefix+"/") {
			rt.proxy.ServeHTTP(w, r)
			return
		}
	}
	http.NotFound(w, r)
}
