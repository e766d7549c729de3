package router

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestMuxMatching(t *testing.T) {
	n := newTestNATS(t)
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	backendNamed := func(name string) *url.URL {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Backend", name)
		}))
		t.Cleanup(s.Close)
		return mustURL(t, s.URL)
	}
	svc := func(rollout, host, prefix string) Service {
		u := backendNamed(rollout)
		return Service{Host: host, PathPrefix: prefix, Options: ProxyOptions{Rollout: rollout, Baseline: u, Canary: u}}
	}
	m, err := NewMux(tb, nil, []Service{
		svc("catchall", "", ""),
		svc("api", "", "/api/"),
		svc("apiv2", "", "/api/v2"),
		svc("shop", "Shop.Example.com", "/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ host, path, want string }{
		{"other.test", "/", "catchall"},
		{"other.test", "/apix", "catchall"},
		{"other.test", "/api", "api"},
		{"other.test", "/api/v1/x", "api"},
		{"other.test", "/api/v2", "apiv2"},
		{"other.test", "/api/v2/orders", "apiv2"},
		{"shop.example.com:8080", "/api/v2", "shop"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "http://"+tt.host+tt.path, nil)
		w := httptest.NewRecorder()
		m.ServeHTTP(w, r)
		if got := w.Header().Get("Backend"); got != tt.want {
			t.Errorf("%s%s served by %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}

	only, err := NewMux(tb, nil, []Service{svc("api", "", "/api")})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	only.ServeHTTP(w, httptest.NewRequest("GET", "/other", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("unmatched request: status %d, want 404", w.Code)
	}

	for _, bad := range [][]Service{
		nil,
		{svc("a", "", "/x"), svc("b", "", "/x/")},
		{svc("a", "", "nope")},
	} {
		if _, err := NewMux(tb, nil, bad); err == nil {
			t.Errorf("NewMux(%d services) = nil error, want one", len(bad))
		}
	}
}
