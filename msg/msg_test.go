package msg

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	cases := []Message{
		{Kind: KindInit, Version: ProtocolVersion, InitType: InitRestart, Label: "kv", Restarts: 3},
		{Kind: KindInitResult},
		{Kind: KindInitResult, Err: "bind: address in use"},
		{Kind: KindPing, Seq: 1 << 40},
		{Kind: KindPong, Seq: 7},
		{Kind: KindLUPrepare, State: 2, MaxTime: int64(time.Second)},
		{Kind: KindLUCancel},
		{Kind: KindStop},
	}
	for _, m := range cases {
		t.Run(m.Kind.String(), func(t *testing.T) {
			b, err := Encode(&m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != m.Kind || got.Seq != m.Seq || got.Err != m.Err || got.Label != m.Label ||
				got.InitType != m.InitType || got.State != m.State || got.MaxTime != m.MaxTime {
				t.Fatalf("got %+v, want %+v", got, m)
			}
		})
	}
}

// The ping and pong shortcut and msgpack's reflection agree both ways.
func TestHeartbeatShortcut(t *testing.T) {
	for _, k := range []Kind{KindPing, KindPong} {
		for _, seq := range []uint64{1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
			m := Message{Kind: k, Seq: seq}
			fast, err := Encode(&m)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := decodeGeneral(fast, 0); err != nil || !reflect.DeepEqual(got, m) {
				t.Errorf("%+v: shortcut's bytes % x read by msgpack as %+v, %v", m, fast, got, err)
			}
			slow, err := msgpack.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := decodeHeartbeat(slow); !ok || !reflect.DeepEqual(got, m) {
				t.Errorf("%+v: msgpack's bytes % x read by the shortcut as %+v, %v", m, slow, got, ok)
			}
		}
	}
	// Not a heartbeat alone: the general path decides.
	for _, m := range []Message{
		{Kind: KindPing, Seq: 1, Label: "x"},
		{Kind: KindPong},
		{Kind: KindStop, Seq: 3},
	} {
		if _, ok := m.heartbeat(); ok {
			t.Errorf("%+v taken for a heartbeat", m)
		}
	}
	if _, err := Decode(appendHeartbeat(nil, KindPong, 0), 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("pong with seq 0: %v, want ErrMalformed", err)
	}
	if _, err := Decode(appendHeartbeat(nil, KindPong, 5), 1); !errors.Is(err, ErrFDMismatch) {
		t.Errorf("pong with an fd: %v, want ErrFDMismatch", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	enc := func(v any) []byte {
		b, err := marshalAny(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		b    []byte
		nfds int
		want error
	}{
		{"empty", nil, 0, ErrMalformed},
		{"not a map", []byte{0x01}, 0, ErrMalformed},
		{"truncated", enc(map[string]any{"k": 3, "q": 9})[:4], 0, ErrMalformed},
		{"unknown kind", enc(map[string]any{"k": 99}), 0, ErrUnknownKind},
		{"kind zero", enc(map[string]any{"k": 0}), 0, ErrUnknownKind},
		{"unknown field", enc(map[string]any{"k": 3, "q": 1, "zz": 1}), 0, ErrMalformed},
		{"ping without seq", enc(map[string]any{"k": 3}), 0, ErrMalformed},
		{"init without version", enc(map[string]any{"k": 1, "t": 1}), 0, ErrMalformed},
		{"init bad type", enc(map[string]any{"k": 1, "t": 9, "v": 1}), 0, ErrMalformed},
		{"wrong field type", enc(map[string]any{"k": "ping"}), 0, ErrMalformed},
		{"fds without names", enc(map[string]any{"k": 2}), 1, ErrFDMismatch},
		{"names on a pong", enc(map[string]any{"k": 4, "q": 1, "n": []string{"x"}}), 1, ErrFDMismatch},
		{"fd-store two names", enc(map[string]any{"k": 9, "n": []string{"a", "b"}}), 2, ErrMalformed},
		{"trailing bytes", append(enc(map[string]any{"k": 8}), 0xc0), 0, ErrMalformed},
		{"oversized", make([]byte, MaxPacket+1), 0, ErrOversized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.b, c.nfds)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
}

func newPair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewConn(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := NewConn(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func TestConnPassesFDs(t *testing.T) {
	a, b := newPair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := a.Send(&Message{Kind: KindFDStore, Names: []string{"pipe"}}, w); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, files, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindFDStore || len(files) != 1 || m.Names[0] != "pipe" {
		t.Fatalf("got %+v with %d files", m, len(files))
	}
	flags, err := unix.FcntlInt(files[0].Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd not close-on-exec: flags %d, %v", flags, err)
	}
	if _, err := files[0].Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	files[0].Close()
	buf := make([]byte, 1)
	if _, err := r.Read(buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read through passed fd: %q %v", buf, err)
	}
}

func TestConnOversizedAndGarbage(t *testing.T) {
	a, b := newPair(t)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := a.SendRaw(make([]byte, MaxPacket+10), nil, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Recv(); !errors.Is(err, ErrOversized) {
		t.Fatalf("oversized: %v", err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	// Garbage with an fd: the fd must be closed, not leaked.
	if err := a.SendRaw([]byte{0xde, 0xad}, []*os.File{w}, false); err != nil {
		t.Fatal(err)
	}
	if _, files, err := b.Recv(); !errors.Is(err, ErrMalformed) || files != nil {
		t.Fatalf("garbage: %v, %d files", err, len(files))
	}
	if err := a.Send(&Message{Kind: KindPing, Seq: 5}); err != nil {
		t.Fatal(err)
	}
	if m, _, err := b.Recv(); err != nil || m.Seq != 5 {
		t.Fatalf("after garbage: %+v %v", m, err)
	}
	a.Close()
	if _, _, err := b.Recv(); err != io.EOF {
		t.Fatalf("after close: %v, want EOF", err)
	}
}

func TestTrySendWouldBlock(t *testing.T) {
	a, _ := newPair(t)
	var err error
	for i := 0; i < 100000; i++ {
		if err = a.TrySend(&Message{Kind: KindPing, Seq: uint64(i + 1)}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("TrySend into a full queue: %v", err)
	}
}

func BenchmarkPingPong(b *testing.B) {
	x, y, _ := Pair()
	a, _ := NewConn(x)
	c, _ := NewConn(y)
	defer a.Close()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, _, err := c.Recv()
			if err != nil {
				return
			}
			c.Send(&Message{Kind: KindPong, Seq: m.Seq})
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := a.Send(&Message{Kind: KindPing, Seq: uint64(i + 1)}); err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	a.Close()
	<-done
}

// Sending a dup of a listener must leave the listener non-blocking: a
// blocking listener cannot be woken from Accept by Close (kv would hang
// on stop).
func TestSendKeepsNonblocking(t *testing.T) {
	a, b := newPair(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.Send(&Message{Kind: KindFDStore, Names: []string{"listener"}}, f); err != nil {
		t.Fatal(err)
	}
	_, files, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	CloseFiles(files)
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var nonblock bool
	rc.Control(func(fd uintptr) {
		fl, _ := unix.FcntlInt(fd, unix.F_GETFL, 0)
		nonblock = fl&unix.O_NONBLOCK != 0
	})
	if !nonblock {
		t.Fatal("the listener turned blocking after its dup was sent")
	}
}

// Lengths that the packet cannot hold are refused before the msgpack
// decoder could allocate for them.
func TestScanRefusesImpossibleLengths(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, maxDepth+2)
	deep = append(deep, 0x01)
	cases := map[string][]byte{
		"str32 of 808 MB":     {0x81, 0xdb, 0x30, 0x30, 0x30, 0x30},
		"array32 of 4G":       {0x81, 0xa1, 'n', 0xdd, 0xff, 0xff, 0xff, 0xff},
		"map16 of 56k pairs":  {0xde, 0xdd, 0x02, 0x00},
		"bin32 past the end":  {0xc6, 0x00, 0x00, 0x01, 0x00, 0x01},
		"ext past the end":    {0xc7, 0x05, 0x01, 0x00},
		"nested too deep":     deep,
		"never-used code":     {0xc1},
		"truncated fixstr":    {0xa5, 'a', 'b'},
		"two values, not one": {0x01, 0x02},
	}
	for name, b := range cases {
		if err := Scan(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Scan = %v", name, err)
		}
		if _, err := Decode(b, 0); err == nil {
			t.Errorf("%s: Decode accepted it", name)
		}
	}
	for _, m := range []Message{{Kind: KindInit, Version: 1, InitType: InitFresh, Label: "kv", Names: []string{"a"}}, {Kind: KindPong, Seq: 1 << 62}} {
		b, err := marshalAny(&m)
		if err != nil {
			t.Fatal(err)
		}
		if err := Scan(b); err != nil {
			t.Errorf("Scan refused a valid %s: %v", m.Kind, err)
		}
	}
}

// An integer that does not fit its field is malformed: msgpack would cut
// it to the field's width and say nothing.
func TestDecodeRejectsIntegersThatDoNotFit(t *testing.T) {
	cases := map[string]map[string]any{
		"hello version 65537":   {"k": KindHello, "v": 65537},
		"hello version -1":      {"k": KindHello, "v": -1},
		"hello version 1.0":     {"k": KindHello, "v": 1.0},
		"pong kind 260":         {"k": 260, "q": 1},
		"pong kind -252":        {"k": -252, "q": 1},
		"pong seq -1":           {"k": KindPong, "q": -1},
		"init type 259":         {"k": KindInit, "v": 1, "t": 259},
		"init restarts 2^32+1":  {"k": KindInit, "v": 1, "t": 1, "r": uint64(1<<32 + 1)},
		"lu-prepare state 2^32": {"k": KindLUPrepare, "s": uint64(1 << 32), "m": 1},
		"lu-prepare maxtime":    {"k": KindLUPrepare, "s": 1, "m": uint64(1 << 63)},
	}
	for name, fields := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := msgpack.Marshal(fields)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(b, 0)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decoded as %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
	// What fits still decodes, at each field's widest.
	for _, fields := range []map[string]any{
		{"k": KindHello, "v": 65535},
		{"k": uint64(KindPong), "q": uint64(1<<64 - 1)},
		{"k": KindInit, "v": 1, "t": 3, "r": uint64(1<<32 - 1)},
		{"k": KindLUPrepare, "s": uint64(1<<32 - 1), "m": int64(1<<63 - 1)},
	} {
		b, _ := msgpack.Marshal(fields)
		if _, err := Decode(b, 0); err != nil {
			t.Errorf("%v: %v", fields, err)
		}
	}
}

// Only an init-result lists what it did not take, and only known words.
func TestNotTaken(t *testing.T) {
	m := Message{Kind: KindInitResult, NotTaken: []string{NotTakenState, NotTakenFDs}}
	b, err := Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Decode(b, 0); err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []Message{
		{Kind: KindHello, Version: 1, NotTaken: []string{NotTakenState}},
		{Kind: KindInitResult, NotTaken: []string{"everything"}},
		{Kind: KindInitResult, NotTaken: []string{NotTakenState, NotTakenFDs, NotTakenState}},
	} {
		b, _ := msgpack.Marshal(&bad)
		if _, err := Decode(b, 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v: %v, want ErrMalformed", bad, err)
		}
	}
}

// Hold goes only in a live update's init and in an init-result; a
// decoder that predates it (a strict one, as every sef's) refuses it.
func TestHold(t *testing.T) {
	for _, m := range []Message{
		{Kind: KindInit, Version: 1, InitType: InitLiveUpdate, Hold: true},
		{Kind: KindInitResult, Hold: true},
	} {
		b, err := Encode(&m)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Decode(b, 0); err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
	}
	for _, bad := range []Message{
		{Kind: KindInit, Version: 1, InitType: InitRestart, Hold: true},
		{Kind: KindPing, Seq: 1, Hold: true},
		{Kind: KindLUCommit, Hold: true},
	} {
		b, _ := msgpack.Marshal(&bad)
		if _, err := Decode(b, 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v: %v, want ErrMalformed", bad, err)
		}
	}
	type before struct { // Message as a sef without Hold decodes it
		Kind     Kind     `msgpack:"k"`
		Version  uint16   `msgpack:"v,omitempty"`
		InitType InitType `msgpack:"t,omitempty"`
	}
	b, _ := Encode(&Message{Kind: KindInit, Version: 1, InitType: InitLiveUpdate, Hold: true})
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(&before{}); err == nil {
		t.Fatal("a decoder without Hold read a held init")
	}
}
