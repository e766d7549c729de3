package router

import "github.com/prometheus/client_golang/prometheus"

var (
	descRequests = prometheus.NewDesc("verdict_router_requests_total",
		"Requests seen by the telemetry emitter, by fate: queued for publishing, dropped (queue full, invalid, after close), or overridden (forced version, not analysed).",
		[]string{"fate"}, nil)
	descMessages = prometheus.NewDesc("verdict_router_messages_total",
		"Telemetry messages (events or batches), by result: published (handed to NATS), acked (stored by the stream), duplicate (acked as a duplicate), error.",
		[]string{"result"}, nil)
	descRoutes = prometheus.NewDesc("verdict_router_routes",
		"Rollouts whose route is cached.", nil, nil)
	descEntries = prometheus.NewDesc("verdict_router_route_entries_total",
		"Route entries received, by result: applied, stale (lower seq, ignored), invalid (ignored).",
		[]string{"result"}, nil)
	descWatches = prometheus.NewDesc("verdict_router_route_watches_total",
		"Route watchers opened; more than one means the watch was re-established.", nil, nil)
)

// Collector exposes the counters of an Emitter and a Table (either may be
// nil) as Prometheus metrics, read from Stats at each scrape.
type Collector struct {
	emitter *Emitter
	table   *Table
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector over e and t; register it with a
// prometheus.Registerer.
func NewCollector(e *Emitter, t *Table) *Collector { return &Collector{emitter: e, table: t} }

// Describe sends the descriptors of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descMessages, descRoutes, descEntries, descWatches} {
		ch <- d
	}
}

// Collect sends the current values.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, label ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label...)
	}
	if c.emitter != nil {
		s := c.emitter.Stats()
		counter(descRequests, s.Queued, "queued")
		counter(descRequests, s.Dropped, "dropped")
		counter(descRequests, s.Overridden, "overridden")
		counter(descMessages, s.Published, "published")
		counter(descMessages, s.Emitted, "acked")
		counter(descMessages, s.Duplicates, "duplicate")
		counter(descMessages, s.Errors, "error")
	}
	if c.table != nil {
		s := c.table.Stats()
		ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.GaugeValue, float64(s.Routes))
		counter(descEntries, s.Updates, "applied")
		counter(descEntries, s.Stale, "stale")
		counter(descEntries, s.Invalid, "invalid")
		counter(descWatches, s.Watches)
	}
}
