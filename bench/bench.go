// Package bench holds the parts of `verdict bench` that do not need the
// engine: the result, synthetic telemetry of a fixed size, pre-publishing,
// the plain JetStream consumer that is the reference for ingest, and the
// machine description printed next to every figure.
//
// The engine-side measurements live in cmd/verdict/bench.go, which wires
// the real engine (startStack) the way `verdict serve` does.
package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/telemetry"
)

// Result is the JSON object `verdict bench --json` prints. Rates are per
// second of wall time; maps are keyed by the number of active rollouts.
type Result struct {
	Events       int `json:"events"`       // single events per consume measurement
	Reps         int `json:"reps"`         // runs of each consume measurement; figures are medians
	Warmup       int `json:"warmup"`       // events per rollout consumed before each ingest measurement
	MessageBytes int `json:"messageBytes"` // size of one single event

	// RawConsumePerSec is the plain consumer with ingest's own pull
	// protocol (ingest.PullRaw: two pull requests of BatchSize
	// outstanding, AckAll per BatchSize without waiting), which only
	// acknowledges: the physical limit of this path, which Ratio divides by.
	RawConsumePerSec float64 `json:"rawConsumePerSec"`
	// RawConsumeFetchPerSec is a plain consumer that Fetches BatchSize at a
	// time and double-acks the last of each (AckAll), as ingest did before
	// it pulled continuously; RawConsumeExplicitAckPerSec the same with an
	// Ack per message.
	RawConsumeFetchPerSec       float64 `json:"rawConsumeFetchPerSec"`
	RawConsumeExplicitAckPerSec float64 `json:"rawConsumeExplicitAckPerSec"`
	// RawConsumeDecodePerSec is the Fetch AckAll consumer that also
	// decodes every message (telemetry.Decode): what decoding costs.
	RawConsumeDecodePerSec float64 `json:"rawConsumeDecodePerSec"`
	// RawConsumeStreamPerSec pulls continuously with nats.go's
	// Consumer.Messages and acks every BatchSize without waiting
	// (bench.RawStream): the client library's own continuous pull.
	RawConsumeStreamPerSec float64            `json:"rawConsumeStreamPerSec"`
	IngestPerSec           map[string]float64 `json:"ingestPerSec"`
	// Ratio is IngestPerSec over RawConsumePerSec (both medians).
	Ratio map[string]float64 `json:"ratio"`
	// RatioRuns are the ratios of each repetition: when both raw and
	// ingest run, each repetition measures the plain consumer and then
	// ingest at every rollout count, back to back, so that a change in
	// the machine's speed over the run moves both sides of a ratio.
	RatioRuns map[string][]float64 `json:"ratioRuns,omitempty"`
	// RawCPUPerEventUs and IngestCPUPerEventUs are the process's CPU time
	// (user and system, the embedded server's included) per event during
	// the runs of RawConsumePerSec and of IngestPerSec, medians over the
	// repetitions, in µs. They tell a run that cost more CPU per event
	// from one that left the cores idle: a rate times its CPU per event
	// is the cores it kept busy (at most 2 here). They move with the
	// machine's speed too.
	RawCPUPerEventUs    float64            `json:"rawCPUPerEventUs"`
	IngestCPUPerEventUs map[string]float64 `json:"ingestCPUPerEventUs"`
	// IngestGCRuns are the garbage collections the process completed
	// during each repetition's ingest window, by rollout count. With
	// 10,000 rollouts a cycle marks their state, and a window with one
	// more cycle than another costs about 1 µs per event more on this
	// machine (docs/PERFORMANCE.md, session 7): it tells such a
	// repetition from a slow machine.
	IngestGCRuns map[string][]int `json:"ingestGCRuns,omitempty"`
	// IngestGCCPURuns are the garbage collector's CPU time per event in
	// each repetition's ingest window, in µs, by rollout count: its part
	// of that repetition's CPU time per event (runtime/metrics, an
	// estimate of the runtime's).
	IngestGCCPURuns map[string][]float64 `json:"ingestGCCPURuns,omitempty"`
	// RatioExplicitAck is IngestPerSec over RawConsumeExplicitAckPerSec:
	// the engine (AckAll) against a plain consumer acking every message.
	RatioExplicitAck map[string]float64 `json:"ratioExplicitAck"`
	// IngestIgnored counts events the engine acknowledged without
	// analysing them (no running owner); it must be 0 for the figure to
	// count.
	IngestIgnored map[string]int64 `json:"ingestIgnored"`
	// IngestMsgsPerBatch is the mean size of ingest's batches (one
	// Deliver and one ack each).
	IngestMsgsPerBatch map[string]float64 `json:"ingestMsgsPerBatch"`

	BatchedObsPerSec  float64 `json:"batchedObsPerSec"`
	BatchedMsgsPerSec float64 `json:"batchedMsgsPerSec"`
	ObsPerBatch       int     `json:"obsPerBatch"`

	DecisionLatencyP50Ms float64 `json:"decisionLatencyP50Ms"`
	DecisionLatencyP99Ms float64 `json:"decisionLatencyP99Ms"`
	DecisionLatencyMaxMs float64 `json:"decisionLatencyMaxMs"`
	// TipStoredP50Ms and TipStoredP99Ms are the part of the decision
	// latency before Verdict can see the event: from publishing a tipping
	// event to the stream's timestamp of it (the server's clock, which is
	// this process's).
	TipStoredP50Ms         float64 `json:"tipStoredP50Ms"`
	TipStoredP99Ms         float64 `json:"tipStoredP99Ms"`
	DecisionSamples        int     `json:"decisionSamples"`
	DecisionsMissed        int     `json:"decisionsMissed"`        // counted in the percentiles with the time waited
	BackgroundMsgsPerBatch float64 `json:"backgroundMsgsPerBatch"` // ingest's mean batch during the latency run
	BackgroundBacklog      uint64  `json:"backgroundBacklog"`

	// RawLivePerSec is the plain AckAll consumer while the latency
	// measurement's background load is published (RawLivePublishPerSec
	// achieved), with RawLiveBacklog left at the end: whether the machine
	// carries that load in and out at all.
	RawLivePerSec          float64 `json:"rawLivePerSec"`
	RawLivePublishPerSec   float64 `json:"rawLivePublishPerSec"`
	RawLiveBacklog         uint64  `json:"rawLiveBacklog"` // events not yet handled when the latency run ended
	BackgroundTargetPerSec float64 `json:"backgroundTargetPerSec"`
	BackgroundPerSec       float64 `json:"backgroundPerSec"` // achieved publish rate during the latency run

	Rollouts        int     `json:"rollouts"`        // rollouts of the memory figure
	BytesPerRollout float64 `json:"bytesPerRollout"` // heap+stacks per active rollout, whole process
	RolloutStartSec float64 `json:"rolloutStartSec"` // time for every owner to start and publish its start decision
	ProcessSysBytes uint64  `json:"processSysBytes"` // Go runtime's memory from the OS with all rollouts active
	ProcessRSSBytes uint64  `json:"processRSSBytes"` // resident set then (0 where /proc is missing)

	PublishPerSec float64 `json:"publishPerSec"` // router.Emitter, single events, acked

	Machine  Machine `json:"machine"`
	Seconds  float64 `json:"seconds"`  // wall time of the whole run
	Revision string  `json:"revision"` // VCS revision of the binary, "-dirty" when built from a modified tree
}

// Machine describes where a run happened. Load averages are read before
// and after the run: the figures are only comparable on a quiet machine.
type Machine struct {
	CPUs        int       `json:"cpus"`
	CPUModel    string    `json:"cpuModel"`
	GoVersion   string    `json:"goVersion"`
	LoadBefore  []float64 `json:"loadBefore"`
	LoadAfter   []float64 `json:"loadAfter"`
	GOMAXPROCS  int       `json:"gomaxprocs"`
	Description string    `json:"-"`
}

// stampedRevision is the revision `make build` passes with -ldflags -X,
// for binaries built without VCS stamping (-buildvcs=false).
var stampedRevision string

// Revision returns the VCS revision the running binary was built from,
// with "-dirty" when the tree had changes: Go's own VCS stamp, or else
// the one make passed (stampedRevision), or "" when unknown (go test, a
// plain go build with -buildvcs=false).
func Revision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return stampedRevision
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return stampedRevision
	}
	return rev[:min(12, len(rev))] + dirty
}

// DescribeMachine reads the CPU count and model, the Go version and the
// load average.
func DescribeMachine() Machine {
	return Machine{
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
		LoadBefore: LoadAvg(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// LoadAvg returns the 1, 5 and 15 minute load averages, or nil where
// /proc/loadavg does not exist.
func LoadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	var out []float64
	for _, s := range f[:min(3, len(f))] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil
		}
		out = append(out, v)
	}
	return out
}

// RSS returns the process's resident set size, or 0 where
// /proc/self/status does not exist.
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// SingleEvent returns the i-th synthetic single event of a rollout: about
// 200 bytes (with a rollout id of 11 bytes) with every field of the
// DESIGN.md example, so it takes telemetry's fast decoding path.
// Baseline and canary alternate and see the same latencies and outcomes,
// so the analyzer never finds a difference and no rollout decides.
func SingleEvent(dst []byte, rollout string, i int, t time.Time) []byte {
	v := analyzer.Variant(i & 1)
	k := i >> 1
	lat := 5 + float64(k%97)*0.75
	failed := k%100 == 7
	status := 200
	if failed {
		status = 503
	}
	dst = append(dst, `{"rollout":"`...)
	dst = append(dst, rollout...)
	dst = append(dst, `","variant":"`...)
	if v == analyzer.Canary {
		dst = append(dst, "canary"...)
	} else {
		dst = append(dst, "baseline"...)
	}
	dst = append(dst, `","time":"`...)
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `","latency_ms":`...)
	dst = strconv.AppendFloat(dst, lat, 'f', 2, 64)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, `,"error":`...)
	dst = strconv.AppendBool(dst, failed)
	dst = append(dst, `,"unit":"user-`...)
	dst = appendPadded(dst, k%1000000, 7)
	dst = append(dst, `","id":"evt-`...)
	dst = appendPadded(dst, i, 12)
	dst = append(dst, `","values":{"cpu_ms":`...)
	dst = strconv.AppendFloat(dst, 1+float64(k%13)*0.25, 'f', 2, 64)
	dst = append(dst, `}}`...)
	return dst
}

func appendPadded(dst []byte, n, width int) []byte {
	s := strconv.Itoa(n)
	for range width - len(s) {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// BatchEvent returns a batch message of n requests of one variant (the
// batch form of docs/EVENTS.md), with the same latency and error pattern
// for both variants.
func BatchEvent(rollout string, v analyzer.Variant, n int, t time.Time) ([]byte, error) {
	b := telemetry.NewBuilder(rollout, v)
	for k := range n {
		b.Add(5+float64(k%97)*0.75, k%100 == 7)
	}
	r := b.Record("", t)
	return telemetry.Encode(&r)
}

// Percentile returns the q-quantile (0..1) of xs by the nearest-rank
// method; xs is sorted in place.
func Percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// Rounded returns x with three significant decimals for display and JSON.
func Rounded(x float64) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	p := math.Pow(10, 3-math.Ceil(math.Log10(math.Abs(x))))
	if p < 1 {
		return math.Round(x)
	}
	return math.Round(x*p) / p
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// joinRuns formats each repetition's figure and joins them with spaces.
func joinRuns[T any](xs []T, format func(T) string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = format(x)
	}
	return strings.Join(s, " ")
}

// fmtRun formats one repetition's ratio or µs figure.
func fmtRun(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }

// WriteTable writes r for people, with the targets of issue 4 beside the
// figures.
func WriteTable(w io.Writer, r *Result, counts []int) {
	m := r.Machine
	if r.Revision != "" {
		fmt.Fprintf(w, "revision %s\n", r.Revision)
	}
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s, GOMAXPROCS %d, load %v before, %v after\n",
		m.CPUs, m.CPUModel, m.GoVersion, m.GOMAXPROCS, m.LoadBefore, m.LoadAfter)
	warm := ""
	if r.Warmup > 0 {
		warm = fmt.Sprintf(", after %d per rollout", r.Warmup)
	}
	fmt.Fprintf(w, "single events of %d bytes, %d per consume measurement%s (median of %d runs); run took %.0fs\n\n",
		r.MessageBytes, r.Events, warm, r.Reps, r.Seconds)
	row := func(name, value, target string) { fmt.Fprintf(w, "  %-40s %16s   %s\n", name, value, target) }
	rate := func(x float64) string { return fmtInt(x) + "/s" }
	cpu := func(us, perSec float64) string {
		if us == 0 {
			return ""
		}
		return fmt.Sprintf("; %.2f µs CPU/event, %.2f cores", us, us*perSec/1e6)
	}
	row("raw consume, ingest's pull, AckAll", rate(r.RawConsumePerSec), "(reference: the ratio's denominator)"+cpu(r.RawCPUPerEventUs, r.RawConsumePerSec))
	row("raw consume, Fetch, AckAll per batch", rate(r.RawConsumeFetchPerSec), "")
	row("raw consume, Fetch, explicit acks", rate(r.RawConsumeExplicitAckPerSec), "")
	row("raw consume, Fetch, AckAll + decode", rate(r.RawConsumeDecodePerSec), "(what decoding costs)")
	row("raw consume, Consumer.Messages", rate(r.RawConsumeStreamPerSec), "(nats.go's continuous pull)")
	for _, n := range counts {
		k := strconv.Itoa(n)
		runs := ""
		if rr := r.RatioRuns[k]; len(rr) > 1 {
			runs = "; runs " + joinRuns(rr, fmtRun)
		}
		if g := r.IngestGCRuns[k]; len(g) > 0 {
			runs += "; GC cycles " + joinRuns(g, strconv.Itoa)
		}
		if g := r.IngestGCCPURuns[k]; len(g) > 0 {
			runs += "; GC µs/event " + joinRuns(g, fmtRun)
		}
		row(fmt.Sprintf("ingest, %d rollouts", n), rate(r.IngestPerSec[k]),
			fmt.Sprintf("ratio %.2f (target >= 0.80)%s; %.2f of explicit acks%s", r.Ratio[k], runs, r.RatioExplicitAck[k],
				cpu(r.IngestCPUPerEventUs[k], r.IngestPerSec[k])))
	}
	row(fmt.Sprintf("batched, %d obs/message", r.ObsPerBatch), rate(r.BatchedObsPerSec)+" obs", "target >= 10,000,000 obs/s")
	row("decision latency p50", fmt.Sprintf("%.1f ms", r.DecisionLatencyP50Ms),
		fmt.Sprintf("%d samples (%d missed), background %s/s, backlog %s",
			r.DecisionSamples, r.DecisionsMissed, fmtInt(r.BackgroundPerSec), fmtInt(float64(r.BackgroundBacklog))))
	row("decision latency p99", fmt.Sprintf("%.1f ms", r.DecisionLatencyP99Ms),
		fmt.Sprintf("target <= 50 ms; until the stream stored the event: p50 %.1f ms, p99 %.1f ms", r.TipStoredP50Ms, r.TipStoredP99Ms))
	row("raw consume while publishing", rate(r.RawLivePerSec),
		fmt.Sprintf("published %s/s, backlog %s", fmtInt(r.RawLivePublishPerSec), fmtInt(float64(r.RawLiveBacklog))))
	row(fmt.Sprintf("memory per rollout (%d active)", r.Rollouts), fmt.Sprintf("%.1f KiB", r.BytesPerRollout/1024),
		"target <= 64 KiB")
	row("process memory, all rollouts active", fmt.Sprintf("%.0f MiB", float64(r.ProcessSysBytes)/(1<<20)),
		fmt.Sprintf("target < 1 GiB (runtime Sys; RSS %.0f MiB)", float64(r.ProcessRSSBytes)/(1<<20)))
	row("router emitter publish", rate(r.PublishPerSec), "(single events, acked)")
}

func fmtInt(x float64) string {
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[0] != '-' {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
