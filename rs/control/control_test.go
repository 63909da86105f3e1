package control

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestRequestDecoding(t *testing.T) {
	enc := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	cases := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"status", enc(Request{Op: OpStatus}), true},
		{"up", enc(Request{Op: OpUp, Label: "kv"}), true},
		{"up without label", enc(Request{Op: OpUp}), false},
		{"unknown op", enc(Request{Op: "reboot"}), false},
		{"garbage", []byte{0xc1}, false},
		{"truncated", enc(Request{Op: OpUp, Label: "kv"})[:5], false},
		{"empty", nil, false},
		{"huge", make([]byte, MaxRequest+1), false},
	}
	for _, c := range cases {
		_, err := DecodeRequest(c.b)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v", c.name, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v is not ErrInvalid", c.name, err)
		}
	}
}

// An integer that does not fit its field is invalid, not cut to fit:
// state 4294967297 is not state 1.
func TestRequestIntegersMustFit(t *testing.T) {
	enc := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	bad := map[string]map[string]any{
		"state 2^32+1":          {"op": OpUpdate, "label": "kv", "state": uint64(1<<32 + 1)},
		"state 2^64-1":          {"op": OpUpdate, "label": "kv", "state": uint64(1<<64 - 1)},
		"state -1":              {"op": OpUpdate, "label": "kv", "state": -1},
		"state 1.5":             {"op": OpUpdate, "label": "kv", "state": 1.5},
		"maxtime 2^63":          {"op": OpUpdate, "label": "kv", "maxtime": uint64(1 << 63)},
		"maxtime -1":            {"op": OpUpdate, "label": "kv", "maxtime": -1},
		"memory -1":             {"op": OpUp, "label": "kv", "spec": map[string]any{"memory": -1}},
		"max_restarts 2^63":     {"op": OpUp, "label": "kv", "spec": map[string]any{"max_restarts": uint64(1 << 63)}},
		"period 2^64-1":         {"op": OpUp, "label": "kv", "spec": map[string]any{"period": uint64(1<<64 - 1)}},
		"open_files float 10.5": {"op": OpUp, "label": "kv", "spec": map[string]any{"open_files": 10.5}},
	}
	for name, fields := range bad {
		r, err := DecodeRequest(enc(fields))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: decoded as %+v, %v; want ErrInvalid", name, r, err)
		}
	}
	good := enc(map[string]any{"op": OpUpdate, "label": "kv", "state": uint64(1<<32 - 1), "maxtime": int64(1<<63 - 1)})
	if r, err := DecodeRequest(good); err != nil || r.State != 1<<32-1 || r.MaxTime != 1<<63-1 {
		t.Errorf("widest values that fit: %+v, %v", r, err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	args := []string{"a"}
	bin := "/bin/kv"
	for _, r := range []Request{{Op: OpStatus}, {Op: OpUp, Label: "kv", Spec: &Patch{Binary: &bin, Args: &args}}} {
		b, _ := msgpack.Marshal(&r)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err == nil && r.Op == "" {
			t.Fatalf("accepted a request without op: %s", fmt.Sprint(r))
		}
	})
}

// serve runs a Server with h on a socket in a temporary directory.
func serve(t *testing.T, h Handler) Client {
	t.Helper()
	return serveWith(t, &Server{Handler: h})
}

// serveWith runs srv on a socket in a temporary directory.
func serveWith(t *testing.T, srv *Server) Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "rs.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ln.Close()
		<-done
		srv.Wait(5 * time.Second)
	})
	return Client{Socket: sock, Timeout: 20 * time.Second}
}

// A reply far larger than a packet gets through whole: ten thousand rows
// of 736 bytes of args each, and one row larger than a packet by itself.
func TestRepliesOfAnySize(t *testing.T) {
	arg := strings.Repeat("x", 736)
	rows := make([]Status, 10000)
	for i := range rows {
		rows[i] = Status{Label: fmt.Sprintf("s%05d", i), State: StateRunning, Args: []string{arg}}
	}
	rows[17].Args = []string{strings.Repeat("y", 3*maxPiece)}
	c := serve(t, func(req Request, _ Peer, progress func(string)) Reply {
		progress("one")
		progress(strings.Repeat("p", 2*maxPiece))
		return Reply{Services: rows}
	})
	var prog []string
	r, err := c.Do(Request{Op: OpStatus}, func(p string) { prog = append(prog, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Services) != len(rows) || r.Services[9999].Label != "s09999" || r.Services[17].Args[0] != rows[17].Args[0] {
		t.Fatalf("got %d rows", len(r.Services))
	}
	if len(prog) != 2 || prog[0] != "one" || len(prog[1]) != 2*maxPiece {
		t.Fatalf("progress: %d lines", len(prog))
	}
}

// An error crosses the wire with its code: the client's error matches the
// sentinel, and its text is the server's.
func TestErrorCodes(t *testing.T) {
	cases := []struct {
		err  error
		is   error
		text string
	}{
		{fmt.Errorf("%w %q", ErrUnknown, "kv"), ErrUnknown, `unknown service "kv"`},
		{fmt.Errorf("kv: an update is in progress: %w", ErrBusy), ErrBusy, "kv: an update is in progress: busy"},
		{Errorf(CodeRefused, "kv is already up (%s)", StateRunning), ErrRefused, "kv is already up (running)"},
		{Errorf(CodeInvalid, "period %v: too short", time.Nanosecond), ErrInvalid, "period 1ns: too short"},
		{errors.New("update kv rolled back: init failed"), ErrFailed, "update kv rolled back: init failed"},
		{ErrShutdown, ErrShutdown, "rs is shutting down"},
	}
	for _, tc := range cases {
		c := serve(t, func(Request, Peer, func(string)) Reply { return Failure(tc.err) })
		_, err := c.Do(Request{Op: OpStatus}, nil)
		if !errors.Is(err, tc.is) || err.Error() != tc.text {
			t.Errorf("%v: client got %v (is %v: %v)", tc.err, err, tc.is, errors.Is(err, tc.is))
		}
		for _, other := range []error{ErrUnknown, ErrBusy, ErrRefused, ErrInvalid, ErrFailed, ErrShutdown} {
			if other != tc.is && errors.Is(err, other) {
				t.Errorf("%v also matches %v", err, other)
			}
		}
	}
}

// A request that does not decode gets a bad-request reply, not silence.
func TestBadRequestAnswered(t *testing.T) {
	c := serve(t, func(Request, Peer, func(string)) Reply { t.Error("handler called"); return Reply{} })
	conn, err := net.Dial("unixpacket", c.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte{0xc1}); err != nil {
		t.Fatal(err)
	}
	r, err := newReplyReader(conn).next()
	if err != nil || r.Code != CodeInvalid || !strings.Contains(r.Err, "bad request") {
		t.Fatalf("reply %+v, %v", r, err)
	}
}

// The key table follows Patch; SetFlag parses each kind.
func TestPatchFlags(t *testing.T) {
	var p Patch
	for key, v := range map[string]string{
		"binary": "/bin/kv", "args": "--listen  :1 -v", "period": "250ms", "depends": "a, b,,",
		"standby": "true", "max_restarts": "-1", "memory": "256MiB", "open_files": "64",
	} {
		if err := p.SetFlag(key, v); err != nil {
			t.Fatalf("%s %q: %v", key, v, err)
		}
	}
	if *p.Binary != "/bin/kv" || strings.Join(*p.Args, "|") != "--listen|:1|-v" || *p.Period != 250*time.Millisecond ||
		strings.Join(*p.Depends, "|") != "a|b" || !*p.Standby || *p.MaxRestarts != -1 || *p.Memory != 256<<20 || *p.OpenFiles != 64 {
		t.Fatalf("patch %+v", p)
	}
	if p.Restart != nil || p.Has("restart") || !p.Has("memory") {
		t.Fatal("Has/nil disagree")
	}
	if err := p.SetFlag("period", "soon"); err == nil {
		t.Error("a bad duration was taken")
	}
	if f, ok := FieldOf("ping_timeout"); !ok || f.Flag != "ping-timeout" || f.Name != "PingTimeout" || f.Kind != KindDuration {
		t.Errorf("ping_timeout: %+v", f)
	}
	if f, _ := FieldOf("memory"); f.Kind != KindBytes {
		t.Errorf("memory is not a size: %+v", f)
	}
	// Through the wire: given fields survive, an empty list stays given.
	empty := []string{}
	p.Args = &empty
	b, _ := msgpack.Marshal(&p)
	var q Patch
	if err := msgpack.Unmarshal(b, &q); err != nil || q.Args == nil || len(*q.Args) != 0 || q.Restart != nil || *q.Memory != 256<<20 {
		t.Fatalf("after the wire: %+v, %v", q, err)
	}
}

// A group update's labels: only for update, bounded, none empty.
func TestRequestGroup(t *testing.T) {
	enc := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	many := make([]string, MaxGroup)
	for i := range many {
		many[i] = fmt.Sprintf("kv%d", i)
	}
	bad := map[string]map[string]any{
		"group on down": {"op": OpDown, "label": "kv", "group": []string{"b"}},
		"too many":      {"op": OpUpdate, "label": "kv", "group": many},
		"empty label":   {"op": OpUpdate, "label": "kv", "group": []string{"b", ""}},
	}
	for name, fields := range bad {
		if r, err := DecodeRequest(enc(fields)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: decoded as %+v, %v; want ErrInvalid", name, r, err)
		}
	}
	r, err := DecodeRequest(enc(map[string]any{"op": OpUpdate, "label": "kv", "group": many[1:]}))
	if err != nil || len(r.Group) != MaxGroup-1 {
		t.Errorf("a group of %d: %+v, %v", MaxGroup, r, err)
	}
	if d := DefaultTimeout(Request{Op: OpUpdate, MaxTime: 1<<63 - 1, Group: many}); d <= 0 {
		t.Errorf("timeout of a group with the widest maxtime: %v", d)
	}
}
