package telemetry

import (
	"testing"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

var benchSingle = []byte(`{"rollout":"checkout-42","variant":"canary","time":"2026-11-26T10:00:00.123Z","latency_ms":12.5,"status":200,"error":false,"unit":"user-123","id":"evt-000001"}`)

var benchSingleValues = []byte(`{"rollout":"checkout-42","variant":"canary","time":"2026-11-26T10:00:00.123Z","latency_ms":12.5,"status":200,"error":false,"unit":"user-123","id":"evt-000001","values":{"cpu_ms":3.1}}`)

func BenchmarkDecode(b *testing.B) {
	batch := NewBuilder("checkout-42", analyzer.Canary)
	for i := range 1000 {
		batch.Add(5+float64(i%200), i%50 == 0)
	}
	br := batch.Record("batch-1", time.Unix(0, 0))
	batchJSON, err := Encode(&br)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		data []byte
	}{
		{"single", benchSingle},
		{"single+values", benchSingleValues},
		{"batch1000", batchJSON},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(bc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/decoder", func(b *testing.B) {
			var d Decoder
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Decode(bc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	r, err := Decode(benchSingle)
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, err = Append(buf[:0], &r)
		if err != nil {
			b.Fatal(err)
		}
	}
}
