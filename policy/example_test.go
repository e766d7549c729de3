package policy_test

import (
	"errors"
	"fmt"

	"github.com/verdict-dev/verdict/policy"
)

func ExampleParse() {
	src := `apiVersion: verdict/v1
kind: Policy
name: checkout
preset: Canary10Percent5Minutes
metrics:
  - name: error-rate
    type: errors
    maxIncrease: 20%
`
	ps, err := policy.Parse("checkout.yaml", []byte(src))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range ps[0].Steps {
		fmt.Printf("%g%% for %v to %v\n", s.Weight, s.MinDuration, s.MaxDuration)
	}
	// Output:
	// 10% for 5m0s to 30m0s
	// 100% for 1m0s to 30m0s
}

func ExampleParse_errors() {
	src := `apiVersion: verdict/v1
kind: Policy
name: checkout
steps: [5, 25, 50]
alpha: 0.05
metrics:
  - name: p99
    type: latency-quantile
    quantile: 99
    maxIncrease: 0.25
`
	_, err := policy.Parse("checkout.yaml", []byte(src))
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Println(e)
		}
	}
	// Output:
	// checkout.yaml:4:16: steps[2]: the last step must be 100 (the rollout's end), got 50
	// checkout.yaml:9:15: metrics[0].quantile: must be in (0, 1), got 99
	// checkout.yaml:10:18: metrics[0].maxIncrease: want a percentage like 20%, got number 0.25
}
