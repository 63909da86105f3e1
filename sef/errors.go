package sef

import (
	"errors"
	"fmt"
	"os"
)

// Errors of this package.
var (
	// ErrStopped: the service is stopping. Receive and Post return it
	// (as a *StopError that says why) from then on; the service should
	// clean up and exit 0.
	ErrStopped = errors.New("stopped")
	// ErrProtocol: rs sent something this sef does not understand.
	ErrProtocol = errors.New("protocol error")
	// ErrInit: the init callback failed; rs has been told why.
	ErrInit = errors.New("init failed")
	// ErrChannelLost: the channel to rs broke or closed (rs died). A
	// service never runs unsupervised, so it stops.
	ErrChannelLost = errors.New("channel to rs lost")
)

// StopCause says why an instance stops.
type StopCause int

const (
	// CauseStop: the service called Stop.
	CauseStop StopCause = iota + 1
	// CauseRS: rs asked (its stop message: `service down`, an update's
	// commit, rs's own shutdown).
	CauseRS
	// CauseSignal: SIGTERM or SIGINT arrived from outside rs.
	CauseSignal
	// CauseChannelLost: the channel to rs broke; Err says how.
	CauseChannelLost
)

func (c StopCause) String() string {
	switch c {
	case CauseStop:
		return "Stop called"
	case CauseRS:
		return "rs asked"
	case CauseSignal:
		return "signal"
	case CauseChannelLost:
		return "channel to rs lost"
	}
	return fmt.Sprintf("cause(%d)", int(c))
}

// StopError is what Receive and Post return once the instance stops.
// errors.Is(err, ErrStopped) holds for every cause, and
// errors.Is(err, ErrChannelLost) for a lost channel; errors.As gives the
// cause.
type StopError struct {
	Cause  StopCause
	Signal os.Signal // for CauseSignal
	Err    error     // for CauseChannelLost: the channel's error
}

func (e *StopError) Error() string {
	switch {
	case e.Signal != nil:
		return fmt.Sprintf("stopped: %s (%s)", e.Cause, e.Signal)
	case e.Err != nil:
		return fmt.Sprintf("stopped: %s: %v", e.Cause, e.Err)
	}
	return "stopped: " + e.Cause.String()
}

// Is makes errors.Is(err, ErrStopped) true, and ErrChannelLost for a lost
// channel.
func (e *StopError) Is(target error) bool {
	return target == ErrStopped || (target == ErrChannelLost && e.Cause == CauseChannelLost)
}

func (e *StopError) Unwrap() error { return e.Err }
