package control

import (
	"errors"
	"fmt"
)

// Code says what kind of failure a reply reports.
type Code string

const (
	CodeUnknown    Code = "unknown"    // no service of that label
	CodeBusy       Code = "busy"       // another operation holds the service; try again
	CodeRefused    Code = "refused"    // not possible in the service's present state
	CodeInvalid    Code = "invalid"    // the request itself is wrong
	CodeFailed     Code = "failed"     // tried, and it failed (init failed, update rolled back)
	CodeShutdown   Code = "shutdown"   // rs is shutting down
	CodePermission Code = "permission" // the peer may not control this rs
)

// Sentinels, one per code (errors.Is), and the client's own.
var (
	ErrUnknown    = errors.New("unknown service")
	ErrBusy       = errors.New("busy")
	ErrRefused    = errors.New("refused")
	ErrInvalid    = errors.New("bad request")
	ErrFailed     = errors.New("failed")
	ErrShutdown   = errors.New("rs is shutting down")
	ErrPermission = errors.New("permission denied")

	// ErrUnreachable: no rs answers on the socket.
	ErrUnreachable = errors.New("rs is not running")
	// ErrTimeout: rs did not answer in time (stopped, or swamped).
	ErrTimeout = errors.New("timed out")
	// ErrClosed: rs closed the connection before its final reply. Its
	// process ended, or it exec'd (update-self, or the re-exec after a
	// panic in its loop): a stream (logs -f, events) can ask again.
	ErrClosed = errors.New("rs closed the connection without a reply")
)

var sentinels = map[Code]error{
	CodeUnknown:    ErrUnknown,
	CodeBusy:       ErrBusy,
	CodeRefused:    ErrRefused,
	CodeInvalid:    ErrInvalid,
	CodeFailed:     ErrFailed,
	CodeShutdown:   ErrShutdown,
	CodePermission: ErrPermission,
}

// Error is a failure as it crosses the wire: a code and a one-line text.
type Error struct {
	Code Code
	Msg  string
	err  error // what it wraps, on the side that made it
}

// Errorf makes an error with code whose text is the formatted one; %w in
// format wraps as fmt.Errorf does.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), err: err}
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.err }

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// CodeOf says which code err crosses the wire with: an *Error's own, else
// that of the first sentinel it wraps, else CodeFailed.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	for _, c := range []Code{CodeUnknown, CodeBusy, CodeRefused, CodeInvalid, CodeShutdown, CodePermission} {
		if errors.Is(err, sentinels[c]) {
			return c
		}
	}
	return CodeFailed
}
