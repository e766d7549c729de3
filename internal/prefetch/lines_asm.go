//go:build amd64 || arm64

package prefetch

// lines prefetches n cache lines from start, a line's address. It takes
// addresses as integers: nothing is kept or read through them.
func lines(start, n uintptr)
