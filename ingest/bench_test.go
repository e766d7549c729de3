package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// nopSink accepts everything and counts.
type nopSink struct{}

func (nopSink) Rollout(id string) (string, any, bool)    { return strings.Clone(id), nil, true }
func (nopSink) Deliver(context.Context, []Message) error { return nil }

// BenchmarkIngest measures end-to-end consumption: pull, decode, validate,
// hand over and AckAll, of b.N single events (about 150 bytes) already in
// the stream. Publishing is not timed.
func BenchmarkIngest(b *testing.B) {
	_, js := startJetStream(b)
	cfg := DefaultConfig()
	setup(b, js, cfg)
	for i := 0; i < b.N; i++ {
		data := []byte(fmt.Sprintf(`{"rollout":"checkout-42","variant":"canary","time":"2026-11-26T10:00:00.123Z","latency_ms":%d.5,"status":200,"unit":"user-%d"}`, i%300, i%5000))
		if _, err := js.PublishAsync("verdict.events.checkout-42", data); err != nil {
			b.Fatal(err)
		}
		if i%10000 == 9999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publish did not complete")
	}
	in := New(js, cfg, nopSink{}, nil)
	b.ResetTimer()
	start := time.Now()
	stop := run(b, in)
	for in.Stats().Accepted < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(in.Stats().Batches), "msgs/batch")
}
