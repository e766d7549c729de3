package policy

import (
	"slices"
	"strconv"
	"time"
)

// A preset is a named list of steps, after AWS CodeDeploy's predefined
// deployment configurations.
type preset struct {
	name    string
	weights []float64
	wait    time.Duration // minDuration of the steps before the last (all steps when linear)
	linear  bool
}

var presets = []preset{
	{name: "AllAtOnce", weights: []float64{100}},
	canary(5), canary(10), canary(15), canary(30),
	linear(1), linear(2), linear(3), linear(10),
}

func canary(minutes int) preset {
	return preset{
		name:    "Canary10Percent" + strconv.Itoa(minutes) + "Minutes",
		weights: []float64{10, 100},
		wait:    time.Duration(minutes) * time.Minute,
	}
}

func linear(minutes int) preset {
	unit := "Minutes"
	if minutes == 1 {
		unit = "Minute"
	}
	p := preset{
		name:   "Linear10PercentEvery" + strconv.Itoa(minutes) + unit,
		wait:   time.Duration(minutes) * time.Minute,
		linear: true,
	}
	for w := 10; w <= 100; w += 10 {
		p.weights = append(p.weights, float64(w))
	}
	return p
}

// presetNames returns the valid preset names, sorted.
func presetNames() []string {
	names := make([]string, len(presets))
	for i, p := range presets {
		names[i] = p.name
	}
	slices.Sort(names)
	return names
}

func lookupPreset(name string) (preset, bool) {
	i := slices.IndexFunc(presets, func(p preset) bool { return p.name == name })
	if i < 0 {
		return preset{}, false
	}
	return presets[i], true
}

// expand returns the preset's steps. Steps that wait take the preset's
// minDuration, and a maxDuration of at least that; the others, like the
// final 100% step of a canary preset, take the defaults as they are.
func (p preset) expand(def Step) []Step {
	steps := make([]Step, len(p.weights))
	for i, w := range p.weights {
		s := def
		s.Weight = w
		if p.wait > 0 && (p.linear || i < len(p.weights)-1) {
			s.MinDuration = p.wait
			s.MaxDuration = max(def.MaxDuration, p.wait)
		}
		steps[i] = s
	}
	return steps
}

// defaults returns step defaults from which expand rebuilds steps, which
// must be the preset's own expansion: the inverse of expand, used to write
// a preset policy's normalized form.
func (p preset) defaults(steps []Step) Step {
	if len(steps) == 0 {
		return Step{MinDuration: DefaultMinDuration, MaxDuration: DefaultMaxDuration, MinRequests: DefaultMinRequests}
	}
	def := steps[len(steps)-1]
	if p.linear {
		def = steps[0]
	}
	def.Weight = 0
	return def
}
