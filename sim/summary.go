package sim

import (
	"cmp"
	"slices"
)

// report summarises the replications' results.
func (s *simulation) report(results [][]Result) *Report {
	rep := &Report{
		Scenario: s.sc.Name, Policy: s.pol.Name, Reps: len(results), Seed: s.cfg.Seed,
		PeerShare: s.peerShare, MaxRequests: s.cfg.MaxRequests, MaxDuration: s.timeCap.String(),
		Results: results,
	}
	if s.cfg.Share > 0 {
		share := s.cfg.Share
		rep.Share = &share
	}
	for j, name := range Methods {
		col := make([]Result, len(results))
		for i := range results {
			col[i] = results[i][j]
		}
		m := summarise(name, col)
		if name == MethodFixedMW {
			m.SampleSize, m.SampleSizeFamilywise = s.mwSize, s.mwSizeFW
		}
		rep.Methods = append(rep.Methods, m)
	}
	return rep
}

// summarise aggregates one method's results.
func summarise(name string, rs []Result) MethodSummary {
	m := MethodSummary{Method: name, Causes: []CauseCount{}}
	var toRollback, toPromote []int64
	causes := map[string]int{}
	for _, r := range rs {
		switch r.Outcome {
		case Rollback:
			m.Rollbacks++
			toRollback = append(toRollback, r.Requests)
			causes[r.Cause]++
		case Promote:
			m.Promotes++
			toPromote = append(toPromote, r.Requests)
		default:
			m.Holds++
		}
	}
	n := float64(len(rs))
	m.RollbackRate = float64(m.Rollbacks) / n
	m.PromoteRate = float64(m.Promotes) / n
	m.HoldRate = float64(m.Holds) / n
	m.RollbackRateLower95, m.RollbackRateUpper95 = ClopperPearson(m.Rollbacks, len(rs), 0.05)
	m.MedianRequestsToRollback = quantilePtr(toRollback, 0.5)
	m.P90RequestsToRollback = quantilePtr(toRollback, 0.9)
	m.MedianRequestsToPromote = quantilePtr(toPromote, 0.5)
	for c, k := range causes {
		m.Causes = append(m.Causes, CauseCount{Cause: c, Count: k})
	}
	slices.SortFunc(m.Causes, func(a, b CauseCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Cause, b.Cause))
	})
	return m
}

func quantilePtr(xs []int64, q float64) *int64 {
	v, ok := rankQuantile(xs, q)
	if !ok {
		return nil
	}
	return &v
}
