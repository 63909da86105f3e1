package sef_test

import (
	"io"
	"net"
	"testing"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/seftest"
)

// A group update's new instance, held after its init: Receive answers
// pings but delivers no work, Listen's listener accepts nothing (the
// client waits in the backlog, its bytes in the kernel) until the
// commit; then both serve, the bytes intact.
func TestHoldUntilCommit(t *testing.T) {
	ctx := testCtx(t)
	var ln net.Listener
	s, rs := start(t, seftest.Init{Type: sef.InitLiveUpdate, Hold: true}, sef.Callbacks{
		InitLiveUpdate: func(s *sef.Service, _ sef.Init) (err error) {
			ln, err = s.Listen("tcp", "127.0.0.1:0")
			return err
		},
	})
	defer ln.Close()
	if !rs.Held() {
		t.Fatal("the init-result does not say the instance holds")
	}
	if err := s.Post(ctx, "work"); err != nil {
		t.Fatal(err)
	}
	got := make(chan any, 1)
	done := loop(ctx, s, func(w any) { got <- w })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Errorf("accept after the commit: %v", err)
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial while held: %v (the backlog should take it)", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("sent while held")); err != nil {
		t.Fatal(err)
	}
	for range 5 { // each pong is a pass of Receive, with the work queued
		if err := rs.Ping(ctx); err != nil {
			t.Fatalf("ping while held: %v", err)
		}
	}
	select {
	case w := <-got:
		t.Fatalf("Receive delivered %v before the commit", w)
	case a := <-accepted:
		t.Fatalf("Accept returned %v before the commit", a)
	case <-s.Committed():
		t.Fatal("Committed closed before the commit")
	default:
	}

	if err := rs.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Committed():
	case <-ctx.Done():
		t.Fatal("Committed not closed after the commit")
	}
	if w := <-got; w != "work" {
		t.Fatalf("after the commit Receive delivered %v", w)
	}
	a := <-accepted
	if a == nil {
		t.FailNow()
	}
	defer a.Close()
	b := make([]byte, len("sent while held"))
	if _, err := io.ReadFull(a, b); err != nil || string(b) != "sent while held" {
		t.Fatalf("read after the commit: %q, %v", b, err)
	}
	rs.Stop()
	wantCause(t, <-done, sef.CauseRS)
}

// Without hold (a service updated alone, a fresh start) an instance
// serves from its init on; a held one whose channel to rs ends (rs died)
// stops as any, and its held Accept returns.
func TestHoldEndsWithTheChannel(t *testing.T) {
	ctx := testCtx(t)
	s, rs := start(t, seftest.Init{Type: sef.InitLiveUpdate}, sef.Callbacks{LUStateRestore: func(*sef.Service, sef.Init) error { return nil }})
	if rs.Held() {
		t.Fatal("held without being asked")
	}
	select {
	case <-s.Committed():
	default:
		t.Fatal("Committed open on an instance not held")
	}

	s, rs = start(t, seftest.Init{Type: sef.InitLiveUpdate, Hold: true}, sef.Callbacks{LUStateRestore: func(*sef.Service, sef.Init) error { return nil }})
	ln, err := s.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	done := loop(ctx, s, nil)
	rs.Close()
	wantCause(t, <-done, sef.CauseChannelLost)
	if err := <-accepted; err == nil {
		t.Fatal("a held Accept returned a connection after the channel was lost")
	}
	select {
	case <-s.Committed():
		t.Fatal("Committed closed without a commit")
	default:
	}
}
