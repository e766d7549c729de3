package router

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	n := newTestNATS(t)
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 10, Seq: 2})
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 5, Seq: 1})
	eventually(t, "stale entry", func() bool { return tb.Stats().Stale == 1 })
	e, err := NewEmitter(n.nc, EmitterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Rollout: "co", Variant: Canary, Latency: 1})
	e.Override()
	closeEmitter(t, e)

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewCollector(e, tb)); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "{" + l.GetValue() + "}"
			}
			if m.Counter != nil {
				got[key] = m.GetCounter().GetValue()
			} else {
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"verdict_router_requests_total{queued}":       1,
		"verdict_router_requests_total{dropped}":      0,
		"verdict_router_requests_total{overridden}":   1,
		"verdict_router_messages_total{published}":    1,
		"verdict_router_messages_total{acked}":        1,
		"verdict_router_messages_total{duplicate}":    0,
		"verdict_router_messages_total{error}":        0,
		"verdict_router_routes":                       1,
		"verdict_router_route_entries_total{applied}": 1,
		"verdict_router_route_entries_total{stale}":   1,
		"verdict_router_route_entries_total{invalid}": 0,
		"verdict_router_route_watches_total":          1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("gathered %d series, want %d: %v", len(got), len(want), got)
	}
}
