package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verdict-dev/verdict/telemetry"
)

// Stats are the Ingester's counters since New. They are exact: a message is
// counted once, when its batch is acknowledged.
type Stats struct {
	Accepted         uint64                      // messages handed to the Sink
	Rejected         map[telemetry.Reason]uint64 // dead-lettered messages by reason (every reason present)
	DeadLetterErrors uint64                      // rejected messages whose dead letter could not be stored
	Redelivered      uint64                      // redeliveries of messages already handled, skipped
	Batches          uint64                      // batches handled, each with one Deliver and one ack
}

// Stats returns a snapshot of the counters. It is safe to call concurrently
// with Run.
func (in *Ingester) Stats() Stats {
	s := Stats{
		Accepted:         in.accepted.Load(),
		Rejected:         make(map[telemetry.Reason]uint64, len(in.reasons)),
		DeadLetterErrors: in.dlErrors.Load(),
		Redelivered:      in.redeliv.Load(),
		Batches:          in.batches.Load(),
	}
	for r, i := range in.reasons {
		s.Rejected[r] = in.rejected[i].Load()
	}
	return s
}

// Collectors returns the Prometheus collectors of the Ingester's counters:
// verdict_ingest_events_total, verdict_ingest_rejected_total{reason},
// verdict_ingest_deadletter_errors_total and
// verdict_ingest_redelivered_total.
func (in *Ingester) Collectors() []prometheus.Collector {
	return []prometheus.Collector{collector{in}}
}

var (
	descEvents = prometheus.NewDesc("verdict_ingest_events_total",
		"Telemetry messages accepted and handed to the engine.", nil, nil)
	descRejected = prometheus.NewDesc("verdict_ingest_rejected_total",
		"Telemetry messages rejected and dead-lettered, by reason.", []string{"reason"}, nil)
	descDLErrors = prometheus.NewDesc("verdict_ingest_deadletter_errors_total",
		"Rejected messages whose dead letter could not be stored.", nil, nil)
	descRedelivered = prometheus.NewDesc("verdict_ingest_redelivered_total",
		"Redeliveries of already handled messages, skipped.", nil, nil)
)

type collector struct{ in *Ingester }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEvents
	ch <- descRejected
	ch <- descDLErrors
	ch <- descRedelivered
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	in := c.in
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(in.accepted.Load()))
	for _, r := range telemetry.Reasons() {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue,
			float64(in.rejected[in.reasons[r]].Load()), string(r))
	}
	ch <- prometheus.MustNewConstMetric(descDLErrors, prometheus.CounterValue, float64(in.dlErrors.Load()))
	ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.CounterValue, float64(in.redeliv.Load()))
}
