package policy

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// A decoder turns the yaml.Node tree of one document into a Policy,
// recording every problem with its position instead of stopping at the
// first. Walking the nodes ourselves, rather than decoding into a struct,
// is what gives positions, duplicate keys and paths.
type decoder struct {
	file    string
	errs    ErrorList
	deep    bool // the document is nested too deeply to look at further
	aliased bool // the document uses anchors or aliases
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{
		File: d.file, Line: n.Line, Col: n.Column, Path: path,
		Msg: fmt.Sprintf(format, args...),
	})
}

// document decodes one YAML document. An empty document yields nil and no
// error, so a file may end with "---".
func (d *decoder) document(doc *yaml.Node) *Policy {
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" && root.Value == "" {
		return nil
	}
	if !d.plain(root, "", 1) {
		return nil
	}
	return d.policy(root)
}

// plain checks that the tree under n is at most MaxDepth deep and uses no
// anchors or aliases. Policies have no use for either, and refusing them
// outright rules out alias bombs ("billion laughs") and recursion.
func (d *decoder) plain(n *yaml.Node, path string, depth int) bool {
	if depth > MaxDepth {
		d.errorf(n, topField(path), "nesting deeper than %d levels", MaxDepth)
		d.deep = true
		return false
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		// One error is enough: a document built on anchors has many.
		if !d.aliased {
			d.errorf(n, path, "YAML anchors and aliases are not allowed in policies")
			d.aliased = true
		}
		if n.Kind == yaml.AliasNode {
			return false
		}
	}
	for i, c := range n.Content {
		p := path
		switch n.Kind {
		case yaml.SequenceNode:
			p = index(path, i)
		case yaml.MappingNode:
			p = field(path, n.Content[i&^1].Value)
		}
		d.plain(c, p, depth+1)
		if d.deep {
			return false
		}
	}
	return !d.aliased
}

// topField returns the first element of path: "extra" for extra[0][0].
func topField(path string) string {
	if i := strings.IndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return path
}

func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// fields holds the values of a mapping by key.
type fields map[string]*yaml.Node

// mapping checks that n is a mapping whose keys are all in known and
// unique, and returns its values. On unknown or duplicate keys it still
// returns the known values, so that they are checked too.
func (d *decoder) mapping(n *yaml.Node, path string, known []string) (fields, bool) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", describe(n))
		return nil, false
	}
	f := make(fields)
	keys := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "want a field name, got %s", describe(k))
			continue
		}
		p := field(path, k.Value)
		if first, dup := keys[k.Value]; dup {
			d.errorf(k, p, "duplicate field (first at line %d)", first.Line)
			continue
		}
		keys[k.Value] = k
		if !slices.Contains(known, k.Value) {
			d.errorf(k, p, "unknown field%s", suggest(k.Value, known))
			continue
		}
		f[k.Value] = v
	}
	return f, true
}

// suggest returns ` (did you mean "x"?)` for the known name closest to
// name, if it is close enough to be a likely typo.
func suggest(name string, known []string) string {
	best, dist := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < dist {
			best, dist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names the kind of value n holds, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch tag := n.ShortTag(); tag {
	case "!!str":
		return fmt.Sprintf("string %q", n.Value)
	case "!!int":
		return "integer " + n.Value
	case "!!float":
		return "number " + n.Value
	case "!!bool":
		return "boolean " + n.Value
	case "!!null":
		return "null"
	case "!!timestamp":
		return "timestamp " + n.Value
	case "!!binary":
		return "binary data"
	default:
		return "a value tagged " + tag
	}
}

func isScalar(n *yaml.Node, tags ...string) bool {
	return n.Kind == yaml.ScalarNode && slices.Contains(tags, n.ShortTag())
}

// required reports a missing field of the mapping at n.
func (d *decoder) required(n *yaml.Node, f fields, name, path string) *yaml.Node {
	v := f[name]
	if v == nil {
		d.errorf(n, field(path, name), "missing required field")
	}
	return v
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if !isScalar(n, "!!str") {
		d.errorf(n, path, "want a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// match decodes a string that must match re, described as want.
func (d *decoder) match(n *yaml.Node, path string, re *regexp.Regexp, want string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !re.MatchString(s) {
		d.errorf(n, path, "want %s, got %q", want, s)
		return "", false
	}
	return s, true
}

// enum decodes a string that must be one of allowed.
func (d *decoder) enum(n *yaml.Node, path string, allowed ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		d.errorf(n, path, "want one of %s; got %q", strings.Join(allowed, ", "), s)
		return "", false
	}
	return s, true
}

// number decodes a finite number.
func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	var f float64
	if !isScalar(n, "!!int", "!!float") || n.Decode(&f) != nil {
		d.errorf(n, path, "want a number, got %s", describe(n))
		return 0, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		d.errorf(n, path, "want a finite number, got %s", n.Value)
		return 0, false
	}
	return f, true
}

// between decodes a number in the open interval (lo, hi), or (lo, hi] when
// closed is set.
func (d *decoder) between(n *yaml.Node, path string, lo, hi float64, closed bool) (float64, bool) {
	f, ok := d.number(n, path)
	if !ok {
		return 0, false
	}
	if f <= lo || f > hi || (f == hi && !closed) {
		bracket := ")"
		if closed {
			bracket = "]"
		}
		d.errorf(n, path, "must be in (%s, %s%s, got %s", formatNumber(lo), formatNumber(hi), bracket, n.Value)
		return 0, false
	}
	return f, true
}

// count decodes a non-negative integer.
func (d *decoder) count(n *yaml.Node, path string) (int64, bool) {
	var i int64
	if !isScalar(n, "!!int") || n.Decode(&i) != nil {
		d.errorf(n, path, "want a whole number, got %s", describe(n))
		return 0, false
	}
	if i < 0 {
		d.errorf(n, path, "must not be negative, got %d", i)
		return 0, false
	}
	return i, true
}

// duration decodes a positive Prometheus duration such as 30s, 5m or 1h30m.
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	if !isScalar(n, "!!str", "!!int") {
		d.errorf(n, path, "want a duration like 30s, 5m or 1h, got %s", describe(n))
		return 0, false
	}
	md, err := model.ParseDuration(n.Value)
	if err != nil {
		d.errorf(n, path, "want a duration like 30s, 5m or 1h, got %q", n.Value)
		return 0, false
	}
	if md <= 0 {
		d.errorf(n, path, "must be longer than 0s")
		return 0, false
	}
	return time.Duration(md), true
}

var percentRE = regexp.MustCompile(`^(\d+(\.\d*)?|\.\d+)%$`)

// percent decodes a percentage such as 20% or 12.5% and returns it as a
// fraction. A bare number is refused: 0.2 could mean 20% or 0.2%.
func (d *decoder) percent(n *yaml.Node, path string) (float64, bool) {
	if !isScalar(n, "!!str") || !percentRE.MatchString(n.Value) {
		d.errorf(n, path, "want a percentage like 20%%, got %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(n.Value, "%"), 64)
	if err != nil || v <= 0 || v > 1000 {
		d.errorf(n, path, "must be in (0%%, 1000%%], got %s", n.Value)
		return 0, false
	}
	return v / 100, true
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
