package policy_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"pgregory.net/rapid"

	"github.com/verdict-dev/verdict/policy"
)

// TestRoundTripProperty generates valid policies, field by field, and checks
// that each parses and survives normalize, print, parse unchanged. It
// reaches far more valid policies than FuzzParse's byte mutations.
func TestRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		src := genPolicy(t)
		ps, err := policy.Parse("gen.yaml", []byte(src))
		if err != nil {
			t.Fatalf("generated policy does not parse: %v\n%s", err, src)
		}
		if len(ps) != 1 {
			t.Fatalf("got %d policies, want 1", len(ps))
		}
		checkRoundTrip(t, ps[0])
	})
}

func genPolicy(t *rapid.T) string {
	var b strings.Builder
	b.WriteString("apiVersion: verdict/v1\nkind: Policy\n")
	fmt.Fprintf(&b, "name: %q\n", rapid.StringMatching(`[A-Za-z0-9_-]{1,64}`).Draw(t, "name"))
	min := genDuration(t, "min", time.Hour)
	max := min + genDuration(t, "extra", time.Hour) - time.Millisecond
	fmt.Fprintf(&b, "stepDefaults: {minDuration: %s, maxDuration: %s, minRequests: %d}\n",
		model.Duration(min), model.Duration(max), rapid.Int64Range(0, 1e9).Draw(t, "minRequests"))
	if rapid.Bool().Draw(t, "preset") {
		names := []string{"AllAtOnce", "Canary10Percent5Minutes", "Canary10Percent30Minutes", "Linear10PercentEvery1Minute", "Linear10PercentEvery10Minutes"}
		fmt.Fprintf(&b, "preset: %s\n", rapid.SampledFrom(names).Draw(t, "presetName"))
	} else {
		b.WriteString("steps:\n")
		for _, w := range genWeights(t) {
			if rapid.Bool().Draw(t, "override") {
				d := genDuration(t, "stepMin", 2*time.Hour)
				fmt.Fprintf(&b, "  - {weight: %s, minDuration: %s, maxDuration: %s}\n", w, model.Duration(d), model.Duration(d))
			} else {
				fmt.Fprintf(&b, "  - %s\n", w)
			}
		}
	}
	fmt.Fprintf(&b, "onTimeout: %s\n", rapid.SampledFrom([]string{"rollback", "promote", "hold"}).Draw(t, "onTimeout"))
	fmt.Fprintf(&b, "alpha: %v\n", rapid.Float64Range(1e-12, 0.4999).Draw(t, "alpha"))
	fmt.Fprintf(&b, "promoteAlpha: %v\n", rapid.Float64Range(1e-12, 0.4999).Draw(t, "promoteAlpha"))
	if rapid.Bool().Draw(t, "window") {
		fmt.Fprintf(&b, "promoteWindow: %q\n", rapid.SampledFrom([]string{
			"* 9-17 * * MON-FRI", "*/5 * * * *", "CRON_TZ=America/New_York 0-30 8 * * 1-5", "@hourly", "0 0 29 2 *",
		}).Draw(t, "promoteWindow"))
	}
	if rapid.Bool().Draw(t, "metrics") {
		b.WriteString("metrics:\n")
		n := rapid.IntRange(1, 6).Draw(t, "metricCount")
		for i := range n {
			genMetric(t, &b, i)
		}
	}
	return b.String()
}

// genWeights returns increasing weights ending at 100, as written in YAML.
func genWeights(t *rapid.T) []string {
	n := rapid.IntRange(0, policy.MaxSteps-1).Draw(t, "steps")
	set := make(map[float64]bool)
	for range n {
		w := rapid.Float64Range(0.0001, 99.9999).Draw(t, "weight")
		if rapid.Bool().Draw(t, "integer") {
			w = float64(int(w) + 1)
		}
		if w < 100 {
			set[w] = true
		}
	}
	ws := slices.Sorted(func(yield func(float64) bool) {
		for w := range set {
			if !yield(w) {
				return
			}
		}
	})
	var out []string
	for _, w := range ws {
		out = append(out, strconv.FormatFloat(w, 'g', -1, 64))
	}
	return append(out, "100")
}

func genDuration(t *rapid.T, label string, upTo time.Duration) time.Duration {
	ms := rapid.Int64Range(1, upTo.Milliseconds()).Draw(t, label)
	return time.Duration(ms) * time.Millisecond
}

func genMetric(t *rapid.T, b *strings.Builder, i int) {
	typ := rapid.SampledFrom([]string{"errors", "latency", "latency-quantile", "custom"}).Draw(t, "type")
	fmt.Fprintf(b, "  - name: m%d-%s\n    type: %s\n", i, rapid.StringMatching(`[a-z0-9_-]{0,20}`).Draw(t, "metricName"), typ)
	limit := 1000.0
	switch typ {
	case "latency-quantile":
		fmt.Fprintf(b, "    quantile: %v\n", rapid.Float64Range(1e-9, 1-1e-9).Draw(t, "quantile"))
	case "custom":
		fmt.Fprintf(b, "    field: %s\n", rapid.StringMatching(`[a-z_][a-z0-9_.]{0,20}`).Draw(t, "field"))
		if rapid.Bool().Draw(t, "decrease") {
			b.WriteString("    direction: decrease\n")
			limit = 99.9999
		}
	}
	pct := rapid.Float64Range(0.0001, limit).Draw(t, "maxIncrease")
	fmt.Fprintf(b, "    maxIncrease: %s%%\n", strconv.FormatFloat(pct, 'f', -1, 64))
	if rapid.Bool().Draw(t, "weighted") {
		fmt.Fprintf(b, "    weight: %v\n", rapid.Float64Range(1e-6, 1e6).Draw(t, "metricWeight"))
	}
}
