package router

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func putRoute(t testing.TB, kv jetstream.KeyValue, r Route) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), r.Rollout, data); err != nil {
		t.Fatalf("put %s: %v", r.Rollout, err)
	}
}

func seqIs(tb *Table, rollout string, seq uint64) func() bool {
	return func() bool { r, ok := tb.Route(rollout); return ok && r.Seq == seq }
}

func TestTableNoRouteIsBaseline(t *testing.T) {
	n := newTestNATS(t)
	tb := NewTable(n.js, TableOptions{})
	// Before Run, and before any entry: baseline.
	if got := tb.Assign("checkout", "user-1"); got != Baseline {
		t.Fatalf("Assign before Run = %v, want baseline", got)
	}
	runTable(t, tb)
	if _, ok := tb.Route("checkout"); ok {
		t.Fatal("Route(checkout) found in an empty bucket")
	}
	for i := range 1000 {
		if got := tb.Assign("checkout", fmt.Sprint("user-", i)); got != Baseline {
			t.Fatalf("Assign(checkout, user-%d) = %v with no route, want baseline", i, got)
		}
	}
}

func TestTableLoadsInitialValuesBeforeReady(t *testing.T) {
	n := newTestNATS(t)
	putRoute(t, n.kv, Route{Rollout: "a", Baseline: "v1", Canary: "v2", Weight: 5, State: "progressing", Step: 1, Seq: 3})
	putRoute(t, n.kv, Route{Rollout: "b", Weight: 50, State: "progressing", Seq: 9})
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)
	// Ready is closed only after the initial values: no polling needed.
	want := Route{Rollout: "a", Baseline: "v1", Canary: "v2", Weight: 5, State: "progressing", Step: 1, Seq: 3}
	if got, ok := tb.Route("a"); !ok || got != want {
		t.Fatalf("Route(a) = %+v, %v, want %+v", got, ok, want)
	}
	if got := len(tb.Routes()); got != 2 {
		t.Fatalf("len(Routes()) = %d, want 2", got)
	}
}

func TestTableUpdatesStaleRollbackDelete(t *testing.T) {
	n := newTestNATS(t)
	tb := NewTable(n.js, TableOptions{})
	runTable(t, tb)

	putRoute(t, n.kv, Route{Rollout: "co", Weight: 25, State: "progressing", Step: 2, Seq: 5})
	eventually(t, "seq 5", seqIs(tb, "co", 5))

	// A stale write (lower seq) never moves the weight.
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 1, State: "progressing", Step: 1, Seq: 4})
	eventually(t, "stale counted", func() bool { return tb.Stats().Stale == 1 })
	if r, _ := tb.Route("co"); r.Weight != 25 || r.Seq != 5 {
		t.Fatalf("after stale write Route(co) = %+v, want weight 25 seq 5", r)
	}

	// A bad entry is ignored and counted; the last good one stays.
	if _, err := n.kv.Put(context.Background(), "co", []byte(`{"weight":"lots"}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "invalid counted", func() bool { return tb.Stats().Invalid == 1 })
	if r, _ := tb.Route("co"); r.Weight != 25 {
		t.Fatalf("after a bad entry Route(co).Weight = %v, want 25", r.Weight)
	}

	// Find units on the canary at 25%, then roll back.
	var onCanary []string
	for i := range 1000 {
		u := fmt.Sprint("user-", i)
		if tb.Assign("co", u) == Canary {
			onCanary = append(onCanary, u)
		}
	}
	if len(onCanary) == 0 {
		t.Fatal("no unit on the canary at 25%")
	}
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 0, State: "rolledback", Step: 2, Seq: 6})
	eventually(t, "rollback", seqIs(tb, "co", 6))
	for _, u := range onCanary {
		if got := tb.Assign("co", u); got != Baseline {
			t.Fatalf("after rollback Assign(co, %s) = %v, want baseline", u, got)
		}
	}

	// Deleting the entry falls back to the baseline.
	if err := n.kv.Delete(context.Background(), "co"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delete", func() bool { _, ok := tb.Route("co"); return !ok })
}

func TestTableKeepsRoutesWhileNATSIsDown(t *testing.T) {
	n := newTestNATS(t)
	nc := n.connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable(js, TableOptions{Retry: 50 * time.Millisecond})
	runTable(t, tb)
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 40, State: "progressing", Seq: 2})
	eventually(t, "seq 2", seqIs(tb, "co", 2))

	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	eventually(t, "disconnect", func() bool { return !nc.IsConnected() })
	if r, ok := tb.Route("co"); !ok || r.Weight != 40 {
		t.Fatalf("with NATS down Route(co) = %+v, %v, want weight 40", r, ok)
	}

	// NATS comes back: the watch resumes and new weights arrive.
	n.srv = startServer(t, n.dir, n.port)
	eventually(t, "reconnect", n.nc.IsConnected)
	putRoute(t, n.kv, Route{Rollout: "co", Weight: 60, State: "progressing", Seq: 3})
	start := time.Now()
	eventually(t, "seq 3 after restart", seqIs(tb, "co", 3))
	t.Logf("recovered in %v, stats %+v", time.Since(start), tb.Stats())
}

func TestParseRoute(t *testing.T) {
	// The route entry of DESIGN.md, as the engine writes it.
	const design = `{"rollout":"checkout-42","baseline":"v41","canary":"v42","weight":5,
 "state":"progressing","step":1,"seq":7}`
	got, err := ParseRoute("checkout-42", []byte(design))
	want := Route{Rollout: "checkout-42", Baseline: "v41", Canary: "v42", Weight: 5, State: "progressing", Step: 1, Seq: 7}
	if err != nil || got != want {
		t.Fatalf("ParseRoute(design) = %+v, %v, want %+v", got, err, want)
	}
	bad := []struct{ key, data string }{
		{"a", `not json`},
		{"a", `{"rollout":"b","weight":1}`},
		{"a", `{"weight":101}`},
		{"a", `{"weight":-1}`},
		{"a.b", `{"weight":1}`},
		{"a", `{"weight":"1"}`},
	}
	for _, tt := range bad {
		if r, err := ParseRoute(tt.key, []byte(tt.data)); err == nil {
			t.Errorf("ParseRoute(%q, %s) = %+v, want an error", tt.key, tt.data, r)
		}
	}
}
