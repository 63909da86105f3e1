package main

import (
	"bytes"
	"net"
	"os"
	"reflect"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/sef/handoff"
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
	// The connection's goroutine parks with what it holds.
	reached := make(chan struct{}, 1)
	g := handoff.New(handoff.Checkpoints, func() { reached <- struct{}{} })
	defer g.Close()
	hc := g.Adopt(peer, nil)
	g.Begin()
	go hc.Park(in[used:], parkState(&p))
	select {
	case <-reached:
	case <-time.After(wait):
		t.Fatal("the connection did not park")
	}
	srv := &server{eng: newEngine(false, false, &meta{}), group: g}
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
	g := handoff.New(handoff.Checkpoints, nil)
	g.Begin()
	srv := &server{eng: newEngine(false, false, &meta{}), group: g}
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
