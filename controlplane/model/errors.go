package model

import (
	"errors"
	"fmt"
)

// Kind classifies an Error; the API maps each kind to one HTTP status.
type Kind int

// Error kinds.
const (
	Invalid            Kind = iota + 1 // the caller sent something malformed (400)
	Unauthenticated                    // no, unknown or expired credentials (401)
	Forbidden                          // the credentials lack the role (403)
	NotFound                           // no such object, or not visible to the caller (404)
	Conflict                           // duplicate name, overlapping CIDR, object in use (409)
	PreconditionFailed                 // optimistic concurrency check failed (412)
	Exhausted                          // address pool or enrollment key used up (409)
)

// Error is a caller-facing error naming the field at fault, if any.
type Error struct {
	Kind  Kind
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// Errorf builds an *Error.
func Errorf(kind Kind, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err, or 0 when err is not (or does not wrap) an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// NotFoundf is shorthand for a NotFound error about an object kind and reference.
func NotFoundf(kind, ref string) *Error {
	return Errorf(NotFound, "", "%s %q not found", kind, ref)
}
