package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse parses and validates the policies in data, one per YAML document,
// read from the named file. It returns either every policy or, as an
// ErrorList, every problem found; a file with any problem yields no
// policies. Two policies with the same name in one file are an error.
func Parse(filename string, data []byte) ([]*Policy, error) {
	ps, errs := parse(filename, data)
	errs = append(errs, duplicates(ps)...)
	if len(errs) > 0 {
		return nil, errs.err()
	}
	return ps, nil
}

// parse returns the policies of every valid document and the errors of the
// others.
func parse(filename string, data []byte) ([]*Policy, ErrorList) {
	if len(data) > MaxFileSize {
		return nil, ErrorList{{File: filename, Msg: tooLarge(int64(len(data))).Error()}}
	}
	var (
		ps   []*Policy
		errs ErrorList
	)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, syntaxError(filename, err))
			break
		}
		d := &decoder{file: filename}
		p := d.document(&doc)
		if len(d.errs) > 0 {
			errs = append(errs, d.errs...)
			continue
		}
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps, errs
}

var syntaxLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// parserProblems are the problems yaml.v3's parser (unlike its scanner)
// reports with a 0-based line; syntaxError adds one to them.
var parserProblems = []string{
	"did not find expected",
	"found undefined tag handle",
	"found duplicate %",
	"found incompatible YAML document",
}

// syntaxError converts a YAML syntax error, which carries at most a line.
func syntaxError(filename string, err error) *Error {
	e := &Error{File: filename, Msg: err.Error(), err: err}
	m := syntaxLine.FindStringSubmatch(err.Error())
	if m == nil {
		return e
	}
	e.Msg = "YAML syntax error: " + m[2]
	if e.Line, _ = strconv.Atoi(m[1]); e.Line > 0 {
		for _, p := range parserProblems {
			if strings.HasPrefix(m[2], p) {
				e.Line++
				break
			}
		}
	}
	return e
}

// duplicates returns an error for every policy whose name is used by an
// earlier one in ps.
func duplicates(ps []*Policy) ErrorList {
	var errs ErrorList
	seen := make(map[string]*Policy)
	for _, p := range ps {
		if first, dup := seen[p.Name]; dup {
			errs = append(errs, &Error{
				File: p.File, Line: p.nameLine, Col: p.nameCol, Path: "name",
				Msg: fmt.Sprintf("duplicate policy name %q (first defined at %s:%d)", p.Name, first.File, first.nameLine),
			})
			continue
		}
		seen[p.Name] = p
	}
	return errs
}
