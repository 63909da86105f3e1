package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs"
)

// rs under systemd (Type=notify, WatchdogSec=; examples/rs.service): rs
// tells its own manager, on $NOTIFY_SOCKET, READY=1 once the configured
// services have settled (rs.Server.WaitSettled: each reached running, is
// failed, or waits for a dependency that will not run), WATCHDOG=1 every
// WATCHDOG_USEC/2 as long as rs's loop answers, and STOPPING=1 at the
// shutdown. The datagrams go out from a writer goroutine of their own,
// with a write deadline: never from the loop, never making it wait. The
// three variables are taken out of rs's environment at once, so no
// service rs starts talks to rs's manager (sd_notify(3)'s
// unset_environment, which systemd does for every child).

// notifyWriteTimeout bounds one datagram to the manager.
const notifyWriteTimeout = time.Second

type systemd struct {
	log  *slog.Logger
	conn *net.UnixConn // nil: no manager to tell
	msgs chan string
	done chan struct{} // the writer has ended
	stop chan struct{} // closed by close: the watchdog and readiness end

	watchdog time.Duration // 0: no watchdog
	stopping bool
}

// takeSystemdEnv reads and unsets NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID, and connects to the manager's socket if there is one.
func takeSystemdEnv(log *slog.Logger) *systemd {
	sock := os.Getenv("NOTIFY_SOCKET")
	usec, wpid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		os.Unsetenv(v)
	}
	sd := &systemd{log: log, msgs: make(chan string, 16), done: make(chan struct{}), stop: make(chan struct{})}
	if sock == "" {
		close(sd.done)
		return sd
	}
	if !strings.HasPrefix(sock, "/") && !strings.HasPrefix(sock, "@") {
		log.Warn("NOTIFY_SOCKET is neither a path nor an abstract (@) name: not telling the manager", "notify_socket", sock)
		close(sd.done)
		return sd
	}
	// Go's net takes a leading @ for the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Warn("NOTIFY_SOCKET: cannot connect: not telling the manager", "notify_socket", sock, "err", err)
		close(sd.done)
		return sd
	}
	sd.conn = conn
	if usec != "" {
		n, err := strconv.ParseUint(usec, 10, 63)
		mine := wpid == "" || wpid == strconv.Itoa(os.Getpid())
		switch {
		case err != nil || n == 0:
			log.Warn("WATCHDOG_USEC is not a positive number: no watchdog", "watchdog_usec", usec)
		case !mine:
			log.Info("WATCHDOG_PID is another process's: no watchdog", "watchdog_pid", wpid)
		default:
			sd.watchdog = time.Duration(n) * time.Microsecond
		}
	}
	go sd.write()
	return sd
}

// write sends the queued datagrams, each within notifyWriteTimeout.
func (sd *systemd) write() {
	defer close(sd.done)
	defer sd.conn.Close()
	failed := false
	put := func(m string) {
		sd.conn.SetWriteDeadline(time.Now().Add(notifyWriteTimeout))
		if _, err := sd.conn.Write([]byte(m)); err != nil && !failed {
			failed = true // once: a manager that is gone would repeat it every beat
			sd.log.Warn("cannot tell the manager (NOTIFY_SOCKET)", "message", strings.ReplaceAll(m, "\n", " "), "err", err)
		}
	}
	for {
		select {
		case m := <-sd.msgs:
			put(m)
		case <-sd.stop:
			for { // what was queued before the stop still goes out
				select {
				case m := <-sd.msgs:
					put(m)
				default:
					return
				}
			}
		}
	}
}

// send queues m for the manager; it never blocks (a full queue drops m).
func (sd *systemd) send(m string) {
	if sd.conn == nil {
		return
	}
	select {
	case sd.msgs <- m:
	default:
		sd.log.Warn("notify queue full: a message to the manager dropped", "message", strings.ReplaceAll(m, "\n", " "))
	}
}

// start begins the readiness wait and the watchdog for srv, whose
// configured services are labels.
func (sd *systemd) start(srv *rs.Server, labels []string) {
	if sd.conn == nil {
		return
	}
	go func() {
		summary, ok := srv.WaitSettled(labels, sd.stop)
		if ok {
			sd.log.Info("configured services settled: READY=1 to the manager", "status", summary)
			sd.send("READY=1\nSTATUS=" + summary)
		}
	}()
	if sd.watchdog > 0 {
		go sd.beat(srv, sd.watchdog/2)
	}
}

// beat sends WATCHDOG=1 every interval, but only when the loop has
// answered the probe sent the beat before: a loop that is stuck lets
// the manager's watchdog fire, as it should.
func (sd *systemd) beat(srv *rs.Server, interval time.Duration) {
	probe := srv.LoopProbe()
	t := time.NewTicker(interval)
	defer t.Stop()
	late := false
	for {
		select {
		case <-sd.stop:
			return
		case <-t.C:
		}
		select {
		case <-probe:
			sd.send("WATCHDOG=1")
			probe = srv.LoopProbe()
			if late {
				late = false
				sd.log.Info("rs's loop answers again: WATCHDOG=1 to the manager again")
			}
		default:
			if !late {
				late = true
				sd.log.Error("rs's loop did not answer within the watchdog's interval: no WATCHDOG=1", "interval", interval)
			}
		}
	}
}

// shuttingDown tells the manager that rs is shutting down (once).
func (sd *systemd) shuttingDown(why string) {
	if sd.stopping {
		return
	}
	sd.stopping = true
	sd.send(fmt.Sprintf("STOPPING=1\nSTATUS=stopping: %s", why))
}

// close ends the watchdog and the readiness wait, and waits (bounded)
// for what is queued to go out.
func (sd *systemd) close() {
	close(sd.stop)
	select {
	case <-sd.done:
	case <-time.After(2 * notifyWriteTimeout):
	}
}
