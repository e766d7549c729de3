package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Normalized returns the policy's canonical YAML form: every default filled
// in, fields in a fixed order, steps written out one mapping each (or the
// preset with the stepDefaults that rebuild its steps). Parsing it yields
// an equal Policy with the same Hash, and two policies that behave the same
// have the same normalized form.
func (p *Policy) Normalized() []byte {
	doc := mapNode()
	add(doc, "apiVersion", strNode(APIVersion))
	add(doc, "kind", strNode(Kind))
	add(doc, "name", strNode(p.Name))
	if pre, ok := lookupPreset(p.Preset); ok {
		add(doc, "preset", strNode(p.Preset))
		doc.Content[len(doc.Content)-2].HeadComment = expansion(p.Steps)
		add(doc, "stepDefaults", stepNode(pre.defaults(p.Steps), false))
	} else {
		steps := &yaml.Node{Kind: yaml.SequenceNode}
		for _, s := range p.Steps {
			steps.Content = append(steps.Content, stepNode(s, true))
		}
		add(doc, "steps", steps)
	}
	add(doc, "onTimeout", strNode(p.OnTimeout))
	add(doc, "alpha", numNode(p.Alpha))
	add(doc, "promoteAlpha", numNode(p.PromoteAlpha))
	if p.PromoteWindow != "" {
		add(doc, "promoteWindow", strNode(p.PromoteWindow))
	}
	metrics := &yaml.Node{Kind: yaml.SequenceNode}
	for _, m := range p.Metrics {
		metrics.Content = append(metrics.Content, metricNode(m))
	}
	add(doc, "metrics", metrics)

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		// Encoding a tree of plain mappings, lists and scalars cannot fail.
		panic("policy: encoding normalized form: " + err.Error())
	}
	enc.Close()
	return buf.Bytes()
}

// expansion is a comment showing the steps a preset expands to.
func expansion(steps []Step) string {
	var b strings.Builder
	b.WriteString("# expands to steps:")
	for _, s := range steps {
		b.WriteString("\n#   ")
		b.WriteString(strconv.FormatFloat(s.Weight, 'g', -1, 64))
		b.WriteString(": minDuration " + durationString(s.MinDuration))
		b.WriteString(", maxDuration " + durationString(s.MaxDuration))
		b.WriteString(", minRequests " + strconv.FormatInt(s.MinRequests, 10))
	}
	return b.String()
}

func stepNode(s Step, weight bool) *yaml.Node {
	n := mapNode()
	if weight {
		n.Style = yaml.FlowStyle
		add(n, "weight", numNode(s.Weight))
	}
	add(n, "minDuration", strNode(durationString(s.MinDuration)))
	add(n, "maxDuration", strNode(durationString(s.MaxDuration)))
	add(n, "minRequests", &yaml.Node{Kind: yaml.ScalarNode, Value: strconv.FormatInt(s.MinRequests, 10)})
	return n
}

func metricNode(m Metric) *yaml.Node {
	n := mapNode()
	add(n, "name", strNode(m.Name))
	add(n, "type", strNode(m.Type))
	switch m.Type {
	case TypeLatencyQuantile:
		add(n, "quantile", numNode(m.Quantile))
	case TypeCustom:
		add(n, "field", strNode(m.Field))
		add(n, "direction", strNode(m.Direction))
	}
	add(n, "maxIncrease", strNode(percentString(m.MaxIncrease)))
	add(n, "weight", numNode(m.Weight))
	return n
}

func mapNode() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func add(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, strNode(key), v)
}

// strNode is a string scalar; the encoder quotes it when it would
// otherwise read as another type ("true", "123").
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func numNode(f float64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Value: strconv.FormatFloat(f, 'g', -1, 64)}
}

// durationString formats d as a Prometheus duration (1m, 1h30m, 1d).
func durationString(d time.Duration) string {
	return model.Duration(d).String()
}

// percentString formats a fraction as the shortest percentage that parses
// back to exactly the same fraction: 0.2 is "20%", not "20.000000000000004%".
func percentString(frac float64) string {
	best := strconv.FormatFloat(frac*100, 'f', -1, 64)
	try := func(x float64) {
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if v, err := strconv.ParseFloat(s, 64); err == nil && v/100 == frac && len(s) < len(best) {
			best = s
		}
	}
	down, up := frac*100, frac*100
	for range 8 {
		down = math.Nextafter(down, math.Inf(-1))
		up = math.Nextafter(up, math.Inf(1))
		try(down)
		try(up)
	}
	return best + "%"
}

// hash returns "sha256:" and the hex SHA-256 of b.
func hash(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
