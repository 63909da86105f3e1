package resp

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// echoServer answers each command with the array of its arguments, except
// ERR, which gets an error reply. It reads with ParseValue, which also
// exercises the parser on what the client writes.
func echoServer(t *testing.T, network, addr string) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for {
			v, err := ParseValue(br)
			if err != nil {
				return
			}
			reply := v
			if len(v.Array) > 0 && v.Array[0].Str == "ERR" {
				reply = Error("ERR asked for it")
			}
			if _, err := conn.Write(AppendValue(nil, reply)); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, network, addr string) *Client {
	t.Helper()
	c, err := Dial(network, addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientDo(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, nw := range []struct{ network, addr string }{{"tcp", "127.0.0.1:0"}, {"unix", sock}} {
		t.Run(nw.network, func(t *testing.T) {
			c := dial(t, nw.network, echoServer(t, nw.network, nw.addr))
			got, err := c.Do("SET", "key", "a\r\nb")
			if err != nil {
				t.Fatal(err)
			}
			want := Array(Bulk("SET"), Bulk("key"), Bulk("a\r\nb"))
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Do = %v, want %v", got, want)
			}
			// An error reply is a value, and the connection stays usable.
			got, err = c.Do("ERR")
			if err != nil || !got.IsError() || got.Err != "ERR asked for it" {
				t.Fatalf("Do(ERR) = %v, %v", got, err)
			}
			if got, err := c.Do("PING"); err != nil || !reflect.DeepEqual(got, Array(Bulk("PING"))) {
				t.Fatalf("Do(PING) after an error = %v, %v", got, err)
			}
		})
	}
}

func TestClientPipeline(t *testing.T) {
	c := dial(t, "tcp", echoServer(t, "tcp", "127.0.0.1:0"))
	const n = 1000 // more than fits in one write buffer
	for i := range n {
		if err := c.Send("X", string(rune('a'+i%26))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteRaw(AppendCommand(nil, "LAST")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		v, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if want := string(rune('a' + i%26)); len(v.Array) != 2 || v.Array[1].Str != want {
			t.Fatalf("reply %d = %v, want [X %s]", i, v, want)
		}
	}
	if v, err := c.Read(); err != nil || !reflect.DeepEqual(v, Array(Bulk("LAST"))) {
		t.Fatalf("last reply = %v, %v", v, err)
	}
}

func TestClientSendEmpty(t *testing.T) {
	c := dial(t, "tcp", echoServer(t, "tcp", "127.0.0.1:0"))
	if _, err := c.Do(); err == nil {
		t.Fatal("Do() with no command succeeded")
	}
}

func TestClientDeadline(t *testing.T) {
	// A server that accepts and never answers: the deadline ends the wait.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := dial(t, "tcp", ln.Addr().String())
	if err := c.SetDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Do("PING")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Do past the deadline: %v, want a deadline error", err)
	}
}

func TestSplitAddr(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"127.0.0.1:7070", "tcp", "127.0.0.1:7070"},
		{"unix:/run/kv.sock", "unix", "/run/kv.sock"},
		{"[::1]:1", "tcp", "[::1]:1"},
	}
	for _, tt := range tests {
		n, a := SplitAddr(tt.in)
		if n != tt.network || a != tt.addr {
			t.Errorf("SplitAddr(%q) = %q, %q; want %q, %q", tt.in, n, a, tt.network, tt.addr)
		}
	}
}

func TestDialFails(t *testing.T) {
	if _, err := DialAddr("unix:"+filepath.Join(t.TempDir(), "none"), time.Second); err == nil {
		t.Fatal("dial to a missing socket succeeded")
	}
}
