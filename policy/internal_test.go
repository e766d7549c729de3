package policy

import (
	"math"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestPresets(t *testing.T) {
	def := Step{MinDuration: DefaultMinDuration, MaxDuration: DefaultMaxDuration, MinRequests: DefaultMinRequests}
	m := time.Minute
	linear := func(wait, maxWait time.Duration) []Step {
		var s []Step
		for w := 10.0; w <= 100; w += 10 {
			s = append(s, Step{Weight: w, MinDuration: wait, MaxDuration: maxWait, MinRequests: 500})
		}
		return s
	}
	tests := []struct {
		name string
		def  Step
		want []Step
	}{
		{"AllAtOnce", def, []Step{{100, m, 30 * m, 500}}},
		{"Canary10Percent5Minutes", def, []Step{{10, 5 * m, 30 * m, 500}, {100, m, 30 * m, 500}}},
		{"Canary10Percent10Minutes", def, []Step{{10, 10 * m, 30 * m, 500}, {100, m, 30 * m, 500}}},
		{"Canary10Percent15Minutes", def, []Step{{10, 15 * m, 30 * m, 500}, {100, m, 30 * m, 500}}},
		{"Canary10Percent30Minutes", def, []Step{{10, 30 * m, 30 * m, 500}, {100, m, 30 * m, 500}}},
		{"Canary10Percent30Minutes", Step{MinDuration: m, MaxDuration: 5 * m, MinRequests: 500},
			[]Step{{10, 30 * m, 30 * m, 500}, {100, m, 5 * m, 500}}},
		{"Linear10PercentEvery1Minute", def, linear(m, 30*m)},
		{"Linear10PercentEvery2Minutes", def, linear(2*m, 30*m)},
		{"Linear10PercentEvery3Minutes", def, linear(3*m, 30*m)},
		{"Linear10PercentEvery10Minutes", def, linear(10*m, 30*m)},
		{"Linear10PercentEvery10Minutes", Step{MinDuration: m, MaxDuration: 2 * m, MinRequests: 500}, linear(10*m, 10*m)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := lookupPreset(tt.name)
			if !ok {
				t.Fatalf("lookupPreset(%q) not found", tt.name)
			}
			got := p.expand(tt.def)
			if !slices.Equal(got, tt.want) {
				t.Errorf("expand(%+v) = %+v, want %+v", tt.def, got, tt.want)
			}
			if again := p.expand(p.defaults(got)); !slices.Equal(again, got) {
				t.Errorf("expand(defaults(steps)) = %+v, want %+v", again, got)
			}
		})
	}
	if got, want := len(presetNames()), 9; got != want {
		t.Errorf("%d presets, want %d", got, want)
	}
}

// TestPercentString checks that every percentage written in a policy
// comes back from its normalized form as the same fraction.
func TestPercentString(t *testing.T) {
	for _, s := range []string{"20", "10", "12.5", "0.1", "0.3", "33.3", "1000", "0.000001", "999.999999999", "7", "57", "0.07"} {
		v, _ := strconv.ParseFloat(s, 64)
		frac := v / 100
		got := percentString(frac)
		back, err := strconv.ParseFloat(got[:len(got)-1], 64)
		if err != nil || back/100 != frac {
			t.Errorf("percentString(%v) = %s, which parses to %v", frac, got, back/100)
		}
		if got != s+"%" {
			t.Errorf("percentString(%v) = %s, want %s%%", frac, got, s)
		}
	}
	for i := range 100000 {
		v := float64(i) / 97
		frac := v / 100
		got := percentString(frac)
		back, _ := strconv.ParseFloat(got[:len(got)-1], 64)
		if back/100 != frac || math.IsNaN(back) {
			t.Fatalf("percentString(%v) = %s does not round-trip", frac, got)
		}
	}
}

func TestInWindow(t *testing.T) {
	p := &Policy{}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	if !p.InWindow(at("2026-11-28T03:00:00Z")) {
		t.Errorf("InWindow without a window = false, want true")
	}
	var err error
	if p.Window, err = parseWindow("* 9-17 * * MON-FRI"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		t    string
		want bool
	}{
		{"2026-11-26T09:00:00Z", true}, // Thursday
		{"2026-11-26T08:59:59Z", false},
		{"2026-11-26T17:59:59Z", true},
		{"2026-11-26T18:00:00Z", false},
		{"2026-11-26T12:30:30.5Z", true},
		{"2026-11-28T12:00:00Z", false},      // Saturday
		{"2026-11-26T10:00:00+02:00", false}, // 08:00 UTC: windows are UTC
	}
	for _, tt := range tests {
		if got := p.InWindow(at(tt.t)); got != tt.want {
			t.Errorf("InWindow(%s) = %v, want %v", tt.t, got, tt.want)
		}
	}
}

func TestDefaultMetrics(t *testing.T) {
	ps, err := Parse("d.yaml", []byte("apiVersion: verdict/v1\nkind: Policy\nname: d\nsteps: [100]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ps[0].Metrics, DefaultMetrics(); !slices.Equal(got, want) {
		t.Errorf("metrics = %+v, want %+v", got, want)
	}
	if got := ps[0].Hash; len(got) != len("sha256:")+64 || got[:7] != "sha256:" {
		t.Errorf("Hash = %q, want sha256:<64 hex>", got)
	}
}
