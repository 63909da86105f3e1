package sef_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reincarnation/rs/sef"
	"github.com/reincarnation/rs/sef/seftest"
)

// testCtx bounds every wait of a test; nothing comes near it.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, in seftest.Init, cb sef.Callbacks) (*sef.Service, *seftest.RS) {
	t.Helper()
	s, rs, err := seftest.Start(testCtx(t), in, cb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return s, rs
}

// loop runs a main loop that hands each work item to serve; the channel
// gets Receive's final error.
func loop(ctx context.Context, s *sef.Service, serve func(any)) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			w, err := s.Receive(ctx)
			if err != nil {
				done <- err
				return
			}
			if serve != nil {
				serve(w)
			}
		}
	}()
	return done
}

func wantCause(t *testing.T, err error, cause sef.StopCause) {
	t.Helper()
	var se *sef.StopError
	if !errors.Is(err, sef.ErrStopped) || !errors.As(err, &se) || se.Cause != cause {
		t.Fatalf("got %v, want a stop with cause %q", err, cause)
	}
}

// Every way an instance stops says why, and Post stops blocking then.
func TestStopCauses(t *testing.T) {
	t.Run("rs", func(t *testing.T) {
		s, rs := start(t, seftest.Init{}, sef.Callbacks{})
		done := loop(testCtx(t), s, nil)
		rs.Stop()
		wantCause(t, <-done, sef.CauseRS)
		wantCause(t, s.Post(testCtx(t), "late"), sef.CauseRS)
	})
	t.Run("Stop", func(t *testing.T) {
		s, _ := start(t, seftest.Init{}, sef.Callbacks{})
		done := loop(testCtx(t), s, nil)
		s.Stop()
		wantCause(t, <-done, sef.CauseStop)
	})
	t.Run("channel lost", func(t *testing.T) {
		s, rs := start(t, seftest.Init{}, sef.Callbacks{})
		done := loop(testCtx(t), s, nil)
		rs.Close()
		err := <-done
		wantCause(t, err, sef.CauseChannelLost)
		if !errors.Is(err, sef.ErrChannelLost) {
			t.Fatalf("%v is not ErrChannelLost", err)
		}
	})
	t.Run("rs, through a Signal callback", func(t *testing.T) {
		s, rs := start(t, seftest.Init{}, sef.Callbacks{Signal: func(s *sef.Service, _ os.Signal) { s.Stop() }})
		done := loop(testCtx(t), s, nil)
		rs.Stop()
		wantCause(t, <-done, sef.CauseRS)
	})
	t.Run("init failed", func(t *testing.T) {
		_, rs, err := seftest.Start(testCtx(t), seftest.Init{}, sef.Callbacks{InitFresh: func(*sef.Service, sef.Init) error { return errors.New("no disk") }})
		if rs != nil {
			defer rs.Close()
		}
		if !errors.Is(err, sef.ErrInit) {
			t.Fatalf("Startup: %v, want ErrInit", err)
		}
	})
}

// A full queue does not block Post past a stop or its context.
func TestPostDoesNotBlockPastStop(t *testing.T) {
	s, _ := start(t, seftest.Init{}, sef.Callbacks{})
	blocked := make(chan error, 1)
	go func() {
		for {
			if err := s.Post(testCtx(t), 0); err != nil {
				blocked <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if err := s.Post(ctx, 1); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Post with a cancelled context: %v", err)
	}
	s.Stop()
	wantCause(t, <-blocked, sef.CauseStop)
}

func TestReceiveEndsWithItsContext(t *testing.T) {
	s, _ := start(t, seftest.Init{}, sef.Callbacks{})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := loop(ctx, s, nil)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive: %v", err)
	}
}

// With no pings and no work, a readiness reached outside the main loop
// is seen at once through Reached: the update does not wait for a
// wake-up that never comes (rs with --period 0s).
func TestReachedWithoutWakeUps(t *testing.T) {
	var parked atomic.Bool
	s, rs := start(t, seftest.Init{}, sef.Callbacks{
		LUStateChanged: func(s *sef.Service, old, state int) {
			if old == 0 {
				go func() { // a network goroutine parking by itself
					parked.Store(true)
					s.Reached()
				}()
			}
		},
		LUPrepare: func(*sef.Service, int) bool { return parked.Load() },
	})
	loop(testCtx(t), s, nil)
	saved, err := rs.Prepare(testCtx(t), sef.StateRequestFree)
	if err != nil {
		t.Fatal(err)
	}
	saved.Close()
}

// The cycle an author tests: state saved by the old instance, restored
// by the new; the handed-over fd is a copy (the old instance closed its
// own right after AddFD); a refused state; a rollback resumes.
func TestLiveUpdateCycle(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cb := func(got *string, gotFD **os.File) sef.Callbacks {
		return sef.Callbacks{
			LUStateIsValid: func(_ *sef.Service, st int) bool { return st == sef.StateWorkFree },
			LUStateSave: func(_ *sef.Service, sw *sef.StateWriter) error {
				if err := sw.AddFD("pipe", w); err != nil {
					return err
				}
				w.Close() // ours; the new instance has a copy
				_, err := io.WriteString(sw, "count=3")
				return err
			},
			InitLiveUpdate: func(_ *sef.Service, in sef.Init) error {
				b, err := io.ReadAll(in.State)
				*got, *gotFD = string(b), in.State.FDs["pipe"]
				return err
			},
		}
	}
	var got string
	var gotFD *os.File
	s, rs := start(t, seftest.Init{}, cb(&got, &gotFD))
	done := loop(testCtx(t), s, nil)
	if _, err := rs.Prepare(testCtx(t), sef.StateProtocolFree); !errors.Is(err, seftest.ErrRefused) {
		t.Fatalf("state 3: %v, want refused", err)
	}
	if err := rs.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	saved, err := rs.Prepare(testCtx(t), sef.StateWorkFree)
	if err != nil {
		t.Fatal(err)
	}
	defer saved.Close()
	rs.Stop()
	wantCause(t, <-done, sef.CauseRS)

	_, rs2 := start(t, seftest.Init{Type: sef.InitLiveUpdate, State: saved}, cb(&got, &gotFD))
	if got != "count=3" || gotFD == nil || len(rs2.NotTaken()) != 0 {
		t.Fatalf("restored %q, fd %v, not taken %v", got, gotFD, rs2.NotTaken())
	}
	gotFD.Write([]byte("x"))
	gotFD.Close()
	b := make([]byte, 1)
	if _, err := r.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("handed-over pipe: %q %v", b, err)
	}
}

// Listen gives a restarted instance the socket the first one listened
// on, from rs's fd store: same address, and the backlog kept.
func TestListenIsKeptAcrossRestarts(t *testing.T) {
	for _, c := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "s.sock")},
	} {
		t.Run(c.network, func(t *testing.T) {
			s, rs := start(t, seftest.Init{}, sef.Callbacks{})
			ln, err := s.Listen(c.network, c.addr)
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close() // the caller's copy; rs keeps the socket open
			client, err := net.Dial(c.network, addr)
			if err != nil {
				t.Fatalf("dial while no instance serves: %v", err)
			}
			defer client.Close()
			rs.Stop()

			fds, err := rs.Stored()
			if err != nil {
				t.Fatal(err)
			}
			s2, _ := start(t, seftest.Init{Type: sef.InitRestart, FDs: fds}, sef.Callbacks{
				InitRestart: func(_ *sef.Service, in sef.Init) error {
					if len(in.FDs) != 0 {
						t.Errorf("Listen's sockets are in Init.FDs: %v", in.FDs)
					}
					return nil
				},
			})
			for _, f := range fds {
				f.Close()
			}
			ln2, err := s2.Listen(c.network, c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln2.Close()
			if ln2.Addr().String() != addr {
				t.Fatalf("restart listens on %s, first instance on %s", ln2.Addr(), addr)
			}
			peer, err := ln2.Accept() // the client that waited in the backlog
			if err != nil {
				t.Fatal(err)
			}
			peer.Close()
		})
	}
}

// Listen finds one of the config's `listen` sockets by its address, and
// stores nothing then: rs holds that socket already.
func TestListenFindsConfigListener(t *testing.T) {
	t.Setenv("LISTEN_FDNAMES", "web")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	f, err := held.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, rs := start(t, seftest.Init{Type: sef.InitRestart, FDs: map[string]*os.File{"web": f}}, sef.Callbacks{
		InitRestart: func(_ *sef.Service, in sef.Init) error {
			web := in.FDs["web"] // ours: a copy of sef's
			if web == nil {
				t.Error("the config's socket is not in Init.FDs")
				return nil
			}
			return web.Close()
		},
	})
	ln, err := s.Listen("tcp", held.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() != held.Addr().String() {
		t.Fatalf("Listen gave %s, the config's socket is %s", ln.Addr(), held.Addr())
	}
	stored, err := rs.Stored()
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 0 {
		t.Fatalf("Listen stored %d fds for a socket rs holds", len(stored))
	}
}
