package sef

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// fakeRS is rs's end of a channel whose other end this process's sef uses.
type fakeRS struct {
	t     *testing.T
	c     *msg.Conn
	hello msg.Message // what the service said first
}

func (f *fakeRS) send(m *msg.Message, files ...*os.File) {
	f.t.Helper()
	if err := f.c.Send(m, files...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeRS) recv() (msg.Message, []*os.File) {
	f.t.Helper()
	f.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, files, err := f.c.Recv()
	if err != nil {
		f.t.Fatalf("fake rs: %v", err)
	}
	return m, files
}

// setChannelEnv hands sef its end as a bare fd, as rs does: sef owns it
// from then on, so no *os.File of ours may close it behind its back.
func setChannelEnv(t *testing.T, f *os.File) {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Setenv(msg.EnvChannelFD, strconv.Itoa(fd))
}

// startup runs Startup against a fake rs and returns both ends.
func startup(t *testing.T, cb Callbacks) (*Service, *fakeRS) {
	t.Helper()
	ours, theirs, err := msg.Pair()
	if err != nil {
		t.Fatal(err)
	}
	setChannelEnv(t, theirs)
	c, err := msg.NewConn(ours)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRS{t: t, c: c}
	t.Cleanup(func() { c.Close() })
	type result struct {
		s   *Service
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Startup(context.Background(), cb)
		done <- result{s, err}
	}()
	if f.hello, _ = f.recv(); f.hello.Kind != msg.KindHello || f.hello.Version != msg.ProtocolVersion {
		t.Fatalf("first message %+v, want hello", f.hello)
	}
	f.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitFresh, Label: "t"})
	if m, _ := f.recv(); m.Kind != msg.KindInitResult || m.Err != "" {
		t.Fatalf("init result %+v", m)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.s, f
}

// receive runs one Receive in the background (it handles system events
// until work or a stop comes).
func receive(s *Service) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := s.Receive(context.Background())
		done <- err
	}()
	return done
}

func TestPingAndStop(t *testing.T) {
	s, f := startup(t, Callbacks{})
	done := receive(s)
	f.send(&msg.Message{Kind: msg.KindPing, Seq: 9})
	if m, _ := f.recv(); m.Kind != msg.KindPong || m.Seq != 9 {
		t.Fatalf("pong %+v", m)
	}
	f.send(&msg.Message{Kind: msg.KindStop})
	if err := <-done; !errors.Is(err, ErrStopped) {
		t.Fatalf("Receive after stop: %v", err)
	}
}

func TestInitFailureIsReported(t *testing.T) {
	ours, theirs, _ := msg.Pair()
	setChannelEnv(t, theirs)
	c, _ := msg.NewConn(ours)
	defer c.Close()
	f := &fakeRS{t: t, c: c}
	done := make(chan error, 1)
	go func() {
		_, err := Startup(context.Background(), Callbacks{InitFresh: func(*Service, Init) error { return errors.New("no disk") }})
		done <- err
	}()
	f.recv() // hello
	f.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitFresh})
	if m, _ := f.recv(); m.Kind != msg.KindInitResult || m.Err != "no disk" {
		t.Fatalf("init result %+v", m)
	}
	if err := <-done; !errors.Is(err, ErrInit) {
		t.Fatalf("Startup: %v", err)
	}
}

func TestLiveUpdatePrepare(t *testing.T) {
	var changes [][2]int
	ready := false
	s, f := startup(t, Callbacks{
		LUStateChanged: func(_ *Service, old, state int) { changes = append(changes, [2]int{old, state}) },
		LUPrepare:      func(*Service, int) bool { return ready },
		LUStateSave: func(_ *Service, w *StateWriter) error {
			_, err := io.WriteString(w, "the state")
			return err
		},
	})

	// An unsupported state is refused at once; the service carries on.
	done := receive(s)
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 7, MaxTime: int64(time.Second)})
	if m, _ := f.recv(); m.Kind != msg.KindLUReady || m.Err != "state 7 not supported" {
		t.Fatalf("state 7: %+v", m)
	}

	// State 2: not ready until the service says so.
	f.send(&msg.Message{Kind: msg.KindLUPrepare, State: 2, MaxTime: int64(time.Second)})
	f.send(&msg.Message{Kind: msg.KindPing, Seq: 1}) // still answered while preparing
	if m, _ := f.recv(); m.Kind != msg.KindPong {
		t.Fatalf("while preparing: %+v", m)
	}
	s.Post(context.Background(), "work") // one more pass of the loop; prepare says not ready
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ready = true
	done = receive(s)
	m, files := f.recv()
	if m.Kind != msg.KindLUReady || m.Err != "" || len(files) != 1 || m.Names[0] != "state" {
		t.Fatalf("lu-ready %+v with %d files", m, len(files))
	}
	b, _ := io.ReadAll(io.NewSectionReader(files[0], 0, 1<<20))
	files[0].Close()
	if string(b) != "the state" {
		t.Fatalf("state %q", b)
	}
	// Quiescent: work waits. A cancel resumes it.
	s.Post(context.Background(), "after")
	f.send(&msg.Message{Kind: msg.KindLUCancel})
	if err := <-done; err != nil {
		t.Fatalf("Receive after cancel: %v", err)
	}
	want := [][2]int{{0, 2}, {2, 0}}
	if len(changes) != 2 || changes[0] != want[0] || changes[1] != want[1] {
		t.Fatalf("state changes %v, want %v", changes, want)
	}
}

func TestStandalone(t *testing.T) {
	os.Unsetenv(msg.EnvChannelFD)
	called := false
	s, err := Startup(context.Background(), Callbacks{InitFresh: func(s *Service, in Init) error {
		called = in.Type == InitFresh
		return nil
	}})
	if err != nil || !called || !s.Standalone() {
		t.Fatalf("standalone: %v, init called %v", err, called)
	}
	s.Post(context.Background(), 1)
	if w, err := s.Receive(context.Background()); err != nil || w != 1 {
		t.Fatalf("Receive: %v %v", w, err)
	}
	s.Stop()
	if _, err := s.Receive(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("after Stop: %v", err)
	}
}

// A live update's init-result says what the new instance did not take:
// the state, when no restore callback ran; the fd store, when no init
// callback ran at all.
func TestLiveUpdateInitReportsWhatItDidNotTake(t *testing.T) {
	restore := func(*Service, Init) error { return nil }
	cases := []struct {
		name  string
		cb    Callbacks
		state string // the old instance's saved bytes
		want  []string
	}{
		{"no callbacks", Callbacks{}, "data", []string{msg.NotTakenState, msg.NotTakenFDs}},
		{"init only", Callbacks{InitFresh: restore}, "data", []string{msg.NotTakenState}},
		{"restore", Callbacks{LUStateRestore: restore}, "data", nil},
		{"own live-update init", Callbacks{InitLiveUpdate: restore}, "data", nil},
		{"empty state, init only", Callbacks{InitFresh: restore}, "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ours, theirs, _ := msg.Pair()
			setChannelEnv(t, theirs)
			conn, _ := msg.NewConn(ours)
			defer conn.Close()
			f := &fakeRS{t: t, c: conn}
			done := make(chan error, 1)
			go func() {
				_, err := Startup(context.Background(), c.cb)
				done <- err
			}()
			f.recv() // hello
			fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			mem := os.NewFile(uintptr(fd), "state")
			defer mem.Close()
			mem.WriteString(c.state)
			r, w, _ := os.Pipe()
			defer r.Close()
			defer w.Close()
			f.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitLiveUpdate,
				Names: []string{"listener", "lu:state"}}, r, mem)
			m, _ := f.recv()
			if m.Kind != msg.KindInitResult || m.Err != "" || !slices.Equal(m.NotTaken, c.want) {
				t.Fatalf("init result %+v, want not taken %q", m, c.want)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestListenersAreNotInTheStoreCap: the config's listen sockets come
// with the init beside the fd store, but rs does not count them in the
// store's cap, and neither does StoreFD.
func TestListenersAreNotInTheStoreCap(t *testing.T) {
	t.Setenv("LISTEN_FDNAMES", "l0")
	ours, theirs, _ := msg.Pair()
	setChannelEnv(t, theirs)
	conn, _ := msg.NewConn(ours)
	defer conn.Close()
	f := &fakeRS{t: t, c: conn}
	done := make(chan *Service, 1)
	go func() {
		s, err := Startup(context.Background(), Callbacks{InitRestart: func(*Service, Init) error { return nil }})
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	f.recv() // hello
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	f.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: msg.InitRestart,
		Names: []string{"l0", "a"}}, r, w)
	if m, _ := f.recv(); m.Kind != msg.KindInitResult || m.Err != "" {
		t.Fatalf("init result %+v", m)
	}
	s := <-done
	if s == nil {
		t.FailNow()
	}
	for i := 1; i < msg.MaxStoredFDs; i++ { // "a" and these fill the store
		if err := s.StoreFD(fmt.Sprintf("n%d", i), r); err != nil {
			t.Fatalf("store fd %d of %d: %v", i+1, msg.MaxStoredFDs, err)
		}
		f.recv()
	}
	if err := s.StoreFD("one-too-many", r); err == nil {
		t.Error("a store past the cap was not refused")
	}
}
