package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/sef"
)

// runRole is a test service, run by rs as `roles -role NAME [args]`.
func runRole(role string, args []string) int {
	switch role {
	case "exit-now": // dies before any handshake
		return 1
	case "exit-after-init": // runs, then dies at once
		if _, err := sef.Startup(context.Background(), sef.Callbacks{}); err != nil {
			return 1
		}
		return 4
	case "sleeper": // a plain process, not a service
		signal.Ignore(syscall.SIGTERM)
		for {
			time.Sleep(time.Hour) // block forever, without tripping deadlock detection
		}
	case "fail-init":
		_, err := sef.Startup(context.Background(), sef.Callbacks{InitFresh: func(*sef.Service, sef.Init) error {
			return errors.New("no database configured")
		}})
		fmt.Fprintln(os.Stderr, err)
		return 1
	case "hang-init":
		sef.Startup(context.Background(), sef.Callbacks{InitFresh: func(*sef.Service, sef.Init) error {
			for {
				time.Sleep(time.Hour)
			}
		}})
		return 1
	case "stubborn": // ignores stop and SIGTERM
		s, err := sef.Startup(context.Background(), sef.Callbacks{Signal: func(*sef.Service, os.Signal) {}})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "forker": // leaves a child in its group, writes its pid to args[0]
		self, _ := os.Executable()
		child := exec.Command(self, "-role", "sleeper")
		if err := child.Start(); err != nil {
			return 1
		}
		if err := os.WriteFile(args[0], []byte(fmt.Sprint(child.Process.Pid)), 0o644); err != nil {
			return 1
		}
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "flood": // after init, floods rs with valid fd-store packets
		c := rawInit()
		r, w, _ := os.Pipe()
		defer w.Close()
		for {
			if err := c.Send(&msg.Message{Kind: msg.KindFDStore, Names: []string{"pipe"}}, r); err != nil {
				return 1
			}
		}
	case "fdpusher": // after init, pushes fds with a packet that names none
		c := rawInit()
		r, w, _ := os.Pipe()
		b, _ := msg.Encode(&msg.Message{Kind: msg.KindPong, Seq: 1})
		c.SendRaw(b, []*os.File{r, w}, false)
		for {
			time.Sleep(time.Hour)
		}
	case "cpuhog": // a service whose main loop burns CPU
		if _, err := sef.Startup(context.Background(), sef.Callbacks{Ping: nil}); err != nil {
			return 1
		}
		for {
			spin++
		}
	case "memhog": // a service that allocates without end
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		go func() {
			var hoard [][]byte
			for {
				b := make([]byte, 8<<20)
				for i := range b {
					b[i] = 1
				}
				hoard = append(hoard, b)
			}
		}()
		return serveForever(s)
	case "fdhog": // opens files until it cannot, then gives up
		if _, err := sef.Startup(context.Background(), sef.Callbacks{}); err != nil {
			return 1
		}
		var files []*os.File
		for {
			f, err := os.Open(os.DevNull)
			if err != nil {
				fmt.Fprintln(os.Stderr, "fdhog:", err, "after", len(files))
				return 3
			}
			files = append(files, f)
		}
	case "linger": // stores a TCP socket that lingers with unsent data, then replaces it
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		if err := storeLingering(s, args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "linger:", err)
			return 1
		}
		return serveForever(s)
	case "store-300-on-update": // as an update's new instance, stores 300 fds before its init-result
		return rawService(func(c *msg.Conn, in msg.Message) {
			if in.InitType == msg.InitLiveUpdate {
				storePipes(c, "new", 300)
			}
		}, 0)
	case "store-64": // fills its fd store on every init, an update's too
		return rawService(func(c *msg.Conn, in msg.Message) { storePipes(c, "p", 64) }, 0)
	case "store-64-hand-252": // fills its fd store; at lu-ready hands 252 fds with its state
		return rawService(func(c *msg.Conn, in msg.Message) { storePipes(c, "p", 64) }, 252)
	case "sef-hand-300": // a sef service that fills its fd store and tries to hand 300 fds with its state
		var keep []*os.File // the old instance keeps its ends
		s, err := sef.Startup(context.Background(), sef.Callbacks{
			InitFresh: func(s *sef.Service, in sef.Init) error {
				for i := 0; i <= msg.MaxStoredFDs; i++ {
					r, w, _ := os.Pipe()
					err := s.StoreFD(fmt.Sprint("p", i), r)
					r.Close()
					w.Close()
					if i < msg.MaxStoredFDs && err != nil {
						return err
					}
					if i == msg.MaxStoredFDs && err == nil {
						return errors.New("sef stored one fd more than rs keeps")
					}
				}
				return nil
			},
			LUStateSave: func(s *sef.Service, w *sef.StateWriter) error {
				for i := 0; i < 300; i++ {
					r, wr, _ := os.Pipe()
					keep = append(keep, wr)
					if err := w.AddFD(fmt.Sprint("h", i), r); err != nil {
						r.Close()
						return err
					}
				}
				return nil
			},
		})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "linger-flood": // replaces a lingering socket in its fd store, 300 times
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		for i := 0; i < 300; i++ {
			f, err := lingeringSocket(args[0])
			if err != nil {
				fmt.Fprintln(os.Stderr, "linger-flood:", err)
				return 1
			}
			err = s.StoreFD("sock", f)
			f.Close()
			if err != nil {
				break // rs ended it
			}
		}
		return serveForever(s)
	case "crash-if": // runs, but dies right after its init while the file args[0] exists
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		if _, err := os.Stat(args[0]); err == nil {
			return 4
		}
		return serveForever(s)
	case "setsider": // leaves a child outside its group and session, writes its pid to args[0]
		self, _ := os.Executable()
		child := exec.Command(self, "-role", "sleeper")
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := child.Start(); err != nil {
			return 1
		}
		if err := writeAtomic(args[0], fmt.Sprint(child.Process.Pid)); err != nil {
			return 1
		}
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "many": // args[1] children of `sleep` in its group and one setsid; their pids to args[0]
		n, _ := strconv.Atoi(args[1])
		var pids []string
		for i := 0; i <= n; i++ {
			c := exec.Command("sleep", "1000")
			if i == n {
				c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			}
			if err := c.Start(); err != nil {
				fmt.Fprintln(os.Stderr, "many:", err)
				return 1
			}
			pids = append(pids, fmt.Sprint(c.Process.Pid))
		}
		if err := writeAtomic(args[0], strings.Join(pids, "\n")); err != nil {
			return 1
		}
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "plain": // the smallest well-behaved service
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		return serveForever(s)
	case "say": // says its pid on stdout and stderr once its init is done, every instance
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		fmt.Printf("say out pid=%d\n", os.Getpid())
		fmt.Fprintf(os.Stderr, "say err pid=%d\n", os.Getpid())
		return serveForever(s)
	case "fail-init-msg": // init fails with args[0] as its error
		sef.Startup(context.Background(), sef.Callbacks{InitFresh: func(*sef.Service, sef.Init) error { return errors.New(args[0]) }})
		return 1
	case "controller": // before its init, runs args[1:] and writes "exit N\n<stderr>" to args[0]
		return controller(args[0], args[1:], false)
	case "controller-setsid": // as controller, but the command runs in a session of its own
		return controller(args[0], args[1:], true)
	case "squat": // listens on unixpacket args[0] as whoever runs it; says "got N" per connection
		return squat(args[0])
	case "notify-fds", "notify-mainpid", "notify-mainpid-back":
		return notifyRole(role, args)
	case "last-words", "counter", "says-up", "flood-lines", "nonblock-stderr", "numbered":
		return logRole(role, args)
	case "gate-init", "env-dump", "orphaner", "orphan-mid", "orphan-leaf":
		return opsRole(role, args)
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 2
}

// writeAtomic writes a file that a reader sees whole or not at all.
func writeAtomic(path, text string) error {
	if err := os.WriteFile(path+".tmp", []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// rawInit does the start-up handshake by hand, for roles that then say
// things sef never would.
func rawInit() *msg.Conn {
	c, err := msg.FromEnv()
	if err != nil || c == nil {
		os.Exit(1)
	}
	c.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion})
	if _, files, err := c.Recv(); err != nil {
		os.Exit(1)
	} else {
		msg.CloseFiles(files)
	}
	c.Send(&msg.Message{Kind: msg.KindInitResult})
	return c
}

// rawService speaks the protocol by hand, for roles that do what sef
// never would: hello, init (onInit runs before the init-result), then a
// pong for each ping, on lu-prepare an lu-ready with an empty state and
// hand more fds, and exit 0 on stop or when rs goes.
func rawService(onInit func(*msg.Conn, msg.Message), hand int) int {
	c, err := msg.FromEnv()
	if err != nil || c == nil {
		return 1
	}
	c.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion})
	in, files, err := c.Recv()
	if err != nil {
		return 1
	}
	msg.CloseFiles(files)
	onInit(c, in)
	c.Send(&msg.Message{Kind: msg.KindInitResult})
	for {
		m, files, err := c.Recv()
		msg.CloseFiles(files)
		if err != nil {
			return 0
		}
		switch m.Kind {
		case msg.KindPing:
			c.Send(&msg.Message{Kind: msg.KindPong, Seq: m.Seq})
		case msg.KindStop:
			return 0
		case msg.KindLUPrepare:
			fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
			if err != nil {
				return 1
			}
			names := []string{"state"}
			send := []*os.File{os.NewFile(uintptr(fd), "state")}
			for i := 0; i < hand; i++ {
				r, w, _ := os.Pipe()
				defer w.Close()
				names = append(names, fmt.Sprint("h", i))
				send = append(send, r)
			}
			if err := c.Send(&msg.Message{Kind: msg.KindLUReady, State: m.State, Names: names}, send...); err != nil {
				fmt.Fprintln(os.Stderr, "lu-ready:", err)
			}
			msg.CloseFiles(send)
		}
	}
}

// storePipes stores n pipes under prefix0, prefix1, ... until rs stops
// taking them.
func storePipes(c *msg.Conn, prefix string, n int) {
	for i := 0; i < n; i++ {
		r, w, _ := os.Pipe()
		err := c.Send(&msg.Message{Kind: msg.KindFDStore, Names: []string{fmt.Sprint(prefix, i)}}, r)
		r.Close()
		w.Close()
		if err != nil {
			return
		}
	}
}

var spin uint64

func serveForever(s *sef.Service) int {
	for {
		if _, err := s.Receive(context.Background()); errors.Is(err, sef.ErrStopped) {
			return 0
		}
	}
}

// storeLingering connects to addr (a peer that never reads), fills the
// socket's send buffer, sets SO_LINGER to a minute and hands the socket
// to rs's fd store, keeping no copy; then it stores something else under
// the same name. rs closes the socket, the last reference to it: a close
// that waits out the linger time, a minute.
func storeLingering(s *sef.Service, addr string) error {
	f, err := lingeringSocket(addr)
	if err != nil {
		return err
	}
	if err := s.StoreFD("sock", f); err != nil {
		return err
	}
	f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	return s.StoreFD("sock", r)
}

// lingeringSocket connects to addr (a peer that never reads), fills the
// socket's send buffer and sets SO_LINGER to a minute: its last close
// waits out the linger time.
func lingeringSocket(addr string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "lingering")
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 60}); err != nil {
		f.Close()
		return nil, err
	}
	unix.SetNonblock(fd, true)
	// Until the send buffer is full: the peer's window is small and it
	// does not read, so this much stays unsent.
	buf := make([]byte, 64<<10)
	for sent := 0; sent < 64<<20; {
		n, err := unix.Write(fd, buf)
		if err != nil {
			break // EAGAIN
		}
		sent += n
	}
	return f, nil
}

// controller is a service that drives rs from inside: the command runs
// in its process group, as any child of a service would, or with setsid
// in a session and group of its own, as a child trying to escape would.
func controller(out string, argv []string, setsid bool) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	}
	if err := os.WriteFile(out+".tmp", fmt.Appendf(nil, "exit %d\n%s", code, stderr.String()), 0o644); err != nil {
		return 1
	}
	os.Rename(out+".tmp", out)
	s, err := sef.Startup(context.Background(), sef.Callbacks{})
	if err != nil {
		return 1
	}
	return serveForever(s)
}

// squat takes a socket path another user's rs or service would use, and
// reports what each client sent it before hanging up.
func squat(path string) int {
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	os.Chmod(path, 0o666)
	fmt.Println("ready")
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return 1
		}
		buf := make([]byte, 1<<16)
		n, _ := c.Read(buf) // until the client sends, or hangs up
		fmt.Printf("got %d\n", n)
		c.Close()
	}
}
