package rs

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// The control protocol between `service` and rs: a SOCK_SEQPACKET unix
// socket, one msgpack Request per connection, answered by zero or more
// progress Replies and one final Reply (Done set).

// Control operations.
const (
	OpUp       = "up"
	OpDown     = "down"
	OpRestart  = "restart"
	OpUpdate   = "update"
	OpClone    = "clone"
	OpUnclone  = "unclone"
	OpStatus   = "status"
	OpShutdown = "shutdown"
)

// Request is one command from `service`.
type Request struct {
	Op      string        `msgpack:"op"`
	Label   string        `msgpack:"label,omitempty"`
	Binary  string        `msgpack:"binary,omitempty"` // absolute
	Args    []string      `msgpack:"args,omitempty"`
	HasArgs bool          `msgpack:"has_args,omitempty"` // Args given, even if empty
	Period  time.Duration `msgpack:"period,omitempty"`
	// HasPeriod: Period was given (so that 0 can mean "no pings").
	HasPeriod bool          `msgpack:"has_period,omitempty"`
	Restart   string        `msgpack:"restart,omitempty"`
	Depends   []string      `msgpack:"depends,omitempty"`
	Memory    uint64        `msgpack:"memory,omitempty"`     // bytes; 0: keep
	OpenFiles uint64        `msgpack:"open_files,omitempty"` // 0: keep
	CPUTime   time.Duration `msgpack:"cpu_time,omitempty"`   // 0: keep
	State     int           `msgpack:"state,omitempty"`
	MaxTime   time.Duration `msgpack:"maxtime,omitempty"`
}

// Reply is rs's answer. Err empty means success.
type Reply struct {
	Err      string   `msgpack:"err,omitempty"`
	Message  string   `msgpack:"message,omitempty"` // a line for the operator
	Progress string   `msgpack:"progress,omitempty"`
	Services []Status `msgpack:"services,omitempty"`
	Daemon   *Daemon  `msgpack:"daemon,omitempty"` // with status
	Done     bool     `msgpack:"done"`
}

// Daemon is rs's own health, reported with status: what a long run must
// show not growing.
type Daemon struct {
	Pid        int     `msgpack:"pid" json:"pid"`
	UptimeS    float64 `msgpack:"uptime_s" json:"uptime_s"`
	Goroutines int     `msgpack:"goroutines" json:"goroutines"`
	FDs        int     `msgpack:"fds" json:"fds"`
	RSSKiB     int64   `msgpack:"rss_kib" json:"rss_kib"`
	HeapKiB    int64   `msgpack:"heap_kib" json:"heap_kib"`
}

// Status is one row of `service status`; its JSON form is the SPEC's.
type Status struct {
	Label      string   `msgpack:"label" json:"label"`
	State      string   `msgpack:"state" json:"state"`
	Pid        int      `msgpack:"pid" json:"pid"`
	UptimeS    float64  `msgpack:"uptime_s" json:"uptime_s"`
	Restarts   int      `msgpack:"restarts" json:"restarts"`
	Binary     string   `msgpack:"binary" json:"binary"`
	Args       []string `msgpack:"args" json:"args"`
	LastExit   string   `msgpack:"last_exit" json:"last_exit"`
	PingRTTUs  int64    `msgpack:"ping_rtt_us" json:"ping_rtt_us"`
	PeriodMs   int64    `msgpack:"period_ms" json:"period_ms"`
	Depends    []string `msgpack:"depends" json:"depends"`
	Standby    bool     `msgpack:"standby" json:"standby"`         // a standby is wanted
	StandbyPid int      `msgpack:"standby_pid" json:"standby_pid"` // 0 when none runs
}

// MaxRequest bounds a control packet. Replies stay under maxReplyPacket:
// long status tables travel in several packets.
const (
	MaxRequest       = 64 << 10
	maxReplyPacket   = 128 << 10
	statusRowsPacket = 200
)

var (
	ErrBadRequest = errors.New("bad request")
	ErrPeer       = errors.New("permission denied")
)

// DecodeRequest parses a control packet; any input gives a request or an
// error, never a panic.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequest {
		return r, fmt.Errorf("%w: %d bytes", ErrBadRequest, len(b))
	}
	// Scan first: the decoder must never see a length it would allocate
	// for that the packet does not hold.
	if err := msg.Scan(b); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := msgpack.NewDecoder(bytes.NewReader(b)).Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	switch r.Op {
	case OpStatus, OpShutdown:
	case OpUp, OpDown, OpRestart, OpUpdate, OpClone, OpUnclone:
		if r.Label == "" {
			return Request{}, fmt.Errorf("%w: %s needs a label", ErrBadRequest, r.Op)
		}
	default:
		return Request{}, fmt.Errorf("%w: unknown command %q", ErrBadRequest, r.Op)
	}
	return r, nil
}

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

// Listen creates the control socket, mode 0600. A stale socket file from a
// dead rs is replaced; a live rs on the same path is an error.
func Listen(path string) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unixpacket", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen %s: another rs is running there", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	old := unix.Umask(0o177) // no window in which the socket is open to others
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// checkPeer lets in only our own uid and root.
func checkPeer(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("%w: uid %d may not control this rs", ErrPeer, cred.Uid)
	}
	return nil
}

// Client talks to a running rs.
type Client struct {
	Socket  string
	Timeout time.Duration // for connecting and for each reply; 0: no bound
}

// ErrUnreachable: no rs answers on the socket.
var ErrUnreachable = errors.New("rs is not running")

// Do sends req and returns the final reply; progress replies go to
// progress (which may be nil). A reply with Err set is returned as an
// error too.
func (c Client) Do(req Request, progress func(string)) (Reply, error) {
	b, err := msgpack.Marshal(&req)
	if err != nil {
		return Reply{}, err
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	conn, err := net.DialTimeout("unixpacket", c.Socket, timeout)
	if err != nil {
		return Reply{}, fmt.Errorf("%w (%s): %w", ErrUnreachable, c.Socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		return Reply{}, fmt.Errorf("send to rs: %w", err)
	}
	buf := make([]byte, maxReplyPacket)
	var services []Status
	for {
		if c.Timeout > 0 {
			conn.SetReadDeadline(time.Now().Add(c.Timeout))
		}
		n, err := conn.Read(buf)
		if err != nil {
			return Reply{}, fmt.Errorf("read from rs: %w", err)
		}
		if n == 0 {
			return Reply{}, errors.New("rs closed the connection without a reply")
		}
		var r Reply
		if err := msgpack.Unmarshal(buf[:n], &r); err != nil {
			return Reply{}, fmt.Errorf("reply from rs: %w", err)
		}
		services = append(services, r.Services...)
		if !r.Done {
			if progress != nil && r.Progress != "" {
				progress(r.Progress)
			}
			continue
		}
		r.Services = services
		if r.Err != "" {
			return r, errors.New(r.Err)
		}
		return r, nil
	}
}
