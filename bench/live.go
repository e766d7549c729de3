package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
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
// honest lower bound. Any other decision is an error. stored holds, for
// each tip the stream acknowledged, the milliseconds from its publish to
// the stream's timestamp of it: the part of the latency before any of
// Verdict's code can see the event.
func Tip(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, prefix string, tips []string, msgs [][]byte, decisions <-chan Arrival) (lat, stored []float64, missed int, err error) {
	sent := make(map[string]time.Time, len(tips)) // tips whose rollback has not arrived
	pubs := make([]tipPub, 0, len(tips))
	lat = make([]float64, 0, len(tips))
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
						lat = append(lat, millis(time.Since(t0)))
					}
					missed = len(sent)
					stored, err = storedAfter(ctx, stream, pubs)
					return lat, stored, missed, err
				}
				continue
			}
			id := tips[next]
			at := time.Now()
			sent[id] = at
			f, err := js.PublishAsync(prefix+"."+id, msgs[next])
			if err != nil {
				return nil, nil, 0, err
			}
			pubs = append(pubs, tipPub{id, at, f})
			if next++; next == len(tips) {
				deadline = time.Now().Add(10 * time.Second)
			}
		case a := <-decisions:
			d := a.Decision
			t0, ok := sent[d.Rollout]
			if !ok || d.Action != engine.ActionRollback {
				return nil, nil, 0, fmt.Errorf("unexpected decision %s of %s: %s", d.Action, d.Rollout, d.Reason)
			}
			delete(sent, d.Rollout)
			lat = append(lat, millis(a.At.Sub(t0)))
		case <-ctx.Done():
			return nil, nil, 0, ctx.Err()
		}
	}
	stored, err = storedAfter(ctx, stream, pubs)
	return lat, stored, 0, err
}

// tipPub is a tipping event Tip published: when, and its acknowledgement.
type tipPub struct {
	id  string
	at  time.Time
	ack jetstream.PubAckFuture
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// storedAfter returns, for each tip, the milliseconds from its publish to
// the stream's timestamp of the message its acknowledgement names.
func storedAfter(ctx context.Context, stream jetstream.Stream, pubs []tipPub) ([]float64, error) {
	out := make([]float64, 0, len(pubs))
	for _, p := range pubs {
		var seq uint64
		select {
		case ack := <-p.ack.Ok():
			seq = ack.Sequence
		case err := <-p.ack.Err():
			return nil, fmt.Errorf("tip %s: publish: %w", p.id, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			return nil, fmt.Errorf("tip %s: read back message %d: %w", p.id, seq, err)
		}
		out = append(out, millis(m.Time.Sub(p.at)))
	}
	return out, nil
}

// backgroundMaxPending bounds Background's unacknowledged publishes, as
// jetstream.WithPublishAsyncMaxPending did when it used PublishAsync.
const backgroundMaxPending = 4096

// Background publishes single events on <prefix>.<rollout>, round robin
// over ids, at rate events per second until stop is closed, and returns
// how many it published and the rate it achieved: lower when the server
// stalls the publisher.
//
// It stands in for routers, which run on machines of their own, so it
// costs this process (which shares its cores with the server and the
// engine under test) as little as it can: every publish carries a reply
// subject, so the stream stores and acknowledges it as it does a router's,
// but the acknowledgements arrive on one subscription that only counts
// them, where jetstream.PublishAsync keeps a future per message and
// decodes every acknowledgement. At most backgroundMaxPending publishes
// are unacknowledged at a time. It fails when the stream refuses a
// publish, or when any is still unacknowledged 10s after stop: then the
// load was not what the rate says.
func Background(nc *nats.Conn, prefix string, ids []string, rate float64, stop <-chan struct{}) (BackgroundLoad, error) {
	subjects := make([]string, len(ids))
	for i, id := range ids {
		subjects[i] = prefix + "." + id
	}
	inbox := nc.NewInbox()
	var answered, refused atomic.Int64 // replies, and of them refusals
	var firstRefusal atomic.Value
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		if reason, ok := pubAckRefused(m); ok {
			firstRefusal.CompareAndSwap(nil, reason)
			refused.Add(1)
		}
		answered.Add(1)
	})
	if err != nil {
		return BackgroundLoad{}, fmt.Errorf("background: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return BackgroundLoad{}, fmt.Errorf("background: %w", err)
	}
	start := time.Now()
	var sent int64
	var buf []byte
	var el time.Duration
publish:
	for {
		select {
		case <-stop:
			el = time.Since(start)
			break publish
		default:
		}
		want := int64(rate * time.Since(start).Seconds())
		for ; sent < want && sent-answered.Load() < backgroundMaxPending; sent++ {
			i := int(sent % int64(len(ids)))
			buf = SingleEvent(buf[:0], ids[i], int(sent/int64(len(ids))), time.Now())
			if err := nc.PublishRequest(subjects[i], inbox, buf); err != nil { // copies buf
				return BackgroundLoad{}, fmt.Errorf("background: publish: %w", err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	for wait := time.Now(); answered.Load() < sent; time.Sleep(time.Millisecond) {
		if time.Since(wait) > 10*time.Second {
			return BackgroundLoad{}, fmt.Errorf("background: %d of %d publishes unacknowledged 10s after the end", sent-answered.Load(), sent)
		}
	}
	if n := refused.Load(); n > 0 {
		return BackgroundLoad{}, fmt.Errorf("background: the stream refused %d of %d publishes, first: %v", n, sent, firstRefusal.Load())
	}
	return BackgroundLoad{Published: sent, PerSec: float64(sent) / el.Seconds()}, nil
}

// BackgroundLoad is what Background published, every message acknowledged.
type BackgroundLoad struct {
	Published int64
	PerSec    float64
}

// pubAckRefused reports whether m, the reply to a JetStream publish, is
// not an acknowledgement (a status such as 503 no responders, or an
// error), and why.
func pubAckRefused(m *nats.Msg) (string, bool) {
	if st := m.Header.Get("Status"); st != "" {
		return "status " + st + " " + m.Header.Get("Description"), true
	}
	var ack struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if !bytes.Contains(m.Data, []byte(`"error"`)) {
		return "", false // the common case, without decoding
	}
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		return "undecodable reply " + strconv.Quote(string(m.Data)), true
	}
	if ack.Error == nil {
		return "", false // "error" was in a name
	}
	return fmt.Sprintf("%d %s", ack.Error.Code, ack.Error.Description), true
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
