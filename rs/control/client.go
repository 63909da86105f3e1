package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

// Client talks to a running rs.
type Client struct {
	Socket string
	// Timeout bounds the whole call, from connecting to the final reply;
	// 0: DefaultTimeout of the request.
	Timeout time.Duration
	// Silence bounds the wait for each packet; 0: DefaultSilence.
	Silence time.Duration
}

// DefaultSilence is the longest a client waits for any packet from rs:
// while it works on a request that takes long (an up waiting for an
// init, a down waiting for a graceful stop), rs's connection says it is
// alive every DefaultKeepalive. An rs that says nothing for this long is
// stopped (SIGSTOP) or wedged.
const (
	DefaultSilence   = 5 * time.Second
	DefaultKeepalive = time.Second
)

// DefaultTimeout is how long a call of req may take in all: 10s for what
// rs answers at once (status, clone, unclone); a minute for what waits
// on services (up and restart wait for an init, down and shutdown for
// graceful stops); for update, a minute more than its maxtime; none for
// logs -f, which goes on until the caller ends it (but the silence bound
// holds). The timeout ends the wait, not the operation: rs carries on.
func DefaultTimeout(req Request) time.Duration {
	switch req.Op {
	case OpStatus, OpClone, OpUnclone, OpReopenLogs, OpSignal:
		return 10 * time.Second
	case OpEvents:
		return 0 // until the client stops
	case OpLogs:
		if req.Follow {
			return 0
		}
		return time.Minute
	case OpUpdate:
		// A group's members prepare one after another.
		d := max(req.MaxTime, 0)
		if n := time.Duration(1 + len(req.Group)); d < (1<<62)/n {
			d *= n
		}
		return time.Minute + min(d, math.MaxInt64-time.Minute)
	case OpUpdateSelfResult:
		return 5 * time.Second
	}
	return time.Minute
}

// Do sends req and returns the final reply; progress replies go to
// progress (which may be nil). A reply that reports a failure comes back
// as an *Error too. Before it sends anything, Do checks that the socket
// is served by its own uid or root (SO_PEERCRED): anyone else there is
// an impostor, and gets nothing.
func (c Client) Do(req Request, progress func(string)) (Reply, error) {
	return c.exchange(context.Background(), req, func(r Reply) error {
		if progress != nil && r.Progress != "" {
			progress(r.Progress)
		}
		return nil
	})
}

// Stream sends req, whose reply is streamed (logs, events), and hands each piece
// (lines, or a note in Message) to each as it comes, then returns the
// final reply. It returns when
// each returns an error (that error), or when ctx ends (ctx's error):
// it closes the connection, and rs stops sending.
func (c Client) Stream(ctx context.Context, req Request, each func(Reply) error) (Reply, error) {
	return c.exchange(ctx, req, func(r Reply) error {
		if len(r.Logs) == 0 && len(r.Events) == 0 && r.Message == "" {
			return nil // a keepalive
		}
		return each(r)
	})
}

// exchange sends req and hands every reply that is not the final one to
// each.
func (c Client) exchange(ctx context.Context, req Request, each func(Reply) error) (Reply, error) {
	b, err := msgpack.Marshal(&req)
	if err != nil {
		return Reply{}, err
	}
	if len(b) > MaxRequest {
		return Reply{}, fmt.Errorf("%w: the request takes %d bytes, more than %d", ErrInvalid, len(b), MaxRequest)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout(req)
	}
	var deadline time.Time // zero: none (logs -f)
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	dialBy := deadline
	if dialBy.IsZero() {
		dialBy = time.Now().Add(time.Minute)
	}
	conn, err := c.dial(dialBy)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	// ctx's end wakes any read or write at once.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := checkServer(conn, c.Socket); err != nil {
		return Reply{}, err
	}
	silence := c.Silence
	if silence <= 0 {
		silence = DefaultSilence
	}
	conn.SetWriteDeadline(dialBy)
	if _, err := conn.Write(b); err != nil {
		if ctx.Err() != nil {
			return Reply{}, ctx.Err()
		}
		return Reply{}, c.ioError("send to rs", err, deadline, timeout, silence)
	}
	rr := newReplyReader(conn)
	for {
		// Each packet within the silence bound, the whole within the timeout.
		next := time.Now().Add(silence)
		if !deadline.IsZero() && deadline.Before(next) {
			next = deadline
		}
		conn.SetReadDeadline(next)
		r, err := rr.next()
		if ctx.Err() != nil {
			return Reply{}, ctx.Err()
		}
		if err != nil {
			return Reply{}, c.ioError("read from rs", err, deadline, timeout, silence)
		}
		if !r.Done {
			if err := each(r); err != nil {
				return Reply{}, err
			}
			continue
		}
		if r.Err != "" {
			return r, &Error{Code: r.Code, Msg: r.Err}
		}
		return r, nil
	}
}

// dial connects by the deadline. A full backlog (EAGAIN: rs is taking
// many connections) is retried until then.
func (c Client) dial(deadline time.Time) (*net.UnixConn, error) {
	delay := time.Millisecond
	for {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.Dial("unixpacket", c.Socket)
		switch {
		case err == nil:
			return conn.(*net.UnixConn), nil
		case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("%w (%s): %w", ErrPermission, c.Socket, err)
		case errors.Is(err, syscall.EAGAIN) && time.Now().Add(delay).Before(deadline):
			time.Sleep(delay)
			delay = min(2*delay, 100*time.Millisecond)
			continue
		case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.EAGAIN):
			return nil, fmt.Errorf("%w: %s: could not connect in time (rs's backlog is full)", ErrTimeout, c.Socket)
		}
		return nil, fmt.Errorf("%w (%s): %w", ErrUnreachable, c.Socket, err)
	}
}

func (c Client) ioError(what string, err error, deadline time.Time, timeout, silence time.Duration) error {
	switch {
	case !errors.Is(err, os.ErrDeadlineExceeded):
	case deadline.IsZero() || time.Now().Before(deadline):
		return fmt.Errorf("%w: rs at %s said nothing for %v (is it stopped?)", ErrTimeout, c.Socket, silence)
	default:
		return fmt.Errorf("%w: rs at %s gave no reply within %v", ErrTimeout, c.Socket, timeout)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkServer refuses a server that is not of our uid or root.
func checkServer(c *net.UnixConn, path string) error {
	cred, err := peerCred(c)
	if err != nil {
		return fmt.Errorf("%s: who serves it: %w", path, err)
	}
	if uid := os.Getuid(); cred.Uid != 0 && int(cred.Uid) != uid {
		return fmt.Errorf("%w: %s is served by uid %d, not by our uid %d or root: nothing sent to it", ErrPermission, path, cred.Uid, uid)
	}
	return nil
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
