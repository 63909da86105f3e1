package msg

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// muxRun starts m.Run, handing every delivery to the returned channel
// (a copy: the batch is reused). Run ends with the test.
func muxRun(t *testing.T) (*Mux, <-chan Delivery) {
	t.Helper()
	m, err := NewMux()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan Delivery, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(func(batch []Delivery) {
			for _, d := range batch {
				out <- d
			}
		})
	}()
	t.Cleanup(func() {
		m.Close()
		// Drain what is still delivered: a test that stopped reading (a
		// flood) would leave Run blocked in its callback on a full out.
		timeout := time.After(10 * time.Second)
		for {
			select {
			case <-done:
				return
			case <-out:
			case <-timeout:
				t.Error("Mux.Run did not return after Close")
				return
			}
		}
	})
	return m, out
}

func next(t *testing.T, out <-chan Delivery) Delivery {
	t.Helper()
	select {
	case d := <-out:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return Delivery{}
	}
}

func TestMuxDeliversWithKeys(t *testing.T) {
	m, out := muxRun(t)
	const n = 50
	peers := make([]*Conn, n)
	for i := range n {
		mine, theirs := newPair(t)
		if err := m.Add(mine, i); err != nil {
			t.Fatal(err)
		}
		peers[i] = theirs
	}
	for i, p := range peers {
		if err := p.Send(&Message{Kind: KindPong, Seq: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[int]bool{}
	for range n {
		d := next(t, out)
		i := d.Key.(int)
		if d.Err != nil || d.Msg.Kind != KindPong || d.Msg.Seq != uint64(i+1) || d.At.IsZero() {
			t.Fatalf("delivery for %d: %+v", i, d)
		}
		if seen[i] {
			t.Fatalf("key %d delivered twice", i)
		}
		seen[i] = true
	}
}

func TestMuxPassesFDs(t *testing.T) {
	m, out := muxRun(t)
	mine, theirs := newPair(t)
	if err := m.Add(mine, "a"); err != nil {
		t.Fatal(err)
	}
	r, w := newPipe(t)
	if err := theirs.Send(&Message{Kind: KindFDStore, Names: []string{"pipe"}}, w); err != nil {
		t.Fatal(err)
	}
	d := next(t, out)
	if d.Err != nil || len(d.Files) != 1 {
		t.Fatalf("delivery %+v", d)
	}
	d.Files[0].Write([]byte("x"))
	d.Files[0].Close()
	b := make([]byte, 1)
	if _, err := r.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("read through the passed fd: %q, %v", b, err)
	}
}

// A peer that closes gives io.EOF once, as the last delivery; a malformed
// packet ends its channel the same way. Other channels go on.
func TestMuxEndsChannelAtError(t *testing.T) {
	m, out := muxRun(t)
	eofMine, eofPeer := newPair(t)
	badMine, badPeer := newPair(t)
	okMine, okPeer := newPair(t)
	for key, c := range map[string]*Conn{"eof": eofMine, "bad": badMine, "ok": okMine} {
		if err := m.Add(c, key); err != nil {
			t.Fatal(err)
		}
	}
	eofPeer.Close()
	badPeer.SendRaw([]byte{0xc1}, nil, false)
	badPeer.Send(&Message{Kind: KindPong, Seq: 1}) // after the fault: never delivered
	got := map[string]error{}
	for range 2 {
		d := next(t, out)
		got[d.Key.(string)] = d.Err
	}
	if !errors.Is(got["eof"], io.EOF) || !errors.Is(got["bad"], ErrMalformed) {
		t.Fatalf("ends: %v", got)
	}
	okPeer.Send(&Message{Kind: KindPong, Seq: 7})
	if d := next(t, out); d.Key != "ok" || d.Msg.Seq != 7 {
		t.Fatalf("after the ends: %+v", d)
	}
	select {
	case d := <-out:
		t.Fatalf("delivery after a channel's end: %+v", d)
	default:
	}
}

// A channel closed by its owner leaves the set silently.
func TestMuxCloseRemoves(t *testing.T) {
	m, out := muxRun(t)
	mine, theirs := newPair(t)
	if err := m.Add(mine, "x"); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(mine, "again"); err == nil {
		t.Fatal("a channel added twice")
	}
	mine.Close()
	theirs.Send(&Message{Kind: KindPong, Seq: 1})
	other, otherPeer := newPair(t)
	m.Add(other, "y")
	otherPeer.Send(&Message{Kind: KindPong, Seq: 2})
	if d := next(t, out); d.Key != "y" {
		t.Fatalf("delivery %+v, want only y's", d)
	}
	m.mu.Lock()
	left := len(m.conns)
	m.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d channels in the set, want 1", left)
	}
	if _, _, err := mine.Recv(); err == nil {
		t.Fatal("Recv on a closed channel succeeded")
	}
}

// A channel that floods gets one packet per pass, like the others: a
// pong from a quiet channel is not stuck behind the flood.
func TestMuxFloodDoesNotStarve(t *testing.T) {
	m, out := muxRun(t)
	floodMine, flood := newPair(t)
	quietMine, quiet := newPair(t)
	m.Add(floodMine, "flood")
	m.Add(quietMine, "quiet")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			flood.TrySend(&Message{Kind: KindPong, Seq: 1})
		}
	}()
	quiet.Send(&Message{Kind: KindPong, Seq: 9})
	for i := 0; ; i++ {
		if d := next(t, out); d.Key == "quiet" {
			break
		}
		if i > 10000 {
			t.Fatal("quiet channel's packet not delivered among 10000 of the flood")
		}
	}
}

// With timestamps on, a delivery's At is when the peer sent the packet,
// not when Run got to it.
func TestMuxTimestamps(t *testing.T) {
	m, out := muxRun(t)
	mine, theirs := newPair(t)
	if err := mine.EnableTimestamps(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := theirs.Send(&Message{Kind: KindPong, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	// Added only now, so that it is read after `after`: a read time
	// would fall outside [before, after], the send's stamp inside.
	if err := m.Add(mine, "x"); err != nil {
		t.Fatal(err)
	}
	d := next(t, out)
	if d.Err != nil || d.At.Before(before) || d.At.After(after) {
		t.Fatalf("At %v, want within [%v, %v] (sent), not when read", d.At, before, after)
	}
}

// The fds of a malformed packet are the receiver's to close, with the
// error: the Mux's goroutine never closes a peer's fd (a close can block).
func TestMuxHandsOverFDsOfBadPackets(t *testing.T) {
	m, out := muxRun(t)
	mine, theirs := newPair(t)
	if err := m.Add(mine, "bad"); err != nil {
		t.Fatal(err)
	}
	_, w := newPipe(t)
	// A pong names no fds: these two do not match it.
	b, _ := Encode(&Message{Kind: KindPong, Seq: 1})
	if err := theirs.SendRaw(b, []*os.File{w, w}, false); err != nil {
		t.Fatal(err)
	}
	d := next(t, out)
	if !errors.Is(d.Err, ErrFDMismatch) || len(d.Files) != 2 {
		t.Fatalf("delivery %+v", d)
	}
	if _, err := d.Files[0].Write([]byte("x")); err != nil {
		t.Fatalf("the handed-over fd was closed: %v", err)
	}
	CloseFiles(d.Files)
}

// newPipe is a pipe closed when the test ends.
func newPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// Pause: Run calls paused after its last delivery and reads nothing more
// until Resume; what was sent meanwhile waits in the channel.
func TestMuxPause(t *testing.T) {
	m, out := muxRun(t)
	mine, theirs := newPair(t)
	if err := m.Add(mine, "c"); err != nil {
		t.Fatal(err)
	}
	if err := theirs.Send(&Message{Kind: KindPong, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if d := next(t, out); d.Msg.Seq != 1 {
		t.Fatalf("delivery %+v", d)
	}
	paused := make(chan struct{})
	m.Pause(func() { close(paused) })
	select {
	case <-paused:
	case <-time.After(10 * time.Second):
		t.Fatal("Pause: paused not called within 10s")
	}
	if err := theirs.Send(&Message{Kind: KindPong, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-out:
		t.Fatalf("delivered while paused: %+v", d)
	default:
	}
	m.Resume()
	if d := next(t, out); d.Msg.Seq != 2 {
		t.Fatalf("after Resume: %+v", d)
	}
	// A Resume right after a Pause never leaves Run paused, whether Run
	// came to the Pause before it (then paused ran) or not.
	m.Pause(func() {})
	m.Resume()
	if err := theirs.Send(&Message{Kind: KindPong, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if d := next(t, out); d.Msg.Seq != 3 {
		t.Fatalf("after a Pause called off: %+v", d)
	}
}
