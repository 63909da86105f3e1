package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Listen creates the control socket, mode 0600. A stale socket from a
// dead rs is replaced; a live rs on the same path, or anything there that
// is not a socket, is an error.
func Listen(path string) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unixpacket", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen %s: another rs is running there", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("listen %s: something that is not a socket is there (%s); not removing it", path, fi.Mode().Type())
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listen %s: %w", path, err)
		}
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

// Peer is the process at the other end of a control connection: its pid
// and uid as the kernel says (SO_PEERCRED), and its process group and
// cgroup as they were when its request came, looked up off rs's loop.
type Peer struct {
	Pid, Uid, Pgid int
	// Cgroup is its cgroup v2 path (the "0::" line of /proc/<pid>/cgroup),
	// "" where there is none.
	Cgroup string
}

// Handler answers one request from peer: it returns the final reply and
// may call progress, from its own goroutine, until then. It runs on the
// connection's goroutine, so it may wait.
type Handler func(req Request, peer Peer, progress func(string)) Reply

// requestTimeout bounds how long a client may take to send its request,
// and each reply packet to be taken.
const requestTimeout = 5 * time.Second

// DefaultMaxConns bounds the control connections a Server holds at once.
const DefaultMaxConns = 64

// Server serves the control socket: one goroutine per connection, each
// bounded by deadlines, so a client that sends nothing blocks nobody.
//
// It holds at most MaxConns connections. When a new one comes and all
// are held, the oldest that has not sent its request yet is closed to
// make room (a flood of silent connections only pushes out its own);
// if every one held has a request in progress, new ones wait in the
// listen backlog until one ends. Streams, which last as long as their
// client likes, take at most MaxStreams of them; one more is refused
// (busy), so that the rest stay for requests that end. A connection's
// buffer is the size of its request, known before it is read.
type Server struct {
	Handler Handler
	// Stream answers the requests whose reply is streamed (logs); nil:
	// they are refused.
	Stream   StreamHandler
	Log      *slog.Logger
	MaxConns int // 0: DefaultMaxConns
	// MaxStreams bounds the streams (logs -f, events) open at once, so
	// that they never take every connection: a client that opens
	// streams without end (a service with control = true, say) leaves
	// room for the operator's commands. 0: half of MaxConns.
	MaxStreams int
	// Keepalive: how often a connection whose request is in progress
	// tells the client that rs lives; 0: DefaultKeepalive.
	Keepalive time.Duration

	conns sync.WaitGroup

	mu      sync.Mutex
	room    *sync.Cond // signalled when a held connection ends
	held    int        // connections whose goroutine has not ended
	leave   int        // of them, closed to make room and on their way out
	idle    []*conn    // held, waiting for their request; oldest first
	evict   int64      // connections closed to make room, for the log
	streams int        // streams open now (serveStream)
}

// conn is one held connection.
type conn struct {
	c       *net.UnixConn
	evicted bool // closed to make room: no longer counted
}

// Serve accepts connections until ln is closed.
func (s *Server) Serve(ln *net.UnixListener) error {
	s.mu.Lock()
	if s.room == nil {
		s.room = sync.NewCond(&s.mu)
	}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of fds, say: keep serving once some are back, as
			// net/http does, rather than go deaf for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log().Error("control socket: accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		cn := s.admit(c)
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer s.release(cn)
			s.serveConn(cn)
		}()
	}
}

// admit holds c, making room first: it closes the oldest connection that
// has sent nothing yet, or waits until a held one ends.
func (s *Server) admit(c *net.UnixConn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := s.MaxConns
	if limit <= 0 {
		limit = DefaultMaxConns
	}
	// A closed connection counts until its goroutine has ended, so that
	// a flood is bounded in goroutines as well as in fds.
	for s.held >= limit {
		if s.leave > 0 || len(s.idle) == 0 {
			s.room.Wait()
			continue
		}
		old := s.idle[0]
		s.idle = s.idle[1:]
		old.evicted = true
		old.c.Close() // its Read returns; its goroutine ends
		s.leave++
		if s.evict++; s.evict&(s.evict-1) == 0 { // 1, 2, 4, 8...: not a line per connection
			s.log().Warn("control socket: too many connections; closed ones that sent nothing", "held", limit, "closed", s.evict)
		}
	}
	cn := &conn{c: c}
	s.held++
	s.idle = append(s.idle, cn)
	return cn
}

// busy takes cn off the idle list: its request came. It reports false if
// cn was closed to make room meanwhile.
func (s *Server) busy(cn *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.idle, cn); i >= 0 {
		s.idle = slices.Delete(s.idle, i, i+1)
	}
	return !cn.evicted
}

func (s *Server) release(cn *conn) {
	cn.c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cn.evicted {
		s.leave--
	} else if i := slices.Index(s.idle, cn); i >= 0 {
		s.idle = slices.Delete(s.idle, i, i+1)
	}
	s.held--
	s.room.Signal()
}

// Wait waits, at most d, for the connections in progress to get their
// replies out: `service shutdown` must hear that rs stopped before rs
// exits.
func (s *Server) Wait(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

// serveConn answers one connection: read one request, check the peer,
// hand the request to the handler, send progress (and keepalives while
// the handler works) and the final reply.
func (s *Server) serveConn(cn *conn) {
	c := cn.c
	var mu sync.Mutex // progress may come from another goroutine than the final reply
	sendErr := func(r Reply) error {
		mu.Lock()
		defer mu.Unlock()
		err := writeReply(pieceWriter{c}, &r)
		switch {
		case err == nil:
		case errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET):
			// The client went: the usual end of a follow.
			s.log().Debug("control socket: client gone before its reply", "err", err)
		default:
			s.log().Warn("control socket: reply lost", "err", err)
		}
		return err
	}
	send := func(r Reply) { sendErr(r) }
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	size, err := packetSize(c)
	if !s.busy(cn) {
		return // closed to make room for another
	}
	var buf []byte
	if err == nil {
		// The request is read even from a peer to be refused, and even
		// when too large (the kernel drops the rest): closing a socket
		// with unread data resets it, and the peer would never see why.
		buf = make([]byte, min(max(size, 1), MaxRequest+1))
		var n int
		n, err = c.Read(buf)
		buf = buf[:n]
	}
	peer, perr := peerOf(c)
	if perr != nil {
		lvl := slog.LevelWarn
		if errors.Is(perr, unix.ESRCH) {
			lvl = slog.LevelDebug // it gave up and went before rs read it
		}
		s.log().Log(context.Background(), lvl, "control client refused", "err", perr)
		send(Failure(perr))
		return
	}
	if err != nil {
		send(Failure(fmt.Errorf("%w: %v", ErrInvalid, err)))
		return
	}
	if size > MaxRequest {
		send(Failure(fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, size, MaxRequest)))
		return
	}
	req, err := DecodeRequest(buf)
	if err != nil {
		send(Failure(err))
		return
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		every := s.Keepalive
		if every <= 0 {
			every = DefaultKeepalive
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				send(Reply{}) // not done, no progress: the client only notes that rs lives
			case <-stop:
				return
			}
		}
	}()
	var r Reply
	switch {
	case !Streams(req.Op):
		r = s.Handler(req, peer, func(p string) { send(Reply{Progress: p}) })
	case s.Stream == nil:
		r = Failure(fmt.Errorf("%w: this rs does not answer %s", ErrInvalid, req.Op))
	case !s.takeStream():
		r = Failure(fmt.Errorf("%w: %d streams (logs -f, events) are open, as many as rs serves at once; end one", ErrBusy, s.streamLimit()))
	default:
		r = s.serveStream(c, req, peer, sendErr)
		s.mu.Lock()
		s.streams--
		s.mu.Unlock()
	}
	close(stop)
	<-stopped // no keepalive after the reply
	r.Done = true
	send(r)
}

func (s *Server) streamLimit() int {
	if s.MaxStreams > 0 {
		return s.MaxStreams
	}
	conns := s.MaxConns
	if conns <= 0 {
		conns = DefaultMaxConns
	}
	return max(conns/2, 1)
}

// takeStream counts a stream in, if one more may be open.
func (s *Server) takeStream() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams >= s.streamLimit() {
		return false
	}
	s.streams++
	return true
}

// serveStream runs the stream handler while it watches the connection:
// a client sends nothing after its request, so a read that returns says
// it went away. The watching goroutine ends before this returns.
func (s *Server) serveStream(c *net.UnixConn, req Request, peer Peer, send func(Reply) error) Reply {
	gone, watched := make(chan struct{}), make(chan struct{})
	c.SetReadDeadline(time.Time{})
	go func() {
		defer close(watched)
		defer close(gone)
		var b [1]byte
		c.Read(b[:]) // EOF, a packet, or the deadline below
	}()
	r := s.Stream(req, peer, NewStream(send, gone))
	c.SetReadDeadline(time.Now()) // ends the read if the client is still there
	<-watched
	return r
}

// packetSize waits (within the read deadline) for the request packet and
// returns its size without reading it: no buffer is held for a client
// that has sent nothing. 0 is an empty packet or the end of the
// connection.
func packetSize(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, rerr
}

// peerOf lets in only our own uid and root, and says which process asked:
// its process group (a service's processes are in the group its instance
// leads) and cgroup. A peer whose group cannot be looked up has gone, or
// hides: it is refused, as rs cannot tell whether it is a service's.
func peerOf(c *net.UnixConn) (Peer, error) {
	cred, err := peerCred(c)
	if err != nil {
		return Peer{}, err
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return Peer{}, fmt.Errorf("%w: uid %d may not control this rs", ErrPermission, cred.Uid)
	}
	p := Peer{Pid: int(cred.Pid), Uid: int(cred.Uid)}
	if p.Pid <= 0 {
		// Its pid has no number here (another pid namespace); and
		// getpgid(0) would answer rs's own group.
		return Peer{}, fmt.Errorf("%w: cannot tell which process asked (no pid in rs's pid namespace)", ErrPermission)
	}
	if p.Pgid, err = unix.Getpgid(p.Pid); err != nil {
		return Peer{}, fmt.Errorf("%w: cannot tell which process asked (pid %d: %w)", ErrPermission, p.Pid, err)
	}
	p.Cgroup = CgroupOf(p.Pid)
	return p, nil
}

// CgroupOf reads the cgroup v2 path of pid (the "0::" line of
// /proc/<pid>/cgroup), "" if it has none. It reads /proc: never call it
// on rs's loop.
func CgroupOf(pid int) string {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if path, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return path
		}
	}
	return ""
}

// pieceWriter bounds each piece of a reply, not the whole: a client that
// stops reading is dropped after requestTimeout, one that reads a large
// reply slowly (a loaded machine) gets all of it.
type pieceWriter struct{ c *net.UnixConn }

func (w pieceWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(requestTimeout))
	return w.c.Write(p)
}
