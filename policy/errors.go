package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Loc is where something was written in a policy document: a 1-based line and
// column (0 when unknown, for example in a Policy built in Go) and a path such as
// rules[2].dst[1].
type Loc struct {
	Line, Column int
	Path         string
}

// Error is one mistake in a policy document, with its location.
type Error struct {
	Line, Column int
	// Path names the element, for example rules[2].dst[1]; empty for the document.
	Path string
	// Msg says what is wrong; it is never empty.
	Msg string
}

// Error formats the error as line:column: path: message, leaving out what is unknown.
func (e Error) Error() string {
	var b strings.Builder
	switch {
	case e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	case e.Line > 0:
		fmt.Fprintf(&b, "%d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors are all the mistakes found in a document, in document order. Parse,
// Validate, Compile and Check return them as their error; use errors.As to get them.
type Errors []Error

// Error joins the errors, one a line.
func (es Errors) Error() string {
	if len(es) == 0 {
		return "no errors"
	}
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// add records an error at loc.
func (es *Errors) add(loc Loc, format string, args ...any) {
	*es = append(*es, Error{Line: loc.Line, Column: loc.Column, Path: loc.Path, Msg: fmt.Sprintf(format, args...)})
}

// sorted returns the errors in document order (line, column, path, message),
// without exact duplicates, or nil when there are none.
func (es Errors) sorted() Errors {
	if len(es) == 0 {
		return nil
	}
	out := append(Errors(nil), es...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Msg < b.Msg
	})
	n := 0
	for i, e := range out {
		if i > 0 && e == out[n-1] {
			continue
		}
		out[n] = e
		n++
	}
	return out[:n]
}

// errOrNil returns the sorted errors as an error, or nil when there are none.
func (es Errors) errOrNil() error {
	if s := es.sorted(); s != nil {
		return s
	}
	return nil
}

func itoa(n int) string { return fmt.Sprint(n) }
