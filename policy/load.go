package policy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Load reads the policies in the given files and directories. A directory
// contributes its *.yaml and *.yml files, not those of its subdirectories;
// a file named explicitly is read whatever its name. Load is
// all-or-nothing: it returns either every policy, by name, or an ErrorList
// with every problem in every file, including policy names used twice.
func Load(paths ...string) (Set, error) {
	files, errs := readPaths(paths)
	set, perrs := build(files)
	if errs = append(errs, perrs...); len(errs) > 0 {
		return nil, errs.err()
	}
	return set, nil
}

// A file is the name and contents of a policy file.
type file struct {
	name string
	data []byte
}

// build parses files into a Set.
func build(files []file) (Set, ErrorList) {
	var (
		all  []*Policy
		errs ErrorList
	)
	for _, f := range files {
		ps, ferrs := parse(f.name, f.data)
		all = append(all, ps...)
		errs = append(errs, ferrs...)
	}
	errs = append(errs, duplicates(all)...)
	if len(errs) > 0 {
		return nil, errs
	}
	set := make(Set, len(all))
	for _, p := range all {
		set[p.Name] = p
	}
	return set, nil
}

// readPaths reads the policy files named by paths, expanding directories.
func readPaths(paths []string) ([]file, ErrorList) {
	var (
		files []file
		errs  ErrorList
		seen  = make(map[string]bool)
	)
	for _, path := range paths {
		names, err := expand(path)
		if err != nil {
			errs = append(errs, ioError(path, err))
			continue
		}
		for _, name := range names {
			if seen[filepath.Clean(name)] {
				continue
			}
			seen[filepath.Clean(name)] = true
			data, err := readFile(name)
			if err != nil {
				errs = append(errs, ioError(name, err))
				continue
			}
			files = append(files, file{name, data})
		}
	}
	return files, errs
}

// expand returns path itself if it is a file, or the policy files in it
// if it is a directory, sorted by name.
func expand(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		name := filepath.Join(path, e.Name())
		if !isPolicyFile(e.Name()) {
			continue
		}
		if info, err := os.Stat(name); err == nil && info.IsDir() {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func isPolicyFile(name string) bool {
	ext := filepath.Ext(name)
	return (ext == ".yaml" || ext == ".yml") && !strings.HasPrefix(name, ".")
}

// readFile reads a file of at most MaxFileSize bytes.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > MaxFileSize {
		return nil, tooLarge(info.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(int64(len(data)))
	}
	return data, nil
}

func tooLarge(size int64) error {
	return fmt.Errorf("file is %d bytes, more than the limit of %d (1 MiB)", size, MaxFileSize)
}

// ioError reports err about the named file, without repeating the name.
func ioError(name string, err error) *Error {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Op + ": " + pe.Err.Error()
	}
	return &Error{File: name, Msg: msg, err: err}
}
