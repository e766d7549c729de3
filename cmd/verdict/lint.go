package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/verdict-dev/verdict/policy"
)

func init() {
	register("lint", command{
		summary: "validate policy files; exit 1 with file:line:col errors",
		run:     runLint,
	})
}

const lintUsage = `Usage: verdict lint [--print] [--json] FILE|DIR...

Validates policy files: each FILE, and the *.yaml and *.yml files of each DIR
(not of its subdirectories). Every problem in every file is reported, one per
line, as file:line:col: path: message. The exit code is 0 when all policies
are valid, 1 when any is not, 2 on a usage error.

With --print, the normalized form of every policy is written to standard
output as a YAML stream, each preceded by its file and its hash (the
policyHash of decisions). With --json, the result is one JSON object on
standard output, errors included.

Flags:
`

// lintFlags are the options of verdict lint.
type lintFlags struct {
	print, json bool
}

func runLint(_ context.Context, args []string, stdout, stderr io.Writer) int {
	var f lintFlags
	fs := flag.NewFlagSet("lint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&f.print, "print", false, "print the normalized form of every policy, with its hash")
	fs.BoolVar(&f.json, "json", false, "write the result as JSON on standard output")
	fs.Usage = func() {} // flag calls it for -h too; errors get a hint below
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, lintUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintln(stderr, "Run 'verdict lint -h' for usage.")
		return 2
	}
	if len(paths) == 0 {
		fmt.Fprintln(stderr, "verdict lint: no files or directories given")
		fmt.Fprintln(stderr, "Run 'verdict lint -h' for usage.")
		return 2
	}
	set, err := policy.Load(paths...)
	if f.json {
		return lintJSON(stdout, stderr, set, err, f.print)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ps := sorted(set)
	summary := fmt.Sprintf("ok: %s in %s", plural(len(ps), "policy", "policies"), plural(countFiles(ps), "file", "files"))
	if !f.print {
		fmt.Fprintln(stdout, summary)
		return 0
	}
	for i, p := range ps {
		if i > 0 {
			fmt.Fprintln(stdout, "---")
		}
		fmt.Fprintf(stdout, "# %s:%d\n# %s\n%s", p.File, p.Line, p.Hash, p.Normalized())
	}
	fmt.Fprintln(stderr, summary) // stdout stays a valid YAML stream
	return 0
}

// parseInterspersed parses flags before, between and after the positional
// arguments, which it returns, so that "lint DIR --print" works; after
// "--" every argument is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// lintResult is the JSON output of verdict lint --json.
type lintResult struct {
	OK       bool         `json:"ok"`
	Files    int          `json:"files"`
	Policies []lintPolicy `json:"policies"`
	Errors   []lintError  `json:"errors"`
}

type lintPolicy struct {
	Name       string `json:"name"`
	File       string `json:"file"`
	Line       int    `json:"line"`
	Hash       string `json:"hash"`
	Normalized string `json:"normalized,omitempty"`
}

type lintError struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

func lintJSON(stdout, stderr io.Writer, set policy.Set, loadErr error, print bool) int {
	res := lintResult{OK: loadErr == nil, Policies: []lintPolicy{}, Errors: []lintError{}}
	ps := sorted(set)
	res.Files = countFiles(ps)
	for _, p := range ps {
		lp := lintPolicy{Name: p.Name, File: p.File, Line: p.Line, Hash: p.Hash}
		if print {
			lp.Normalized = string(p.Normalized())
		}
		res.Policies = append(res.Policies, lp)
	}
	var list policy.ErrorList
	switch {
	case errors.As(loadErr, &list):
		for _, e := range list {
			res.Errors = append(res.Errors, lintError{e.File, e.Line, e.Col, e.Path, e.Msg})
		}
	case loadErr != nil:
		res.Errors = append(res.Errors, lintError{Message: loadErr.Error()})
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(stderr, "verdict lint:", err)
		return 1
	}
	if !res.OK {
		return 1
	}
	return 0
}

// sorted returns the policies of set by file and line.
func sorted(set policy.Set) []*policy.Policy {
	ps := make([]*policy.Policy, 0, len(set))
	for _, p := range set {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *policy.Policy) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return ps
}

// countFiles counts the files that define policies.
func countFiles(ps []*policy.Policy) int {
	files := make(map[string]bool)
	for _, p := range ps {
		files[p.File] = true
	}
	return len(files)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
