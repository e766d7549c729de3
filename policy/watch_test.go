package policy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/verdict-dev/verdict/policy"
)

// watchEvent is one callback of a Watcher: a set or an error.
type watchEvent struct {
	set policy.Set
	err error
}

func TestWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"a.yaml": goodA})
		ctx, cancel := context.WithCancel(t.Context())
		var events []watchEvent
		done := make(chan error)
		w := policy.NewWatcher(dir, time.Second)
		go func() {
			done <- w.Run(ctx,
				func(s policy.Set) { events = append(events, watchEvent{set: s}) },
				func(err error) { events = append(events, watchEvent{err: err}) })
		}()
		write := func(name, data string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// next waits one interval and returns the callbacks made in it.
		next := func() []watchEvent {
			time.Sleep(time.Second)
			synctest.Wait()
			ev := events
			events = nil
			return ev
		}

		synctest.Wait()
		ev := events
		events = nil
		if len(ev) != 1 || ev[0].err != nil || !slices.Equal(names(ev[0].set), []string{"a"}) {
			t.Fatalf("first load: %+v, want set [a]", ev)
		}
		first := ev[0].set

		if ev := next(); len(ev) != 0 {
			t.Errorf("no change: %+v, want no callback", ev)
		}

		write("b.yaml", goodB)
		ev = next()
		if len(ev) != 1 || ev[0].err != nil || !slices.Equal(names(ev[0].set), []string{"a", "b"}) {
			t.Fatalf("added b.yaml: %+v, want set [a b]", ev)
		}
		second := ev[0].set
		if second["a"] == first["a"] {
			t.Errorf("reload reused the old *Policy; sets must not share mutable state")
		}
		if len(first) != 1 {
			t.Errorf("the first set changed to %v after a reload", names(first))
		}

		write("b.yaml", goodB+"alpha: 7\n")
		ev = next()
		var list policy.ErrorList
		if len(ev) != 1 || !errors.As(ev[0].err, &list) {
			t.Fatalf("broke b.yaml: %+v, want one ErrorList", ev)
		}
		if ev := next(); len(ev) != 0 {
			t.Errorf("still broken: %+v, want no repeated callback", ev)
		}

		write("b.yaml", goodB) // back to the set already in force
		if ev := next(); len(ev) != 0 {
			t.Errorf("fixed b.yaml back to the current set: %+v, want no callback", ev)
		}

		write("a.yaml", "# a comment changes nothing\n"+goodA)
		if ev := next(); len(ev) != 0 {
			t.Errorf("comment only: %+v, want no callback", ev)
		}

		write("a.yaml", goodA+"onTimeout: hold\n")
		ev = next()
		if len(ev) != 1 || ev[0].set == nil || ev[0].set["a"].OnTimeout != policy.OnTimeoutHold {
			t.Fatalf("changed a.yaml: %+v, want a set with onTimeout hold", ev)
		}

		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

func TestWatcherMissingDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var errs []error
		w := policy.NewWatcher(filepath.Join(t.TempDir(), "missing"), time.Second)
		err := w.Run(ctx, func(policy.Set) { t.Error("onChange called for a missing directory") },
			func(err error) { errs = append(errs, err) })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run = %v, want context.DeadlineExceeded", err)
		}
		if len(errs) != 1 {
			t.Errorf("onError called %d times, want once: %v", len(errs), errs)
		}
	})
}
