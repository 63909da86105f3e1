package msg

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// EnvChannelFD names, in a service's environment, the fd of its end of
// the channel. Only this package reads or writes it: rs asks ChildEnv
// for the variable of whatever fd the channel gets in the child, and the
// service side calls FromEnv.
const EnvChannelFD = "RS_CHANNEL_FD"

// ChildEnv is the environment entry that tells a child its channel is fd.
func ChildEnv(fd int) string { return fmt.Sprintf("%s=%d", EnvChannelFD, fd) }

// ErrBadEnv: $RS_CHANNEL_FD is set but names no usable fd.
var ErrBadEnv = fmt.Errorf("bad $%s", EnvChannelFD)

// FromEnv takes the channel named by $RS_CHANNEL_FD, if set: it marks the
// fd close-on-exec and unsets the variable, so children of the service
// see neither. It returns nil, nil when the variable is not set (no rs).
func FromEnv() (*Conn, error) {
	v, ok := os.LookupEnv(EnvChannelFD)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvChannelFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("%w: %q", ErrBadEnv, v)
	}
	unix.CloseOnExec(fd)
	conn, err := NewConn(os.NewFile(uintptr(fd), "rs-channel"))
	if err != nil {
		return nil, fmt.Errorf("rs channel: %w", err)
	}
	return conn, nil
}
