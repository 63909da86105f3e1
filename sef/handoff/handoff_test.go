package handoff_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/sef/handoff"
)

const wait = 10 * time.Second

// adder is a StateWriter stand-in: it keeps a copy of each socket, as
// sef does.
type adder map[string]*os.File

func (a adder) AddConn(name string, c syscall.Conn) error {
	f, err := c.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		return err
	}
	a[name] = f
	return nil
}

func waitReached(t *testing.T, reached <-chan struct{}) {
	t.Helper()
	select {
	case <-reached:
	case <-time.After(wait):
		t.Fatal("the state was not reached")
	}
}

func newGroup(mode handoff.Mode) (*handoff.Group, <-chan struct{}) {
	reached := make(chan struct{}, 16)
	return handoff.New(mode, func() { reached <- struct{}{} }), reached
}

// echoLines serves c line by line with a Checkpoints safe point before
// each read; it parks with the bytes it read but has not answered.
func echoLines(c *handoff.Conn, start []byte) {
	defer c.Close()
	buf := append([]byte(nil), start...)
	tmp := make([]byte, 64)
	for {
		for i, b := range buf {
			if b == '\n' {
				c.Write(buf[:i+1])
				buf = append(buf[:0], buf[i+1:]...)
				break
			}
		}
		if c.Parking() {
			if !c.Park(buf, []byte("echo")) {
				return
			}
			continue
		}
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if errors.Is(err, handoff.ErrInterrupted) {
			continue
		}
		if err != nil {
			return
		}
	}
}

// A connection parked mid-line goes to the new owner with its unread
// bytes; a rollback first resumes it where it stopped; the acceptor
// parks too, and the backlog waits.
func TestCheckpointsHandOver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, reached := newGroup(handoff.Checkpoints)
	hl := g.Listener(ln)
	defer hl.Close()
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return
			}
			go echoLines(c.(*handoff.Conn), nil)
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(wait))
	r := bufio.NewReader(client)
	roundTrip := func(send, want string) {
		t.Helper()
		client.Write([]byte(send))
		if got, err := r.ReadString('\n'); err != nil || got != want {
			t.Fatalf("%q: got %q %v, want %q", send, got, err, want)
		}
	}
	roundTrip("one\n", "one\n")

	// Rollback: everyone parks, then resumes.
	g.Begin()
	waitReached(t, reached)
	g.End()
	roundTrip("two\n", "two\n")

	// Hand-over, with half a line read by the old owner.
	client.Write([]byte("thr"))
	g.Begin()
	waitReached(t, reached)
	if g.Conns() != 1 {
		t.Fatalf("%d connections tracked", g.Conns())
	}
	fds := adder{}
	state, err := g.AppendState([]byte(nil), fds)
	if err != nil {
		t.Fatal(err)
	}
	g.Close() // the old instance exits
	restored, rest, err := handoff.Decode(state, fds)
	if err != nil || len(rest) != 0 || len(restored) != 1 || len(fds) != 0 {
		t.Fatalf("decode: %v, %d left, %d conns, %d fds", err, len(rest), len(restored), len(fds))
	}
	rc := restored[0]
	if string(rc.State) != "echo" {
		t.Fatalf("state %q", rc.State)
	}
	g2, _ := newGroup(handoff.Checkpoints)
	defer g2.Close()
	go echoLines(g2.Adopt(rc.Conn, nil), rc.Unread)
	roundTrip("ee\n", "three\n")
}

// In IdleReads mode an idle connection parks inside Read; a busy one is
// waited for, and parks once its owner marks it idle again.
func TestIdleReadsParkOnlyIdle(t *testing.T) {
	g, reached := newGroup(handoff.IdleReads)
	defer g.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := g.Adopt(peer, nil)
	got := make(chan string, 4)
	go func() { // a reader that is not ours: it reads, then goes idle
		buf := make([]byte, 16)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	client.Write([]byte("req"))
	if s := <-got; s != "req" {
		t.Fatalf("read %q", s)
	}
	// Busy (a request read, not yet answered): not ready.
	g.Begin()
	if g.Ready() {
		t.Fatal("ready with a busy connection")
	}
	c.SetIdle()
	waitReached(t, reached)
	client.Write([]byte("next"))
	g.End() // rollback: the parked Read reads on
	select {
	case s := <-got:
		if s != "next" {
			t.Fatalf("after the rollback read %q", s)
		}
	case <-time.After(wait):
		t.Fatal("the parked read did not resume")
	}
}
