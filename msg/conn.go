package msg

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrWouldBlock is returned by TrySend when the peer's receive queue is full.
var ErrWouldBlock = errors.New("channel full")

// Pair returns both ends of a new SOCK_SEQPACKET socketpair, close-on-exec.
func Pair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "channel"), os.NewFile(uintptr(fds[1]), "channel"), nil
}

// Conn is one end of a channel: one packet per message, fds beside it.
// Recv is for one goroutine at a time; Send and TrySend may be called
// concurrently with Recv.
//
// The socket is kept out of the runtime's poller, which would watch it
// for writability too: then every packet the peer reads from its end
// wakes this process's poller for nothing (and the peer's, the other way
// round). Recv waits on a private epoll set that reports readability
// only, made at the first Recv; a Conn read through a Mux never needs one.
type Conn struct {
	sock    *os.File        // blocking mode: not in the runtime's poller
	sockRaw syscall.RawConn // for the fd, reference-counted against Close

	mu     sync.Mutex
	closed bool
	ep     *os.File // sock's readability, for Recv; in the runtime's poller
	epRaw  syscall.RawConn
	mux    *Mux // the Mux reading it, if any
	token  uint64
}

// recvBuf is where one packet and its control data land. Buffers are
// pooled, taken only while a packet is being read: a channel that waits
// holds none, so a thousand idle channels do not keep 64 MiB of them.
type recvBuf struct {
	data [MaxPacket]byte
	oob  []byte
}

var recvBufs = sync.Pool{New: func() any {
	return &recvBuf{oob: make([]byte, unix.CmsgSpace(MaxFDs*4)+unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
}}

// NewConn wraps a SOCK_SEQPACKET socket. It takes ownership of f: f is
// closed, the Conn keeps its own descriptor.
func NewConn(f *os.File) (*Conn, error) {
	defer f.Close()
	fd, err := rawFD(f)
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("channel: socket type %d is not SOCK_SEQPACKET", typ)
	}
	sfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("channel: dup: %w", err)
	}
	// Blocking mode keeps os.NewFile from registering it with the poller;
	// every read and TrySend says MSG_DONTWAIT itself.
	if err := unix.SetNonblock(sfd, false); err != nil {
		unix.Close(sfd)
		return nil, fmt.Errorf("channel: %w", err)
	}
	c := &Conn{sock: os.NewFile(uintptr(sfd), "channel")}
	if c.sockRaw, err = c.sock.SyscallConn(); err != nil {
		c.sock.Close()
		return nil, fmt.Errorf("channel: %w", err)
	}
	return c, nil
}

// waiter returns the private epoll set Recv waits on, made on first use.
func (c *Conn) waiter() (*os.File, syscall.RawConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, net.ErrClosed
	}
	if c.epRaw != nil {
		return c.ep, c.epRaw, nil
	}
	ep, raw, err := newEpoll("channel-epoll")
	if err == nil {
		err = epollAdd(raw, c, 0)
		if err != nil {
			ep.Close()
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("channel: %w", err)
	}
	c.ep, c.epRaw = ep, raw
	return ep, raw, nil
}

// newEpoll returns an empty nonblocking epoll set, watched by the
// runtime's poller: it reads as readable while one of its channels is.
func newEpoll(name string) (*os.File, syscall.RawConn, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), name) // nonblocking: in the poller
	raw, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	return ep, raw, nil
}

// epollData is the data epollAdd gave the channel an event is about.
func epollData(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// epollAdd puts c's socket in the set ep for readability
// (level-triggered), data naming it in the events.
func epollAdd(ep syscall.RawConn, c *Conn, data uint64) error {
	var err error
	cerr := ep.Control(func(epfd uintptr) {
		err = c.sockRaw.Control(func(fd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(data), Pad: int32(data >> 32)}
			err = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, int(fd), &ev)
		})
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// FD is the channel's descriptor, for a table that crosses an exec in
// place; the Conn still owns it.
func (c *Conn) FD() int {
	fd := -1
	c.sockRaw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// Close closes the channel and takes it out of its Mux. A blocked Recv
// returns net.ErrClosed; so does a Send blocked on a full queue (the
// socket is shut down first).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	ep, mux := c.ep, c.mux
	c.mu.Unlock()
	if mux != nil {
		mux.remove(c)
	}
	c.sockRaw.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	if ep != nil {
		ep.Close()
	}
	return c.sock.Close()
}

// SetReadDeadline bounds the next Recv; the zero time removes the bound.
func (c *Conn) SetReadDeadline(t time.Time) error {
	ep, _, err := c.waiter()
	if err != nil {
		return err
	}
	return ep.SetReadDeadline(t)
}

// Send writes m with fds attached, waiting while the peer's queue is full.
// The caller keeps ownership of fds; they may be closed once Send returns.
func (c *Conn) Send(m *Message, fds ...*os.File) error {
	return c.send(m, fds, false)
}

// TrySend is Send that never waits: a full queue gives ErrWouldBlock.
// rs uses it so that a service that does not read cannot stall it.
func (c *Conn) TrySend(m *Message, fds ...*os.File) error {
	return c.send(m, fds, true)
}

func (c *Conn) send(m *Message, files []*os.File, nowait bool) error {
	if len(files) != len(m.Names) {
		return fmt.Errorf("send %s: %w", m.Kind, ErrFDMismatch)
	}
	b, err := Encode(m)
	if err != nil {
		return err
	}
	if err := c.SendRaw(b, files, nowait); err != nil {
		return fmt.Errorf("send %s: %w", m.Kind, err)
	}
	return nil
}

// SendRaw writes one packet as it is. Only fault injection and tests need
// it; everything else goes through Send.
func (c *Conn) SendRaw(b []byte, files []*os.File, nowait bool) error {
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fd, err := rawFD(f)
			if err != nil {
				return err
			}
			fds[i] = fd
		}
		oob = unix.UnixRights(fds...)
	}
	flags := unix.MSG_NOSIGNAL
	if nowait {
		flags |= unix.MSG_DONTWAIT
	}
	var serr error
	err := c.sockRaw.Control(func(fd uintptr) {
		for {
			// Without MSG_DONTWAIT this blocks the thread while the
			// peer's queue is full; Close's shutdown ends the wait.
			if nowait {
				serr = rawSendmsg(int(fd), b, oob, flags)
			} else {
				serr = unix.Sendmsg(int(fd), b, oob, nil, flags)
			}
			if serr != unix.EINTR {
				return
			}
		}
	})
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	// The kernel took its own references; ours must live until here.
	runtime.KeepAlive(files)
	if err == nil {
		err = serr
	}
	if errors.Is(err, unix.EAGAIN) {
		return ErrWouldBlock
	}
	return err
}

// rawFD returns f's descriptor without (*os.File).Fd, which would switch
// the open file description, shared with every dup of it (the caller's
// listener, say), to blocking mode and break deadlines and Close there.
// The caller keeps f open until the fd has been used.
func rawFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("fd of %s: %w", f.Name(), err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, fmt.Errorf("fd of %s: %w", f.Name(), err)
	}
	return fd, nil
}

// Recv reads one message and the fds that came with it, which the caller
// then owns. A closed peer gives io.EOF. A malformed packet gives an error
// wrapping a sentinel of this package, with any fds already closed.
func (c *Conn) Recv() (Message, []*os.File, error) {
	_, ep, err := c.waiter()
	if err != nil {
		return Message{}, nil, err
	}
	var p packet
	// The epoll fd's readiness stands for the socket's.
	err = ep.Read(func(uintptr) bool { return p.read(c) != unix.EAGAIN })
	if err == nil {
		err = p.err
	}
	return ownedIfValid(p.message(err))
}

// TryRecv is Recv that never waits: nothing queued gives ErrWouldBlock.
func (c *Conn) TryRecv() (Message, []*os.File, error) {
	m, files, _, err := c.tryRecv()
	return ownedIfValid(m, files, err)
}

// ownedIfValid hands the caller a packet's fds only with a valid message;
// with an error it closes them where it stands (Recv's and TryRecv's
// callers are services, whose peer is rs).
func ownedIfValid(m Message, files []*os.File, err error) (Message, []*os.File, error) {
	if err != nil {
		CloseFiles(files)
		return m, nil, err
	}
	return m, files, nil
}

// tryRecv is TryRecv that also returns when the peer sent the packet, by
// the kernel's stamp, if EnableTimestamps was called (else zero). The fds
// of a packet that fails come back with its error: closing one can block
// (a socket with SO_LINGER set waits out its linger time), so the caller
// decides where.
func (c *Conn) tryRecv() (Message, []*os.File, time.Time, error) {
	var p packet
	if err := p.read(c); err == unix.EAGAIN {
		return Message{}, nil, time.Time{}, ErrWouldBlock
	}
	m, files, err := p.message(p.err)
	return m, files, p.sent, err
}

// EnableTimestamps has the kernel stamp each packet sent to this end with
// the time it was sent (SO_TIMESTAMPNS); a Mux hands the stamp over as
// Delivery.At. A round trip measured from it leaves out how long the
// packet then waited to be read.
func (c *Conn) EnableTimestamps() error {
	var err error
	if cerr := c.sockRaw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("channel: timestamps: %w", err)
	}
	return nil
}

// packet is one read in progress.
type packet struct {
	b               *recvBuf
	n, oobn, rflags int
	err             error
	sent            time.Time // the kernel's stamp, if any
}

// read reads one packet without waiting and returns its error (EAGAIN
// when there is none); a buffer is held only when a packet came.
func (p *packet) read(c *Conn) error {
	cerr := c.sockRaw.Control(func(fd uintptr) {
		p.b = recvBufs.Get().(*recvBuf)
		for {
			p.n, p.oobn, p.rflags, p.err = rawRecvmsg(int(fd), p.b.data[:], p.b.oob, unix.MSG_CMSG_CLOEXEC)
			if p.err != unix.EINTR {
				break
			}
		}
		if p.err == unix.EAGAIN {
			recvBufs.Put(p.b) // not while waiting
			p.b = nil
		}
	})
	if cerr != nil {
		p.err = cerr
	}
	return p.err
}

// message decodes the packet read, or returns err; the buffer goes back.
// The fds that came with a packet that fails are returned with the error,
// for the caller to close.
func (p *packet) message(err error) (Message, []*os.File, error) {
	b, n, oobn, rflags := p.b, p.n, p.oobn, p.rflags
	if b != nil {
		defer recvBufs.Put(b)
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	if err != nil {
		return Message{}, nil, err
	}
	files, sent, ferr := parseControl(b.oob[:oobn])
	p.sent = sent
	fail := func(e error) (Message, []*os.File, error) {
		return Message{}, files, e
	}
	switch {
	case ferr != nil:
		return fail(ferr)
	case rflags&unix.MSG_CTRUNC != 0:
		return fail(ErrTooManyFDs)
	case rflags&unix.MSG_TRUNC != 0:
		return fail(ErrOversized)
	case n == 0 && len(files) == 0:
		return Message{}, nil, io.EOF
	}
	m, err := Decode(b.data[:n], len(files)) // Decode copies what it keeps
	if err != nil {
		return fail(err)
	}
	return m, files, nil
}

// parseControl turns SCM_RIGHTS control messages into files and reads a
// SCM_TIMESTAMPNS stamp. Every fd that arrived is returned, with the
// error too.
func parseControl(oob []byte) ([]*os.File, time.Time, error) {
	if len(oob) == 0 {
		return nil, time.Time{}, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: control message: %v", ErrMalformed, err)
	}
	var files []*os.File
	var sent time.Time
	var bad error
	for i := range cmsgs {
		h := &cmsgs[i].Header
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(cmsgs[i].Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&cmsgs[i].Data[0]))
			sent = time.Unix(ts.Unix())
			continue
		}
		fds, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			bad = fmt.Errorf("%w: control message: %v", ErrMalformed, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	return files, sent, bad
}

// CloseFiles closes every file; for callers that own a received batch.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
