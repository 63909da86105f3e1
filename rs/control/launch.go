package control

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The settings of what a process gets at its exec, as spelled in the
// config and on the command line; checked here so that `service up`
// refuses them before anything is sent.

// ParseSignal reads a signal name: "SIGINT" or "INT", any case. Numbers
// are refused: their meaning differs between architectures.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if n != "" && !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	sig := unix.SignalNum(n)
	if sig == 0 {
		if _, err := strconv.Atoi(strings.TrimSpace(name)); err == nil {
			return 0, fmt.Errorf("signal %q: give its name, such as SIGINT, not a number", name)
		}
		return 0, fmt.Errorf("signal %q: unknown (want a name such as SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1)", name)
	}
	return sig, nil
}

// ParseUmask reads an octal umask: "0027", "027", "22".
func ParseUmask(s string) (int, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 || s == "" {
		return 0, fmt.Errorf("umask %q: want an octal string from 0000 to 0777, e.g. \"0027\"", s)
	}
	return int(v), nil
}

// ListenAddr is one parsed `listen` entry.
type ListenAddr struct {
	Net  string         // "tcp" or "unix"
	Addr netip.AddrPort // tcp
	Path string         // unix: a path, or "@name" for an abstract socket
}

func (a ListenAddr) String() string {
	if a.Net == "tcp" {
		return "tcp:" + a.Addr.String()
	}
	return "unix:" + a.Path
}

// ParseListen reads "tcp:HOST:PORT" (HOST an IP address, IPv6 in
// brackets, or localhost; PORT 0 lets the kernel choose) or
// "unix:/absolute/path" or "unix:@abstract-name".
func ParseListen(s string) (ListenAddr, error) {
	network, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && network == "tcp":
		host, port, ok := strings.Cut(rest, ":")
		if strings.HasPrefix(rest, "[") {
			i := strings.Index(rest, "]:")
			ok = i > 0
			if ok {
				host, port = rest[1:i], rest[i+2:]
			}
		}
		if !ok {
			break
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		ip, err1 := netip.ParseAddr(host)
		p, err2 := strconv.ParseUint(port, 10, 16)
		if err1 != nil || err2 != nil || ip.Zone() != "" {
			return ListenAddr{}, fmt.Errorf("listen %q: want tcp:HOST:PORT with HOST an IP address or localhost", s)
		}
		return ListenAddr{Net: "tcp", Addr: netip.AddrPortFrom(ip, uint16(p))}, nil
	case ok && network == "unix":
		abstract := strings.HasPrefix(rest, "@")
		switch {
		case !abstract && !strings.HasPrefix(rest, "/"):
			return ListenAddr{}, fmt.Errorf("listen %q: a unix socket's path must be absolute", s)
		case len(rest) > 107 || rest == "@" || strings.ContainsRune(rest, 0):
			return ListenAddr{}, fmt.Errorf("listen %q: not a usable unix socket address (at most 107 bytes)", s)
		}
		return ListenAddr{Net: "unix", Path: rest}, nil
	}
	return ListenAddr{}, fmt.Errorf("listen %q: want tcp:HOST:PORT or unix:PATH", s)
}

// CheckListenName checks a LISTEN_FDNAMES name as sd_listen_fds(3)
// does: 1 to 255 printable ASCII characters, no ':'.
func CheckListenName(n string) error {
	if n == "" || len(n) > 255 {
		return fmt.Errorf("listen name %q: want 1 to 255 characters", n)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("listen name %q: printable ASCII only, and no ':'", n)
		}
	}
	return nil
}

// CheckEnvKey checks a variable's name: not empty, no '=' or NUL.
func CheckEnvKey(k string) error {
	if k == "" || strings.ContainsAny(k, "=\x00") {
		return fmt.Errorf("env %q: a variable's name must be non-empty, without '=' or NUL", k)
	}
	return nil
}

// MaxListen is the most sockets one service may have rs hold.
const MaxListen = 32

func checkLaunch(key string, v any) error {
	switch key {
	case "stop_signal":
		_, err := ParseSignal(v.(string))
		return err
	case "umask":
		_, err := ParseUmask(v.(string))
		return err
	case "listen":
		l := v.([]string)
		if len(l) > MaxListen {
			return fmt.Errorf("listen: %d sockets, more than the %d rs holds for a service", len(l), MaxListen)
		}
		for _, a := range l {
			if _, err := ParseListen(a); err != nil {
				return err
			}
		}
	case "listen_names":
		for _, n := range v.([]string) {
			if err := CheckListenName(n); err != nil {
				return err
			}
		}
	case "env":
		for k, val := range v.(map[string]string) {
			if err := CheckEnvKey(k); err != nil {
				return err
			}
			if strings.ContainsRune(val, 0) {
				return fmt.Errorf("env %s: a value cannot hold NUL", k)
			}
		}
	case "user", "group":
		if s := v.(string); s == "" || strings.ContainsAny(s, ":\x00\n") {
			return fmt.Errorf("%s %q: want a name or a number", key, s)
		}
	}
	return nil
}

// MaxHookArgs is the most words a hook's argv may have.
const MaxHookArgs = 256

// checkHook checks a hook's argv (on_failure, on_exit): empty (no hook),
// or an absolute path of the program and its arguments, none holding NUL.
func checkHook(key string, v any) error {
	if key != "on_failure" && key != "on_exit" {
		return nil
	}
	argv := v.([]string)
	if len(argv) == 0 {
		return nil
	}
	if len(argv) > MaxHookArgs {
		return fmt.Errorf("%s: %d words, more than %d", key, len(argv), MaxHookArgs)
	}
	if !strings.HasPrefix(argv[0], "/") {
		return fmt.Errorf("%s %q: the hook's program must be an absolute path", key, argv[0])
	}
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("%s: an argument cannot hold NUL", key)
		}
	}
	return nil
}
