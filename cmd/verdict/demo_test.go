package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestDemo runs `verdict demo` as the README's main command does: the good
// canary completes, the bad one is rolled back, and it exits 0.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"demo", "--speed", "20", "--seed", "3"}, &out, &errb)
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"checkout  completed", "search    rollback at step 1", "why: error-rate"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestDemoHTTP is the end-to-end test on real HTTP traffic: backends, the
// proxy, a load generator; the bad canary is rolled back on the proxy's
// telemetry and no request reaches it afterwards.
func TestDemoHTTP(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"demo", "--http", "--seed", "5", "--timeout", "60s"}, &out, &errb)
	if code != 0 {
		t.Fatalf("demo --http exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"web       rollback at step 1", "0 of them to the canary"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo --http output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDemoUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"demo", "extra"}, &out, &errb); code != 2 {
		t.Errorf("demo with an argument: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"demo", "--speed", "0"}, &out, &errb); code != 2 {
		t.Errorf("demo --speed 0: exit %d, want 2", code)
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"demo", "-h"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--http") {
		t.Errorf("demo -h: exit %d, help:\n%s", code, errb.String())
	}
}
