package manifest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Error is one problem in a manifest, placed at the file, line and column where it was found so that the
// build log can point the user straight at it.
type Error struct {
	File   string
	Line   int // 1-based; 0 when the problem has no place (an empty file)
	Column int // 1-based; 0 when unknown
	Msg    string
}

func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// ErrorList holds every problem found in one manifest, in file order: a user fixing typos wants them all at
// once, not one build per typo.
type ErrorList []*Error

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// yamlLine finds the line number in yaml.v3's syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 parse error into an *Error placed on its line, with a hint for the most common
// cause (tabs) since YAML's own wording does not say it.
func syntaxError(file string, data []byte, err error) *Error {
	msg := err.Error()
	e := &Error{File: file, Msg: strings.TrimPrefix(msg, "yaml: ")}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	if e.Line > 0 {
		lines := strings.Split(string(data), "\n")
		if e.Line <= len(lines) && strings.Contains(lines[e.Line-1], "\t") {
			e.Msg += " (this line holds a tab: YAML indents with spaces only)"
		}
	}
	e.Msg = "not valid YAML: " + e.Msg
	return e
}
