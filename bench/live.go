package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/verdict-dev/verdict/actuator"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/ingest"
	"github.com/verdict-dev/verdict/router"
)

// RolloutIDs returns n rollout ids, <prefix>-00001 and so on.
func RolloutIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i+1)
	}
	return ids
}

// PutSpecs writes a spec under policy for every id, with a few concurrent
// writers.
func PutSpecs(ctx context.Context, act *actuator.Actuator, policy string, ids []string) error {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	var next atomic.Int64
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(len(ids)); i = next.Add(1) - 1 {
				s := engine.Spec{Rollout: ids[i], Policy: policy, Baseline: "v1", Canary: "v2"}
				if err := act.PutSpec(ctx, s); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// WaitHandled waits until in has accepted n messages, for at most five
// minutes; a rejected message is an error.
func WaitHandled(ctx context.Context, in *ingest.Ingester, n int) error {
	start := time.Now()
	for {
		s := in.Stats()
		handled := s.Accepted
		for _, v := range s.Rejected {
			handled += v
		}
		if handled >= uint64(n) {
			if handled != s.Accepted {
				return fmt.Errorf("%d of %d messages rejected: %v", handled-s.Accepted, n, s.Rejected)
			}
			return nil
		}
		if time.Since(start) > 5*time.Minute || ctx.Err() != nil {
			return fmt.Errorf("%d of %d messages consumed", handled, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Heap returns the memory the Go runtime holds for live objects and
// goroutine stacks after a collection, and all it holds from the OS.
func Heap() (live, sys uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse, m.Sys
}

// WriteHeapProfile writes the heap profile to the file name.
func WriteHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Arrival is a decision and when a subscriber received it.
type Arrival struct {
	Decision engine.Decision
	At       time.Time
}

// Tip publishes msgs[i], the event that tips rollout tips[i] into a
// rollback, on <prefix>.<rollout>, one every 50ms, and returns the
// latencies from each publish to its rollback arriving on decisions, in
// milliseconds. A rollback that has not arrived 10s after the last tip is
// missed: it counts with the time waited, so the percentiles stay an
// honest lower bound. Any other decision is an error.
func Tip(ctx context.Context, js jetstream.JetStream, prefix string, tips []string, msgs [][]byte, decisions <-chan Arrival) (lat []float64, missed int, err error) {
	sent := make(map[string]time.Time, len(tips))
	lat = make([]float64, 0, len(tips))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	next := 0
	var deadline time.Time
	for len(lat) < len(tips) {
		select {
		case <-tick.C:
			if next == len(tips) {
				if time.Now().After(deadline) {
					for _, t0 := range sent {
						lat = append(lat, ms(time.Since(t0)))
					}
					return lat, len(sent), nil
				}
				continue
			}
			id := tips[next]
			sent[id] = time.Now()
			if _, err := js.PublishAsync(prefix+"."+id, msgs[next]); err != nil {
				return nil, 0, err
			}
			if next++; next == len(tips) {
				deadline = time.Now().Add(10 * time.Second)
			}
		case a := <-decisions:
			d := a.Decision
			t0, ok := sent[d.Rollout]
			if !ok || d.Action != engine.ActionRollback {
				return nil, 0, fmt.Errorf("unexpected decision %s of %s: %s", d.Action, d.Rollout, d.Reason)
			}
			delete(sent, d.Rollout)
			lat = append(lat, ms(a.At.Sub(t0)))
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return lat, 0, nil
}

// Background publishes single events on <prefix>.<rollout>, round robin
// over ids, at rate events per second until stop is closed, and returns
// the rate it achieved: lower when the server stalls the publisher.
func Background(js jetstream.JetStream, prefix string, ids []string, rate float64, stop <-chan struct{}) float64 {
	start := time.Now()
	sent := 0
	var buf []byte
	for {
		select {
		case <-stop:
			return float64(sent) / time.Since(start).Seconds()
		default:
		}
		want := int(rate * time.Since(start).Seconds())
		for ; sent < want; sent++ {
			id := ids[sent%len(ids)]
			buf = SingleEvent(buf[:0], id, sent/len(ids), time.Now())
			if _, err := js.PublishAsync(prefix+"."+id, slices.Clone(buf)); err != nil {
				break // stalled: the server does not keep up; the achieved rate says so
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// Emit measures a router.Emitter on its own connection to url: n single
// events emitted at once (its queue holds them all), timed until Close
// returns with every publish acknowledged. prefix is the subject prefix,
// without the trailing dot.
func Emit(ctx context.Context, url, prefix string, n int) (float64, error) {
	conn, err := nats.Connect(url, nats.Name("verdict-bench-emitter"))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	e, err := router.NewEmitter(conn, router.EmitterOptions{SubjectPrefix: prefix + ".", QueueSize: n})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range n {
		e.Emit(router.Event{Rollout: "emit-00001", Variant: router.Variant(i & 1), Unit: "user-" + strconv.Itoa(i%100000),
			Latency: time.Duration(5000+i%97*750) * time.Microsecond, Failed: i%100 == 7})
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := e.Close(cctx); err != nil {
		return 0, err
	}
	el := time.Since(start)
	if s := e.Stats(); s.Emitted != uint64(n) {
		return 0, fmt.Errorf("emitter: %d of %d acknowledged (%+v)", s.Emitted, n, s)
	}
	return float64(n) / el.Seconds(), nil
}

// ServerLog passes an embedded server's warnings and errors to w: they
// explain failures that clients only see as error codes.
type ServerLog struct{ W io.Writer }

// Noticef discards notices.
func (l ServerLog) Noticef(string, ...any) {}

// Debugf discards debug output.
func (l ServerLog) Debugf(string, ...any) {}

// Tracef discards traces.
func (l ServerLog) Tracef(string, ...any) {}

// Warnf writes a warning.
func (l ServerLog) Warnf(f string, a ...any) { fmt.Fprintf(l.W, "nats-server: warning: "+f+"\n", a...) }

// Errorf writes an error.
func (l ServerLog) Errorf(f string, a ...any) { fmt.Fprintf(l.W, "nats-server: error: "+f+"\n", a...) }

// Fatalf writes a fatal error; the server stops on its own.
func (l ServerLog) Fatalf(f string, a ...any) { fmt.Fprintf(l.W, "nats-server: fatal: "+f+"\n", a...) }
