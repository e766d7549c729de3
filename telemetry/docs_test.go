package telemetry

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// docExample is a ```json block of docs/EVENTS.md. A block whose fence reads
// "```json <reason>" documents a message rejected with that reason.
type docExample struct {
	line   int
	json   string
	reason Reason
}

func docExamples(tb testing.TB) []docExample {
	tb.Helper()
	data, err := os.ReadFile("../docs/EVENTS.md")
	if err != nil {
		tb.Fatal(err)
	}
	var out []docExample
	var cur *docExample
	var body []string
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```json"):
			cur = &docExample{line: i + 1, reason: Reason(strings.TrimSpace(strings.TrimPrefix(line, "```json")))}
			body = body[:0]
		case cur != nil && strings.HasPrefix(line, "```"):
			cur.json = strings.Join(body, "\n")
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body = append(body, line)
		}
	}
	if len(out) == 0 {
		tb.Fatal("docs/EVENTS.md has no ```json examples")
	}
	return out
}

// TestDocExamples keeps docs/EVENTS.md honest: its accepted examples decode,
// its rejected ones are rejected with the reason on their fence.
func TestDocExamples(t *testing.T) {
	var good, bad int
	for _, ex := range docExamples(t) {
		_, err := Decode([]byte(ex.json))
		if ex.reason == "" {
			good++
			if err != nil {
				t.Errorf("EVENTS.md:%d: Decode = %v, want success", ex.line, err)
			}
			continue
		}
		bad++
		var e *Error
		if !errors.As(err, &e) || e.Reason != ex.reason {
			t.Errorf("EVENTS.md:%d: Decode = %v, want reason %s", ex.line, err, ex.reason)
		}
	}
	if good < 3 || bad < 3 {
		t.Errorf("EVENTS.md has %d accepted and %d rejected examples; the tests expect more", good, bad)
	}
}

// TestDocReasons checks that the reasons table lists every Reason.
func TestDocReasons(t *testing.T) {
	data, err := os.ReadFile("../docs/EVENTS.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Reasons() {
		if !strings.Contains(string(data), "| `"+string(r)+"` |") {
			t.Errorf("docs/EVENTS.md does not document reason %s", r)
		}
	}
}
