package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// DefaultSocket is where rs listens when neither --socket nor $RS_SOCKET
// says: $XDG_RUNTIME_DIR/rs.sock, else /run/rs.sock for root, else
// /tmp/rs-<uid>.sock.
func DefaultSocket() string {
	if p := os.Getenv("RS_SOCKET"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "rs.sock")
	}
	if os.Getuid() == 0 {
		return "/run/rs.sock"
	}
	return "/tmp/rs-" + strconv.Itoa(os.Getuid()) + ".sock"
}

// Client talks to a running rs.
type Client struct {
	Socket  string
	Timeout time.Duration // for connecting and for each reply; 0: 5s to connect, replies unbounded
}

// Do sends req and returns the final reply; progress replies go to
// progress (which may be nil). A reply that reports a failure comes back
// as an *Error too.
func (c Client) Do(req Request, progress func(string)) (Reply, error) {
	b, err := msgpack.Marshal(&req)
	if err != nil {
		return Reply{}, err
	}
	if len(b) > MaxRequest {
		return Reply{}, fmt.Errorf("%w: the request takes %d bytes, more than %d", ErrInvalid, len(b), MaxRequest)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	conn, err := net.DialTimeout("unixpacket", c.Socket, timeout)
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return Reply{}, fmt.Errorf("%w (%s): %w", ErrPermission, c.Socket, err)
		}
		return Reply{}, fmt.Errorf("%w (%s): %w", ErrUnreachable, c.Socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		return Reply{}, fmt.Errorf("send to rs: %w", err)
	}
	rr := newReplyReader(conn)
	for {
		if c.Timeout > 0 {
			conn.SetReadDeadline(time.Now().Add(c.Timeout))
		}
		r, err := rr.next()
		if err != nil {
			return Reply{}, fmt.Errorf("read from rs: %w", err)
		}
		if !r.Done {
			if progress != nil && r.Progress != "" {
				progress(r.Progress)
			}
			continue
		}
		if r.Err != "" {
			return r, &Error{Code: r.Code, Msg: r.Err}
		}
		return r, nil
	}
}
