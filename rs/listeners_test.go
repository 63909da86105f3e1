package rs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// fileOf returns a dup of a listener's or connection's socket.
func fileOf(t *testing.T, v any) *os.File {
	t.Helper()
	f, err := v.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// sockets is what a service's fd store holds in these tests: a TCP
// listener on a port the kernel chose, a unix one, and a connected TCP
// socket (conn, accepted as peer), all closed at the test's end.
type sockets struct {
	tcp, ux    net.Listener
	sock       string // ux's path
	conn, peer net.Conn
}

func newSockets(t *testing.T) sockets {
	t.Helper()
	var k sockets
	var err error
	if k.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.tcp.Close() })
	k.sock = filepath.Join(t.TempDir(), "l.sock")
	if k.ux, err = net.Listen("unix", k.sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.ux.Close() })
	if k.conn, err = net.Dial("tcp", k.tcp.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.conn.Close() })
	if k.peer, err = k.tcp.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.peer.Close() })
	return k
}

// The held listeners of a service: TCP ones refuse while paused, others
// accept and close at once, every other fd is left alone; resumed, the
// same sockets accept again.
func TestPauseResumeListeners(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	k := newSockets(t)
	tcp, sock, ux, conn, peer := k.tcp, k.sock, k.ux, k.conn, k.peer
	var lc net.ListenConfig
	lc.SetMultipathTCP(false) // Go's default is MPTCP where the kernel has it
	plain, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	r, w, _ := os.Pipe()
	defer w.Close()
	svc := &service{fdstore: map[string]*os.File{
		"tcp": fileOf(t, tcp), "plain": fileOf(t, plain), "unix": fileOf(t, ux), "conn": fileOf(t, conn), "pipe": r,
	}}

	waiting, err := net.Dial("tcp", tcp.Addr().String()) // in the backlog when it pauses
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	s.pauseListeners(svc)
	if len(svc.paused) != 3 {
		t.Fatalf("%d listeners paused, want 3", len(svc.paused))
	}
	waiting.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := waiting.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection waiting in the TCP backlog: %v, want a reset", err)
	}
	for _, l := range []net.Listener{tcp, plain} {
		if _, err := net.Dial("tcp", l.Addr().String()); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("TCP while paused: %v, want refused", err)
		}
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("unix while paused: %v", err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("unix while paused: read %v, want EOF (closed at once)", err)
	}
	c.Close()
	// The other fds are as they were: the connection still carries data.
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Errorf("connected socket after pause: %v", err)
	}
	peer.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != nil {
		t.Errorf("connected socket after pause: %v", err)
	}

	s.resumeListeners(svc)
	if svc.paused != nil {
		t.Fatalf("still paused after resume")
	}
	for _, l := range []net.Listener{tcp, plain, ux} {
		addr := l.Addr()
		go func() {
			if c, err := net.Dial(addr.Network(), addr.String()); err == nil {
				c.Write([]byte("y"))
				c.Close()
			}
		}()
		l.(interface{ SetDeadline(time.Time) error }).SetDeadline(time.Now().Add(5 * time.Second))
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("%s after resume: %v", addr.Network(), err)
		}
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Errorf("%s after resume: read %v", addr.Network(), err)
		}
		c.Close()
	}

	// Paused again, then the store is dropped: the accept loop ends.
	s.pauseListeners(svc)
	s.releaseListeners(svc)
	if svc.paused != nil {
		t.Fatalf("still paused after release")
	}
}

// Dropping the fd store (down, remove) refuses clients before it
// returns, paused or not: the listening sockets are shut down on the
// loop, whoever else still holds them (here the test's own listeners),
// and the close that follows off the loop adds nothing a client sees.
func TestDropFDStoreRefusesAtOnce(t *testing.T) {
	for _, paused := range []bool{false, true} {
		s := &Server{log: slog.New(slog.DiscardHandler)}
		k := newSockets(t)
		tcp, sock, conn, peer := k.tcp, k.sock, k.conn, k.peer
		svc := &service{fdstore: map[string]*os.File{
			"tcp": fileOf(t, tcp), "unix": fileOf(t, k.ux), "conn": fileOf(t, conn),
		}}
		if paused {
			s.pauseListeners(svc)
		}
		s.dropFDStore(svc)
		if _, err := net.Dial("tcp", tcp.Addr().String()); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("paused %v: TCP after the drop: %v, want refused", paused, err)
		}
		if _, err := net.Dial("unix", sock); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("paused %v: unix after the drop: %v, want refused", paused, err)
		}
		if _, err := conn.Write([]byte("x")); err != nil { // not a listener: left alone
			t.Errorf("paused %v: connected socket after the drop: %v", paused, err)
		}
		peer.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); err != nil {
			t.Errorf("paused %v: connected socket after the drop: %v", paused, err)
		}
	}
}
