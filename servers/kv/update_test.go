package main

import (
	"bytes"
	"net"
	"os"
	"reflect"
	"strconv"
	"syscall"
	"testing"
)

// stateBuffer is a StateWriter stand-in: bytes plus named fds.
type stateBuffer struct {
	bytes.Buffer
	fds map[string]*os.File
}

func (b *stateBuffer) AddConn(name string, c syscall.Conn) error {
	f, err := c.(interface{ File() (*os.File, error) }).File() // a dup, as sef makes
	if err != nil {
		return err
	}
	b.fds[name] = f
	return nil
}

// A connection handed over in the middle of a request goes on with that
// request in the new version: the map, the unparsed bytes and the
// parser's half-read array all survive the state format.
func TestStateCarriesHalfReadRequest(t *testing.T) {
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
	defer peer.Close()

	var p parser
	in := []byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel")
	reqs, used, err := p.parse(in, maxBatch)
	if err != nil || len(reqs) != 0 {
		t.Fatalf("parse: %v %v", reqs, err)
	}
	h := &handoff{parked: map[net.Conn]*parkedConn{peer: {c: peer, buf: in[used:], p: p}}, acceptor: true}
	srv := &server{eng: newEngine(false, false, &meta{}), handoff: h}
	srv.eng.data.set("a", "1")
	srv.eng.data.set("empty", "")

	st := &stateBuffer{fds: map[string]*os.File{}}
	if err := srv.saveState(st); err != nil {
		t.Fatal(err)
	}
	data, conns, err := loadState(&st.Buffer, st.fds)
	if err != nil {
		t.Fatal(err)
	}
	defer conns[0].c.Close()
	if !reflect.DeepEqual(data.shards, srv.eng.data.shards) {
		t.Fatalf("store %v, want %v", data.shards, srv.eng.data.shards)
	}
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	rc := conns[0]
	rest := append(rc.buf, "lo\r\n"...)
	reqs, _, err = rc.p.parse(rest, maxBatch)
	if err != nil || !reflect.DeepEqual(reqs, [][]string{{"SET", "k", "hello"}}) {
		t.Fatalf("the half-read request came out as %q (%v)", reqs, err)
	}
	// The restored connection is the same socket.
	if _, err := rc.c.Write([]byte("+OK\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := client.Read(buf); err != nil || string(buf) != "+OK\r\n" {
		t.Fatalf("client read %q %v", buf, err)
	}
}

func TestLoadStateRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "nonsense", stateMagic + "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"} {
		if _, _, err := loadState(bytes.NewReader([]byte(in)), map[string]*os.File{}); err == nil {
			t.Errorf("loadState(%q) accepted it", in)
		}
	}
}

// BenchmarkStateRoundTrip: save and load a map of 100k keys, the part of
// a live update's pause that grows with the data.
func BenchmarkStateRoundTrip(b *testing.B) {
	srv := &server{eng: newEngine(false, false, &meta{}), handoff: &handoff{parked: map[net.Conn]*parkedConn{}}}
	for i := 0; i < 100000; i++ {
		srv.eng.data.set("key:"+strconv.Itoa(i), "value:"+strconv.Itoa(i))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st := &stateBuffer{fds: map[string]*os.File{}}
		if err := srv.saveState(st); err != nil {
			b.Fatal(err)
		}
		if _, _, err := loadState(&st.Buffer, st.fds); err != nil {
			b.Fatal(err)
		}
	}
}
