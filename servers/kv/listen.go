package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// listenerFD is the name under which kv takes a listening socket that rs
// holds for it beside --listen: one of the config's `listen` sockets
// (listen_names = ["listener"]), or the fd store entry kv versions before
// sef's Listen used.
const listenerFD = "listener"

// splitAddr reads --listen: "unix:/path" or host:port.
func splitAddr(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

// lister is the part of *sef.Service that opens kv's listener.
type lister interface {
	Listen(network, addr string) (net.Listener, error)
}

// listen opens --listen's socket through sef, which takes it back from
// rs's fd store on a restart or an update.
func listen(s lister, addr string) (net.Listener, error) {
	network, address := splitAddr(addr)
	if address == "" {
		return nil, fmt.Errorf("listen %q: empty address", addr)
	}
	return s.Listen(network, address)
}

// inheritListener turns a socket rs handed over by name back into a
// listener. It takes ownership of f.
func inheritListener(f *os.File) (net.Listener, error) {
	defer f.Close() // FileListener made its own dup
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited listener: %w", err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // it lives on in rs
	}
	return ln, nil
}
