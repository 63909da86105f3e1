package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"
)

// listenerFD is the name kv's listening socket has in rs's fd store.
const listenerFD = "listener"

var errInUse = errors.New("address in use")

// splitAddr reads --listen: "unix:/path" or host:port.
func splitAddr(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

// listen opens the listening socket for addr. For a unix socket a stale
// socket file (left by a crash, or by a restart that kept the path) is
// removed first, but only if nothing answers on it: never take over a
// live server's path, and never remove something that is not a socket.
func listen(addr string) (net.Listener, error) {
	network, address := splitAddr(addr)
	if address == "" {
		return nil, fmt.Errorf("listen %q: empty address", addr)
	}
	if network == "unix" {
		if err := removeStaleSocket(address); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	keepPath(ln)
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("listen unix %s: %w by a file that is not a socket", path, errInUse)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("listen unix %s: %w: a server answers there", path, errInUse)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// keepPath stops Close from unlinking a unix socket's path. The socket
// outlives this process in rs's fd store, and the next instance serves on
// it under the same name.
func keepPath(ln net.Listener) {
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
}

// socketFile returns a dup of a listener's or connection's socket as a
// file, to hand to rs (TCP and unix ones have File).
func socketFile(v any) (*os.File, error) {
	if f, ok := v.(interface{ File() (*os.File, error) }); ok {
		return f.File()
	}
	return nil, fmt.Errorf("socket of type %T has no file", v)
}

// inheritListener turns a socket from the fd store back into a listener.
// It takes ownership of f.
func inheritListener(f *os.File) (net.Listener, error) {
	defer f.Close() // FileListener made its own dup
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited listener: %w", err)
	}
	keepPath(ln)
	return ln, nil
}
