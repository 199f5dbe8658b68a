package sqlstore

import (
	"database/sql/driver"
	"encoding"
	"encoding/json"
	"fmt"
	"time"
)

// A column binds one field of a row to its SQL column. ptr is a pointer to a
// string, int, int64, bool or uint16 field, or one of the adapters below, which
// are both driver.Valuer (for writing) and sql.Scanner (for reading), so one list
// serves INSERT, UPDATE and SELECT alike.
type column struct {
	name string
	ptr  any
}

// value is what the driver is given for c.
func (c column) value() (any, error) {
	switch p := c.ptr.(type) {
	case *string:
		return *p, nil
	case *int:
		return int64(*p), nil
	case *int64:
		return *p, nil
	case *bool:
		return *p, nil
	case *uint16:
		return int64(*p), nil
	case driver.Valuer:
		v, err := p.Value()
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", c.name, err)
		}
		return v, nil
	}
	panic(fmt.Sprintf("sqlstore: column %s has unsupported type %T", c.name, c.ptr))
}

// nanos stores a time as Unix nanoseconds in UTC; the zero time is 0.
type nanos struct{ p *time.Time }

func (c nanos) Value() (driver.Value, error) {
	t := *c.p
	if t.IsZero() {
		return int64(0), nil
	}
	n := t.UnixNano()
	if !time.Unix(0, n).Equal(t) {
		return nil, fmt.Errorf("time %s is outside what the store keeps (years 1678 to 2262)", t.Format(time.RFC3339))
	}
	return n, nil
}

func (c nanos) Scan(src any) error {
	n, ok := src.(int64)
	if !ok {
		return fmt.Errorf("time column holds %T, want int64", src)
	}
	if n == 0 {
		*c.p = time.Time{}
	} else {
		*c.p = time.Unix(0, n).UTC()
	}
	return nil
}

// textual is a type with a text form whose empty string is its zero value, such
// as netip.Addr, netip.Prefix and the key types.
type textual interface {
	encoding.TextMarshaler
	encoding.TextUnmarshaler
}

// text stores a value as its text form.
type text struct{ p textual }

func (c text) Value() (driver.Value, error) {
	b, err := c.p.MarshalText()
	return string(b), err
}

func (c text) Scan(src any) error {
	b, err := bytesOf(src)
	if err != nil {
		return err
	}
	return c.p.UnmarshalText(b)
}

// str stores a named string type (model.NodeKind, model.Role).
type str[S ~string] struct{ p *S }

func (c str[S]) Value() (driver.Value, error) { return string(*c.p), nil }

func (c str[S]) Scan(src any) error {
	b, err := bytesOf(src)
	*c.p = S(b)
	return err
}

// nullable stores "" as NULL, for optional references.
type nullable struct{ p *string }

func (c nullable) Value() (driver.Value, error) {
	if *c.p == "" {
		return nil, nil
	}
	return *c.p, nil
}

func (c nullable) Scan(src any) error {
	if src == nil {
		*c.p = ""
		return nil
	}
	b, err := bytesOf(src)
	*c.p = string(b)
	return err
}

// list stores a slice as JSON. It reads back a non-nil slice, empty if need be,
// so that the API shows [] rather than null.
type list[E any] struct{ p *[]E }

func (c list[E]) Value() (driver.Value, error) {
	if len(*c.p) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(*c.p)
	return string(b), err
}

func (c list[E]) Scan(src any) error {
	b, err := bytesOf(src)
	if err != nil {
		return err
	}
	*c.p = nil
	if err := json.Unmarshal(b, c.p); err != nil {
		return err
	}
	if *c.p == nil {
		*c.p = []E{}
	}
	return nil
}

func bytesOf(src any) ([]byte, error) {
	switch s := src.(type) {
	case string:
		return []byte(s), nil
	case []byte:
		return s, nil
	}
	return nil, fmt.Errorf("text column holds %T", src)
}
