package policy_test

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/verdict-dev/verdict/policy"
)

// compare describes the first difference between two policies in the
// fields that matter, ignoring where they were defined; "" if none.
func compare(a, b *policy.Policy) string {
	switch {
	case a.Name != b.Name:
		return fmt.Sprintf("Name %q != %q", a.Name, b.Name)
	case a.Preset != b.Preset:
		return fmt.Sprintf("Preset %q != %q", a.Preset, b.Preset)
	case !slices.Equal(a.Steps, b.Steps):
		return fmt.Sprintf("Steps %+v != %+v", a.Steps, b.Steps)
	case a.OnTimeout != b.OnTimeout:
		return fmt.Sprintf("OnTimeout %q != %q", a.OnTimeout, b.OnTimeout)
	case a.Alpha != b.Alpha || a.PromoteAlpha != b.PromoteAlpha:
		return fmt.Sprintf("Alpha, PromoteAlpha %v, %v != %v, %v", a.Alpha, a.PromoteAlpha, b.Alpha, b.PromoteAlpha)
	case a.PromoteWindow != b.PromoteWindow:
		return fmt.Sprintf("PromoteWindow %q != %q", a.PromoteWindow, b.PromoteWindow)
	case (a.Window == nil) != (b.Window == nil) || !reflect.DeepEqual(a.Window, b.Window):
		return fmt.Sprintf("Window %+v != %+v", a.Window, b.Window)
	case !slices.Equal(a.Metrics, b.Metrics):
		return fmt.Sprintf("Metrics %+v != %+v", a.Metrics, b.Metrics)
	case a.Hash != b.Hash:
		return fmt.Sprintf("Hash %s != %s", a.Hash, b.Hash)
	}
	return ""
}
