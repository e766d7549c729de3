package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// InWindow reports whether steps may advance at t: always when the policy
// has no PromoteWindow, otherwise when the window's cron spec matches the
// minute containing t.
func (p *Policy) InWindow(t time.Time) bool {
	if p.Window == nil {
		return true
	}
	minute := t.Truncate(time.Minute)
	return p.Window.Next(minute.Add(-time.Second)).Equal(minute)
}

// window decodes a promote window: a cron spec in which steps may advance.
func (d *decoder) window(n *yaml.Node, path string) (string, cron.Schedule) {
	spec, ok := d.str(n, path)
	if !ok {
		return "", nil
	}
	sched, err := parseWindow(spec)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return "", nil
	}
	return spec, sched
}

// parseWindow parses a five-field cron spec or a descriptor such as @daily,
// in UTC unless it starts with CRON_TZ=Zone (or TZ=Zone).
func parseWindow(spec string) (sched cron.Schedule, err error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("empty cron spec: leave promoteWindow out to allow promotion at any time")
	}
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		// cron v3.0.1 panics on a time zone not followed by a space.
		if !strings.Contains(spec, " ") {
			return nil, fmt.Errorf("invalid cron spec: want fields after the time zone")
		}
	} else {
		spec = "CRON_TZ=UTC " + spec
	}
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("invalid cron spec")
		}
	}()
	sched, err = cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("invalid cron spec: %w", err)
	}
	if _, every := sched.(cron.ConstantDelaySchedule); every {
		return nil, fmt.Errorf("invalid cron spec: @every is not a window; give the minutes in which steps may advance, like \"* 9-17 * * MON-FRI\"")
	}
	if sched.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("cron spec never matches")
	}
	return sched, nil
}
