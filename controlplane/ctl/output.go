package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

// outputFormat is the value of -o/--output; Set rejects anything else, which makes a
// bad value a flag error (exit 2) that names the flag.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(s); f {
	case outputTable, outputJSON, outputYAML:
		*o = f
		return nil
	}
	return fmt.Errorf("must be table, json or yaml")
}

// column is one column of a table: its header and how to print an object's cell.
type column[T any] struct {
	header string
	cell   func(T) string
}

// table is how objects of one kind print with -o table.
type table[T any] []column[T]

func (t table[T]) write(w io.Writer, items []T) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cells := make([]string, len(t))
	for i, c := range t {
		cells[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, v := range items {
		for i, c := range t {
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c.cell(v))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// emit prints doc as JSON or YAML, or calls tableFn for -o table.
func (a *app) emit(doc any, tableFn func(io.Writer) error) error {
	switch a.output {
	case outputJSON:
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	case outputYAML:
		data, err := toYAML(doc)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(data)
		return err
	}
	return tableFn(a.stdout)
}

// showOne prints one object.
func showOne[T any](a *app, t table[T], v T) error {
	return a.emit(v, func(w io.Writer) error { return t.write(w, []T{v}) })
}

// showList prints a list: a table, or a JSON/YAML array (never null).
func showList[T any](a *app, t table[T], items []T) error {
	if items == nil {
		items = []T{}
	}
	return a.emit(items, func(w io.Writer) error { return t.write(w, items) })
}

// showSecret prints a created object that carries a secret: with -o table its row,
// then the secret (and any more lines), since this is the only time it is shown.
func showSecret[T any](a *app, t table[T], doc any, v T, secret string, more ...string) error {
	return a.emit(doc, func(w io.Writer) error {
		if err := t.write(w, []T{v}); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "\nSecret (shown once, store it now): %s\n%s", secret, strings.Join(more, ""))
		return err
	})
}

// toYAML marshals v to JSON and re-encodes that as block-style YAML, so that the
// YAML keys are the JSON names of the API and the order of fields is kept.
func toYAML(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding output: %w", err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("encoding output: %w", err)
	}
	blockStyle(&n)
	return yaml.Marshal(&n)
}

// blockStyle clears the flow and quoting styles JSON parses into; the encoder still
// quotes the strings that would otherwise read as another type.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// Cell formatters.

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func list(s []string) string { return dash(strings.Join(s, ",")) }

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return list(s)
}

// valid prints an optional value (netip types, keys), "-" when it is the zero value.
func valid[V interface {
	IsValid() bool
	String() string
}](v V) string {
	if !v.IsValid() {
		return "-"
	}
	return v.String()
}

func itoa[I int | int64 | uint16](i I) string { return strconv.FormatInt(int64(i), 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
