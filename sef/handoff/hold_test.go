package handoff_test

import (
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/sef/handoff"
)

// socketPair returns a connected pair: ours as a net.Conn, theirs as the
// raw socket (to look into its receive queue).
func socketPair(t *testing.T) (net.Conn, *os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, peer := os.NewFile(uintptr(fds[0]), "mine"), os.NewFile(uintptr(fds[1]), "peer")
	c, err := net.FileConn(mine)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); mine.Close(); peer.Close() })
	return c, mine, peer
}

// Held (HoldUntil an open channel), an adopted connection reads nothing,
// not even the bytes it was handed, and the listener accepts nothing:
// the client's bytes stay in the kernel. At the commit both go on, the
// handed-over bytes first; a Group closed while held ends the wait.
func TestHoldUntil(t *testing.T) {
	g, _ := newGroup(handoff.Checkpoints)
	committed := make(chan struct{})
	g.HoldUntil(committed)
	c, mine, peer := socketPair(t)
	hc := g.Adopt(c, []byte("handed "))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := g.Listener(ln)
	defer hl.Close()
	read := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(io.LimitReader(hc, int64(len("handed over"))))
		if err != nil {
			t.Errorf("read after the commit: %v", err)
		}
		read <- string(b)
	}()
	accepted := make(chan error, 1)
	go func() {
		a, err := hl.Accept()
		if a != nil {
			a.Close()
		}
		accepted <- err
	}()
	if _, err := peer.Write([]byte("over")); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	inq, err := unix.IoctlGetInt(int(mine.Fd()), unix.SIOCINQ)
	if err != nil || inq != len("over") {
		t.Fatalf("held: %d bytes queued in the kernel (%v), want %d", inq, err, len("over"))
	}
	select {
	case s := <-read:
		t.Fatalf("held connection read %q", s)
	case err := <-accepted:
		t.Fatalf("held listener accepted (%v)", err)
	default:
	}
	close(committed)
	select {
	case s := <-read:
		if s != "handed over" {
			t.Fatalf("read %q after the commit, want the handed-over bytes, then the kernel's", s)
		}
	case <-time.After(wait):
		t.Fatal("no read after the commit")
	}
	if err := <-accepted; err != nil {
		t.Fatalf("accept after the commit: %v", err)
	}

	g2, _ := newGroup(handoff.Checkpoints)
	g2.HoldUntil(make(chan struct{}))
	c2, _, _ := socketPair(t)
	hc2 := g2.Adopt(c2, nil)
	ended := make(chan error, 1)
	go func() { _, err := hc2.Read(make([]byte, 1)); ended <- err }()
	g2.Close()
	if err := <-ended; err != io.EOF {
		t.Fatalf("a held read when the Group closed: %v, want io.EOF", err)
	}
}
