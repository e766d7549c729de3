package policy

import (
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Field names, in the order of the normalized form.
var (
	policyFields = []string{"apiVersion", "kind", "name", "preset", "steps", "stepDefaults",
		"onTimeout", "alpha", "promoteAlpha", "promoteWindow", "metrics"}
	stepDefaultFields = []string{"minDuration", "maxDuration", "minRequests"}
	stepFields        = []string{"weight", "minDuration", "maxDuration", "minRequests"}
	metricFields      = []string{"name", "type", "quantile", "field", "direction", "maxIncrease", "weight"}
)

var (
	policyNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	metricNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	valueFieldRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
)

// policy decodes the mapping n.
func (d *decoder) policy(n *yaml.Node) *Policy {
	f, ok := d.mapping(n, "", policyFields)
	if !ok {
		return nil
	}
	p := &Policy{
		File:         d.file,
		Line:         n.Line,
		OnTimeout:    DefaultOnTimeout,
		Alpha:        DefaultAlpha,
		PromoteAlpha: DefaultPromoteAlpha,
	}
	d.header(n, f, p)
	p.Preset, p.Steps = d.stepsOrPreset(n, f)
	if v := f["onTimeout"]; v != nil {
		p.OnTimeout, _ = d.enum(v, "onTimeout", OnTimeoutRollback, OnTimeoutPromote, OnTimeoutHold)
	}
	if v := f["alpha"]; v != nil {
		p.Alpha, _ = d.between(v, "alpha", 0, 0.5, false)
	}
	if v := f["promoteAlpha"]; v != nil {
		p.PromoteAlpha, _ = d.between(v, "promoteAlpha", 0, 0.5, false)
	}
	if v := f["promoteWindow"]; v != nil {
		p.PromoteWindow, p.Window = d.window(v, "promoteWindow")
	}
	p.Metrics = d.metrics(f["metrics"], "metrics")
	if len(d.errs) > 0 {
		return nil
	}
	p.Hash = hash(p.Normalized())
	return p
}

// header decodes apiVersion, kind and name.
func (d *decoder) header(n *yaml.Node, f fields, p *Policy) {
	if v := d.required(n, f, "apiVersion", ""); v != nil {
		if s, ok := d.str(v, "apiVersion"); ok && s != APIVersion {
			d.errorf(v, "apiVersion", "want %s, got %q", APIVersion, s)
		}
	}
	if v := d.required(n, f, "kind", ""); v != nil {
		if s, ok := d.str(v, "kind"); ok && s != Kind {
			d.errorf(v, "kind", "want %s, got %q", Kind, s)
		}
	}
	if v := d.required(n, f, "name", ""); v != nil {
		p.Name, _ = d.match(v, "name", policyNameRE, "1 to 64 letters, digits, '_' or '-'")
		p.nameLine, p.nameCol = v.Line, v.Column
	}
}

// stepsOrPreset decodes steps, or preset, and the stepDefaults they use.
func (d *decoder) stepsOrPreset(n *yaml.Node, f fields) (string, []Step) {
	def := d.stepDefaults(f["stepDefaults"], "stepDefaults")
	pn, sn := f["preset"], f["steps"]
	switch {
	case pn != nil && sn != nil:
		d.errorf(pn, "preset", "preset and steps are mutually exclusive: remove one")
		d.steps(sn, "steps", def)
		return "", nil
	case pn != nil:
		name, ok := d.str(pn, "preset")
		if !ok {
			return "", nil
		}
		pre, ok := lookupPreset(name)
		if !ok {
			d.errorf(pn, "preset", "unknown preset %q; want one of %s", name, strings.Join(presetNames(), ", "))
			return "", nil
		}
		return name, pre.expand(def)
	case sn != nil:
		return "", d.steps(sn, "steps", def)
	default:
		d.errorf(n, "steps", "missing required field (or give a preset)")
		return "", nil
	}
}

// stepDefaults decodes n, which may be nil, into a Step without a weight.
func (d *decoder) stepDefaults(n *yaml.Node, path string) Step {
	def := Step{MinDuration: DefaultMinDuration, MaxDuration: DefaultMaxDuration, MinRequests: DefaultMinRequests}
	if n == nil {
		return def
	}
	f, ok := d.mapping(n, path, stepDefaultFields)
	if !ok {
		return def
	}
	s, ok := d.stepBounds(f, path, def)
	if !ok {
		return def
	}
	return s
}

// stepBounds decodes the duration and request fields of a step or of
// stepDefaults, with def for those left out, and checks that the durations
// are ordered. The error goes to whichever duration field was given.
func (d *decoder) stepBounds(f fields, path string, def Step) (Step, bool) {
	s, ok := def, true
	if v := f["minDuration"]; v != nil {
		s.MinDuration, ok = d.duration(v, field(path, "minDuration"))
	}
	if v := f["maxDuration"]; v != nil {
		var okMax bool
		s.MaxDuration, okMax = d.duration(v, field(path, "maxDuration"))
		ok = ok && okMax
	}
	if v := f["minRequests"]; v != nil {
		var okReq bool
		s.MinRequests, okReq = d.count(v, field(path, "minRequests"))
		ok = ok && okReq
	}
	if ok && s.MinDuration > s.MaxDuration {
		name, v := "minDuration", f["minDuration"]
		if v == nil {
			name, v = "maxDuration", f["maxDuration"]
		}
		if v != nil {
			d.errorf(v, field(path, name), "minDuration %s is longer than maxDuration %s",
				durationString(s.MinDuration), durationString(s.MaxDuration))
		}
		ok = false
	}
	return s, ok
}

// steps decodes the list of steps at n.
func (d *decoder) steps(n *yaml.Node, path string, def Step) []Step {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "want a list of weights, got %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 || len(n.Content) > MaxSteps {
		d.errorf(n, path, "want 1 to %d steps, got %d", MaxSteps, len(n.Content))
	}
	var (
		steps []Step
		prev  float64 // weight of the previous valid step
	)
	for i, item := range n.Content {
		p := index(path, i)
		s, wn, ok := d.step(item, p, def)
		if !ok {
			continue
		}
		if s.Weight <= prev {
			d.errorf(wn, weightPath(item, p), "weight %g must be greater than the previous step's %g", s.Weight, prev)
		}
		prev = s.Weight
		steps = append(steps, s)
		if i == len(n.Content)-1 && s.Weight != 100 {
			d.errorf(wn, weightPath(item, p), "the last step must be 100 (the rollout's end), got %g", s.Weight)
		}
	}
	return steps
}

func weightPath(item *yaml.Node, path string) string {
	if item.Kind == yaml.MappingNode {
		return field(path, "weight")
	}
	return path
}

// step decodes one step: a weight, or a mapping with a weight and
// overrides of the step defaults. It returns the weight's node.
func (d *decoder) step(n *yaml.Node, path string, def Step) (Step, *yaml.Node, bool) {
	if n.Kind != yaml.MappingNode {
		w, ok := d.between(n, path, 0, 100, true)
		def.Weight = w
		return def, n, ok
	}
	f, ok := d.mapping(n, path, stepFields)
	if !ok {
		return def, n, false
	}
	s, ok := d.stepBounds(f, path, def)
	wn := d.required(n, f, "weight", path)
	if wn == nil {
		return s, n, false
	}
	w, okW := d.between(wn, field(path, "weight"), 0, 100, true)
	s.Weight = w
	return s, wn, ok && okW
}

// metrics decodes the list of metrics at n, or returns the defaults when n
// is nil.
func (d *decoder) metrics(n *yaml.Node, path string) []Metric {
	if n == nil {
		return DefaultMetrics()
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "want a list of metrics, got %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 || len(n.Content) > MaxMetrics {
		d.errorf(n, path, "want 1 to %d metrics, got %d (leave metrics out for the defaults)", MaxMetrics, len(n.Content))
	}
	var ms []Metric
	seen := make(map[string]*yaml.Node)
	for i, item := range n.Content {
		p := index(path, i)
		m, nameNode, ok := d.metric(item, p)
		if nameNode != nil && m.Name != "" {
			if first, dup := seen[m.Name]; dup {
				d.errorf(nameNode, field(p, "name"), "duplicate metric name %q (first at line %d)", m.Name, first.Line)
				ok = false
			} else {
				seen[m.Name] = nameNode
			}
		}
		if ok {
			ms = append(ms, m)
		}
	}
	return ms
}

// metric decodes one metric and returns the node of its name.
func (d *decoder) metric(n *yaml.Node, path string) (Metric, *yaml.Node, bool) {
	m := Metric{Direction: DefaultDirection, Weight: DefaultWeight}
	f, ok := d.mapping(n, path, metricFields)
	if !ok {
		return m, nil, false
	}
	errs := len(d.errs)
	nameNode := d.required(n, f, "name", path)
	if nameNode != nil {
		m.Name, _ = d.match(nameNode, field(path, "name"), metricNameRE, "a name matching [a-z0-9][a-z0-9_-]{0,62}")
	}
	if v := d.required(n, f, "type", path); v != nil {
		m.Type, _ = d.enum(v, field(path, "type"), TypeErrors, TypeLatency, TypeLatencyQuantile, TypeCustom)
	}
	if v := d.onlyFor(n, f, m.Type, "direction", path, TypeCustom); v != nil {
		m.Direction, _ = d.enum(v, field(path, "direction"), DirectionIncrease, DirectionDecrease)
	}
	if v := d.onlyFor(n, f, m.Type, "field", path, TypeCustom); v != nil {
		m.Field, _ = d.match(v, field(path, "field"), valueFieldRE, "a key of the event's values (1 to 128 letters, digits, '_', '.', ':' or '-')")
	}
	if v := d.onlyFor(n, f, m.Type, "quantile", path, TypeLatencyQuantile); v != nil {
		m.Quantile, _ = d.between(v, field(path, "quantile"), 0, 1, false)
	}
	if v := d.required(n, f, "maxIncrease", path); v != nil {
		m.MaxIncrease, _ = d.percent(v, field(path, "maxIncrease"))
		if m.Direction == DirectionDecrease && m.MaxIncrease >= 1 {
			d.errorf(v, field(path, "maxIncrease"), "must be below 100%% with direction decrease, got %s", v.Value)
		}
	}
	if v := f["weight"]; v != nil {
		m.Weight, _ = d.between(v, field(path, "weight"), 0, 1e6, true)
	}
	return m, nameNode, len(d.errs) == errs
}

// onlyFor checks that the field name is given for metrics of type only
// (direction is optional) and for no others, and returns its value if it
// is to be decoded. A metric of unknown type is not checked.
func (d *decoder) onlyFor(n *yaml.Node, f fields, typ, name, path string, only string) *yaml.Node {
	v := f[name]
	switch {
	case typ == "":
		return v
	case v != nil && typ != only:
		d.errorf(v, field(path, name), "only allowed for type %s", only)
		return nil
	case v == nil && typ == only && name != "direction":
		d.errorf(n, field(path, name), "missing required field for type %s", only)
	}
	return v
}
