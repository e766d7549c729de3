package policy

import (
	"context"
	"crypto/sha256"
	"maps"
	"time"
)

// DefaultWatchInterval is the polling interval of a Watcher created with
// an interval of zero or less.
const DefaultWatchInterval = 5 * time.Second

// A Watcher reloads the policy files of a directory when they change. It
// polls, comparing the names and contents of the files, so it needs no
// file system notifications and sees edits that keep a file's size and
// modification time.
//
// A reload is all-or-nothing: the Watcher hands over a new Set only when
// every file in the directory is valid, and otherwise keeps the previous
// one. Sets are never modified after they are handed over, and a rollout
// that is already running keeps the *Policy it started with; only new
// rollouts see a new Set.
type Watcher struct {
	dir      string
	interval time.Duration
}

// NewWatcher returns a Watcher of the *.yaml and *.yml files in dir,
// polling every interval.
func NewWatcher(dir string, interval time.Duration) *Watcher {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	return &Watcher{dir: dir, interval: interval}
}

// Run loads the directory at once and then at every interval until ctx is
// done, when it returns ctx.Err(). It calls onChange with the new Set when
// the files changed, are all valid and define different policies than the
// last Set it handed over; and onError with an ErrorList when the files
// changed and are not valid (or the directory cannot be read). It calls
// both from its own goroutine, one call at a time, and waits for them to
// return.
func (w *Watcher) Run(ctx context.Context, onChange func(Set), onError func(error)) error {
	var (
		lastFiles [sha256.Size]byte // digest of the files last looked at
		lastSet   map[string]string // name -> hash of the Set last handed over
		first     = true
	)
	check := func() {
		files, errs := readPaths([]string{w.dir})
		sum := digest(files, errs)
		if !first && sum == lastFiles {
			return
		}
		first, lastFiles = false, sum
		set, perrs := build(files)
		if errs = append(errs, perrs...); len(errs) > 0 {
			onError(errs.err())
			return
		}
		if hashes := setHashes(set); lastSet == nil || !maps.Equal(hashes, lastSet) {
			lastSet = hashes
			onChange(set)
		}
	}
	check()
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			check()
		}
	}
}

// digest hashes the names and contents of files and the read errors, so
// that a directory that stays broken in the same way is reported once.
func digest(files []file, errs ErrorList) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f.name))
		h.Write([]byte{0})
		h.Write(sha256Sum(f.data))
	}
	for _, e := range errs {
		h.Write([]byte(e.Error()))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func setHashes(s Set) map[string]string {
	m := make(map[string]string, len(s))
	for name, p := range s {
		m[name] = p.Hash
	}
	return m
}
