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
type Conn struct {
	uc  *net.UnixConn
	raw syscall.RawConn
}

// recvBuf is where one packet and its control data land. Buffers are
// pooled, taken only while a packet is being read: a channel that waits
// holds none, so a thousand idle channels do not keep 64 MiB of them.
type recvBuf struct {
	data [MaxPacket]byte
	oob  []byte
}

var recvBufs = sync.Pool{New: func() any {
	return &recvBuf{oob: make([]byte, unix.CmsgSpace(MaxFDs*4))}
}}

// NewConn wraps a SOCK_SEQPACKET socket. It takes ownership of f: f is
// closed, the Conn keeps its own descriptor in the runtime's poller.
func NewConn(f *os.File) (*Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("channel: %T is not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("channel: %w", err)
	}
	return &Conn{uc: uc, raw: raw}, nil
}

// Close closes the channel; a blocked Recv returns.
func (c *Conn) Close() error { return c.uc.Close() }

// SetReadDeadline bounds the next Recv; the zero time removes the bound.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

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
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendmsg(int(fd), b, oob, nil, flags)
			if serr == unix.EINTR {
				continue
			}
			return nowait || serr != unix.EAGAIN
		}
	})
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
	var n, oobn, rflags int
	var rerr error
	var b *recvBuf
	err := c.raw.Read(func(fd uintptr) bool {
		b = recvBufs.Get().(*recvBuf)
		for {
			n, oobn, rflags, _, rerr = unix.Recvmsg(int(fd), b.data[:], b.oob, unix.MSG_CMSG_CLOEXEC)
			if rerr == unix.EINTR {
				continue
			}
			if rerr == unix.EAGAIN {
				recvBufs.Put(b) // not while waiting
				b = nil
				return false
			}
			return true
		}
	})
	if b != nil {
		defer recvBufs.Put(b)
	}
	if err == nil {
		err = rerr
	}
	if err != nil {
		return Message{}, nil, err
	}
	files, ferr := parseRights(b.oob[:oobn])
	fail := func(e error) (Message, []*os.File, error) {
		CloseFiles(files)
		return Message{}, nil, e
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

// parseRights turns SCM_RIGHTS control messages into files. Every fd that
// arrived is either returned or closed.
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrMalformed, err)
	}
	var files []*os.File
	var bad error
	for i := range cmsgs {
		fds, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			bad = fmt.Errorf("%w: control message: %v", ErrMalformed, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	if bad != nil {
		CloseFiles(files)
		return nil, bad
	}
	return files, nil
}

// CloseFiles closes every file; for callers that own a received batch.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
