package analyzer_test

import (
	"fmt"
	"time"

	"github.com/verdict-dev/verdict/analyzer"
)

func Example() {
	a, err := analyzer.New(analyzer.Config{
		Alpha: 0.05, PromoteAlpha: 0.05,
		Metrics: []analyzer.Metric{{Name: "error-rate", Kind: analyzer.Errors, MaxIncrease: 0.2}},
	})
	if err != nil {
		panic(err)
	}
	a.StartStep(5)
	step := analyzer.Step{Weight: 5, Elapsed: 2 * time.Minute, MinDuration: time.Minute,
		MaxDuration: time.Hour, MinRequests: 500, OnTimeout: analyzer.Rollback}

	// The canary fails 2.5% of requests, the baseline 1%.
	a.ObserveBatch(&analyzer.Batch{Variant: analyzer.Baseline, Requests: 38000, Errors: 380})
	a.ObserveBatch(&analyzer.Batch{Variant: analyzer.Canary, Requests: 2000, Errors: 50})
	v := a.Decide(step)
	fmt.Println(v.Action, v.Cause)
	fmt.Println(v.Reason)
	// Output:
	// rollback error-rate
	// error-rate: canary/baseline 2.5x (95% CS 1.52x..3.85x) exceeds +20% (e=3.7e+03 >= 20)
}

func ExampleAnalyzer_Decide_promote() {
	a, _ := analyzer.New(analyzer.Config{
		Alpha: 0.05, PromoteAlpha: 0.05,
		Metrics: []analyzer.Metric{{Name: "latency", Kind: analyzer.Latency, MaxIncrease: 0.1}},
	})
	a.StartStep(50)
	// Summaries of log latency: same geometric mean (e^3 ≈ 20 ms), log-sd 0.5.
	for _, v := range []analyzer.Variant{analyzer.Baseline, analyzer.Canary} {
		a.ObserveBatch(&analyzer.Batch{Variant: v, Requests: 20000,
			Latency: analyzer.Summary{N: 20000, SumLog: 3 * 20000, SumLogSq: (9 + 0.25) * 20000}})
	}
	v := a.Decide(analyzer.Step{Weight: 50, Elapsed: time.Hour, MinDuration: time.Minute, MinRequests: 1000})
	fmt.Println(v.Action)
	fmt.Println(v.Reason)
	// Output:
	// promote
	// all metrics within margin: latency upper 1.02x < 1.1x
}

// A caller that looks often (every 100 requests) but reports rarely uses
// Check at every look and Decide only for the looks it reports: the same
// answer, without computing confidence intervals and reasons each time.
func ExampleAnalyzer_Check() {
	a, _ := analyzer.New(analyzer.Config{
		Alpha: 0.05, PromoteAlpha: 0.05,
		Metrics: []analyzer.Metric{{Name: "error-rate", Kind: analyzer.Errors, MaxIncrease: 0.2}},
	})
	a.StartStep(10)
	step := analyzer.Step{Weight: 10, MinDuration: time.Minute, MinRequests: 500}
	for look := 1; look <= 100; look++ {
		// 100 requests a look: 90 baseline (1.1% errors), 10 canary (5%).
		a.ObserveBatch(&analyzer.Batch{Variant: analyzer.Baseline, Requests: 90, Errors: 1})
		a.ObserveBatch(&analyzer.Batch{Variant: analyzer.Canary, Requests: 10, Errors: int64(look % 2)})
		step.Elapsed = time.Duration(look) * time.Second
		if act, _ := a.Check(step); act == analyzer.Hold {
			continue
		}
		v := a.Decide(step)
		fmt.Printf("look %d: %v (%s)\n", look, v.Action, v.Cause)
		fmt.Println(v.Reason)
		return
	}
	// Output:
	// look 21: rollback (error-rate)
	// error-rate: canary/baseline 4.71x (95% CS 0.997x..19.2x) exceeds +20% (e=20.9 >= 20)
}

func ExampleBucketIndex() {
	for _, ms := range []float64{0, 1, 12.5, 1e9} {
		i := analyzer.BucketIndex(ms)
		fmt.Printf("%g ms -> bucket %d, upper bound %.4g ms\n", ms, i, analyzer.BucketUpper(i))
	}
	// Output:
	// 0 ms -> bucket -348, upper bound 0.001017 ms
	// 1 ms -> bucket 0, upper bound 1 ms
	// 12.5 ms -> bucket 128, upper bound 12.61 ms
	// 1e+09 ms -> bucket 814, upper bound 1.001e+07 ms
}
