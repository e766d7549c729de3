package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// An Error is one problem in a policy file. Line and Col are 1-based; Col
// is 0 when only the line is known (YAML syntax errors), and Line is 0 for
// problems with the file as a whole.
type Error struct {
	File      string
	Line, Col int
	Path      string // field path such as metrics[2].quantile; "" for the document
	Msg       string

	err error // underlying error, if any
}

// Error returns "file:line:col: path: msg", leaving out unknown parts.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error, such as an fs.PathError, or nil.
func (e *Error) Unwrap() error { return e.err }

// An ErrorList is every problem found in a set of policy files, sorted by
// file and position. Parse and Load return one as their error; callers get
// at it with errors.As.
type ErrorList []*Error

// Error returns the errors one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the errors, so errors.Is and errors.As look inside.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Sort orders the list by file, line, column, path and message.
func (l ErrorList) Sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
}

// err returns the list as an error: nil when it is empty.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	l.Sort()
	return l
}
