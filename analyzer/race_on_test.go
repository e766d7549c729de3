//go:build race

package analyzer

// The race detector slows the Monte Carlo tests about tenfold; they run
// with a quarter of the replications under it (see reps).
const raceEnabled = true
