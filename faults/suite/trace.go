package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
	"github.com/verdict-dev/verdict/engine"
	"github.com/verdict-dev/verdict/policy"
	"github.com/verdict-dev/verdict/telemetry"
)

// event is one recorded telemetry message.
type event struct {
	rollout string
	id      string // unique in its rollout; the Nats-Msg-Id is rollout/id
	data    []byte
	rec     telemetry.Record
}

// traces are the events of every rollout, merged in time order (stable),
// and the policy that judges them.
type traces struct {
	pol      *policy.Policy
	polFile  string
	events   []event
	rollouts []string
	start    time.Time // the earliest event: the engine's fixed clock
}

func loadTraces(polFile string, files []string) (*traces, error) {
	set, err := policy.Load(polFile)
	if err != nil {
		return nil, err
	}
	if len(set) != 1 {
		return nil, fmt.Errorf("%s: want one policy, have %d", polFile, len(set))
	}
	tr := &traces{polFile: polFile}
	for _, p := range set {
		tr.pol = p
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 4<<20)
		rollout := ""
		for n := 1; sc.Scan(); n++ {
			line := bytes.Clone(sc.Bytes())
			rec, err := telemetry.Decode(line)
			if err != nil || rec.Time.IsZero() || rec.ID == "" {
				continue // the bad lines of a trace are not part of it
			}
			if rollout == "" {
				rollout = rec.Rollout
				tr.rollouts = append(tr.rollouts, rollout)
			} else if rec.Rollout != rollout {
				return nil, fmt.Errorf("%s:%d: a trace holds one rollout", f, n)
			}
			tr.events = append(tr.events, event{rollout: rec.Rollout, id: rec.ID, data: line, rec: rec})
		}
	}
	sort.SliceStable(tr.events, func(i, j int) bool { return tr.events[i].rec.Time.Before(tr.events[j].rec.Time) })
	if len(tr.events) == 0 {
		return nil, fmt.Errorf("no events in %v", files)
	}
	tr.start = tr.events[0].rec.Time
	return tr, nil
}

// cutCanary drops canary events from 40s into the trace on.
func (tr *traces) cutCanary(evs []event) ([]event, time.Time) {
	at := tr.start.Add(40 * time.Second)
	var out []event
	for _, e := range evs {
		if e.rec.Variant == analyzer.Canary && !e.rec.Time.Before(at) {
			continue
		}
		out = append(out, e)
	}
	return out, at
}

// delay sends every 100th event about 8,000 events later than its time
// says (more than 30s of event time in these traces): out of order, and
// late beyond the engine's lateness window.
func delay(evs []event) []event {
	const every, by = 100, 8000
	held := map[int][]event{}
	var out []event
	for i, e := range evs {
		if i%every == every/2 && i+by < len(evs) {
			held[i+by] = append(held[i+by], e)
		} else {
			out = append(out, e)
		}
		out = append(out, held[i]...)
		delete(held, i)
	}
	return out
}

// expected is what an uninterrupted run decides and counts.
type expected struct {
	decisions map[string][][]byte // per rollout, the CloudEvents as published
	counts    map[string][2]int64 // per rollout, requests per variant
	late      int64               // events more than 30s behind their rollout's clock
}

// expect runs the state machine offline over evs, exactly as serve does
// with its clock fixed at tr.start: every rollout starts then.
func (tr *traces) expect(evs []event) (expected, error) {
	x := expected{decisions: map[string][][]byte{}, counts: map[string][2]int64{}}
	ms := map[string]*engine.Machine{}
	emit := func(ds []engine.Decision) error {
		for _, d := range ds {
			b, err := json.Marshal(d.CloudEvent(d.At))
			if err != nil {
				return err
			}
			x.decisions[d.Rollout] = append(x.decisions[d.Rollout], b)
		}
		return nil
	}
	for _, id := range tr.rollouts {
		m, err := engine.NewMachine(engine.Spec{Rollout: id, Policy: tr.pol.Name, Baseline: "v1", Canary: "v2"}, tr.pol)
		if err != nil {
			return x, err
		}
		ms[id] = m
		if err := emit(m.Start(tr.start)); err != nil {
			return x, err
		}
	}
	for i := range evs {
		e := &evs[i]
		rec := e.rec
		m := ms[e.rollout]
		if !m.State().Terminal() && rec.Time.Before(m.Now().Add(-30*time.Second)) {
			x.late++
		}
		if err := emit(ms[e.rollout].ObserveRecord(rec.Time, &rec)); err != nil {
			return x, err
		}
	}
	for id, m := range ms {
		b, c := m.Requests()
		x.counts[id] = [2]int64{b, c}
	}
	return x, nil
}

// malformed is the corpus of bad messages, each with the reason it must
// be dead-lettered for. rollout is a running rollout.
func malformed(rollout string) []badMsg {
	subj := "verdict.events." + rollout
	return []badMsg{
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":`, telemetry.ReasonBadJSON},
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":"fast"}`, telemetry.ReasonBadJSON},
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":NaN}`, telemetry.ReasonBadJSON},
		{subj, `not json at all`, telemetry.ReasonBadJSON},
		{subj, `{"rollout":"` + rollout + `","variant":"canary"}`, telemetry.ReasonMissingField},
		{subj, `{"rollout":"` + rollout + `","variant":"green","latency_ms":3}`, telemetry.ReasonBadVariant},
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":-3}`, telemetry.ReasonBadValue},
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":1e300}`, telemetry.ReasonBadValue},
		{"verdict.events.nobody", `{"rollout":"nobody","variant":"canary","latency_ms":3}`, telemetry.ReasonUnknownRollout},
		{subj, `{"rollout":"other","variant":"canary","latency_ms":3}`, telemetry.ReasonSubjectMismatch},
		{subj, "{\"rollout\":\"" + rollout + "\",\"variant\":\"canary\",\"unit\":\"\xff\xfe\",\"latency_ms\":3}", telemetry.ReasonBadEncoding},
		{subj, `{"rollout":"` + rollout + `","variant":"canary","latency_ms":3,"unit":"` + string(bytes.Repeat([]byte("x"), 70_000)) + `"}`, telemetry.ReasonTooLarge},
	}
}

type badMsg struct {
	subject, data string
	reason        telemetry.Reason
}
