package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// fencedBlocks returns the bodies of the ```lang blocks of a Markdown file.
func fencedBlocks(t *testing.T, path, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	parts := strings.Split(string(b), "```"+lang+"\n")
	for _, p := range parts[1:] {
		end := strings.Index(p, "```")
		if end < 0 {
			t.Fatalf("%s: unterminated ```%s block", path, lang)
		}
		out = append(out, p[:end])
	}
	return out
}

// TestReadmePayloads decodes every JSON and YAML example of the README with
// the code that reads them in production, so the README cannot rot.
func TestReadmePayloads(t *testing.T) {
	blocks := fencedBlocks(t, "../../README.md", "json")
	if len(blocks) < 4 {
		t.Fatalf("README has %d json blocks, want at least 4 (event, batch, decision, route)", len(blocks))
	}
	kinds := map[string]int{}
	for _, b := range blocks {
		b = strings.TrimSpace(b)
		switch {
		case strings.Contains(b, `"specversion"`):
			kinds["decision"]++
			var ev engine.CloudEvent
			dec := json.NewDecoder(strings.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ev); err != nil {
				t.Errorf("README decision does not decode: %v\n%s", err, b)
			}
			if ev.ID != ev.Data.EventID() {
				t.Errorf("README decision id %q, want %q", ev.ID, ev.Data.EventID())
			}
		case strings.Contains(b, `"state"`):
			kinds["route"]++
			var r engine.Route
			dec := json.NewDecoder(strings.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				t.Errorf("README route does not decode: %v\n%s", err, b)
			}
		default:
			rec, err := telemetry.Decode([]byte(b))
			if err != nil {
				t.Errorf("README telemetry example rejected: %v\n%s", err, b)
				continue
			}
			if rec.Batch != nil {
				kinds["batch"]++
			} else {
				kinds["event"]++
			}
		}
	}
	for _, k := range []string{"event", "batch", "decision", "route"} {
		if kinds[k] == 0 {
			t.Errorf("README has no %s example", k)
		}
	}
	for i, y := range fencedBlocks(t, "../../README.md", "yaml") {
		if _, err := policy.Parse("README.md", []byte(y)); err != nil {
			t.Errorf("README policy example %d: %v", i, err)
		}
	}
	// The Go snippet publishes a payload too.
	for _, g := range fencedBlocks(t, "../../README.md", "go") {
		for _, m := range regexp.MustCompile("`(\\{.*?\\})`").FindAllStringSubmatch(g, -1) {
			if _, err := telemetry.Decode([]byte(m[1])); err != nil {
				t.Errorf("README Go example payload rejected: %v\n%s", err, m[1])
			}
		}
	}
}

// TestReadmeCommands checks that every command and flag the README lists
// exists, by asking each command for its -h text.
func TestReadmeCommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `verdict ([a-z]+)([^`]*)`")
	flagRe := regexp.MustCompile(`--([a-z][a-z-]*)`)
	seen := 0
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		name, rest := m[1], m[2]
		seen++
		if _, ok := commands[name]; !ok {
			t.Errorf("README lists `verdict %s`, which is not a command", name)
			continue
		}
		var out, errb bytes.Buffer
		args := []string{name, "-h"}
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Errorf("verdict %s -h: exit %d", name, code)
		}
		help := out.String() + errb.String()
		line := m[0]
		// The row's cell may go on after the code span: take its flags too.
		if i := strings.Index(string(b), line); i >= 0 {
			end := strings.IndexByte(string(b)[i:], '\n')
			line = string(b)[i : i+end]
		}
		_ = rest
		for _, f := range flagRe.FindAllStringSubmatch(line, -1) {
			if !strings.Contains(help, "-"+f[1]) {
				t.Errorf("README says `verdict %s` takes --%s, but its -h does not list it", name, f[1])
			}
		}
	}
	if seen < 8 {
		t.Errorf("README command table lists %d commands, want every one", seen)
	}
	for name := range commands {
		if !strings.Contains(string(b), "`verdict "+name) {
			t.Errorf("command %s is not documented in the README", name)
		}
	}
}
