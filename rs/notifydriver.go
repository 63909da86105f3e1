package rs

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// The notify driver speaks systemd's sd_notify protocol (sd_notify(3))
// with one instance of a `type = "notify"` service. Each instance gets a
// datagram socket of its own (AF_UNIX, SOCK_DGRAM, SO_PASSCRED) in rs's
// runtime directory, named to it by NOTIFY_SOCKET. A goroutine of the
// driver reads it, off the loop: it takes the sender's credentials from
// the kernel (SCM_CREDENTIALS), checks the sender is the service's (its
// pid is the instance's or its MAINPID=, or the process is in the
// instance's cgroup v2 leaf or, without cgroups, its process group: the
// /proc read is the goroutine's), parses the datagram and posts it to the
// loop. What is not the service's is ignored and counted
// (notify_rejected in status): a datagram from another process, one
// longer than notifyMax (systemd drops those too), one with a NUL byte,
// one whose control data was truncated. Files that come with a datagram
// are kept only with FDSTORE=1; others (BARRIER=1's, say) are closed by
// the goroutine.
//
// What the loop makes of a datagram (handle): no hello is needed (the
// driver says hello as soon as it reads); READY=1 is the end of the
// init (init_timeout bounds it); RELOADING=1 ... READY=1 is shown as
// reloading; STOPPING=1 means the service stops by itself: it is no
// longer pinged, shows as stopping and must be gone within stop_grace;
// its exit is then judged by the restart policy as any exit (as systemd
// does: a restart = "always" service comes back). STATUS= is status_text;
// ERRNO= is added to last_exit when the instance then ends;
// EXTEND_TIMEOUT_USEC= extends the init deadline, or a STOPPING=1
// deadline, to at least that long from now; WATCHDOG=1 answers rs's
// outstanding ping (see ping), WATCHDOG=trigger is a missed heartbeat at
// once; FDSTORE=1 keeps the datagram's files in the fd store as FDNAME=
// (default "stored"; a second and further file of one datagram as
// NAME.1, NAME.2, ...), FDSTOREREMOVE=1 drops FDNAME= from it; MAINPID=
// names the process rs watches (checked off the loop: only a process in
// the service's own tree, the same test as for a sender). Unknown keys,
// lines without '=' and values that do not parse are ignored; of a key
// given twice the first counts, as in systemd.

// notifyMax is the longest datagram taken, as systemd's NOTIFY_BUFFER_MAX
// (PIPE_BUF); a longer one is dropped whole.
const notifyMax = 4096

// notifyMaxFDs bounds the files one datagram may bring (systemd: 768);
// ours is the per-service budget, checked again on the loop.
const notifyMaxFDs = fdBudget

// defaultFDName is FDNAME= when the datagram does not say (systemd's).
const defaultFDName = "stored"

// notifyMsg is one datagram, parsed. Zero fields: the key was not given
// (or did not parse).
type notifyMsg struct {
	ready, reloading, stopping bool
	watchdog, watchdogTrigger  bool
	fdstore, fdstoreRemove     bool
	barrier                    bool
	status                     *string
	errno                      int // ERRNO=, 0 when none
	extend                     time.Duration
	mainPid                    int
	fdname                     string // FDNAME=, "" when not given
}

// parseNotify reads one datagram as sd_notify(3) has it: lines of
// KEY=VALUE. It reports false for a datagram that is dropped whole (a
// NUL byte in it, as systemd). Unknown keys, lines without '=' and
// values that do not parse are ignored; of a key given twice the first
// counts.
func parseNotify(b []byte) (notifyMsg, bool) {
	var m notifyMsg
	if bytes.IndexByte(b, 0) >= 0 {
		return m, false
	}
	seen := map[string]bool{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || seen[k] {
			continue
		}
		seen[k] = true
		switch k {
		case "READY":
			m.ready = v == "1"
		case "RELOADING":
			m.reloading = v == "1"
		case "STOPPING":
			m.stopping = v == "1"
		case "WATCHDOG":
			m.watchdog = v == "1"
			m.watchdogTrigger = v == "trigger"
		case "FDSTORE":
			m.fdstore = v == "1"
		case "FDSTOREREMOVE":
			m.fdstoreRemove = v == "1"
		case "BARRIER":
			m.barrier = v == "1"
		case "STATUS":
			if utf8.ValidString(v) {
				m.status = &v
			}
		case "ERRNO":
			if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 4096 {
				m.errno = n
			}
		case "EXTEND_TIMEOUT_USEC":
			if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 {
				m.extend = time.Duration(min(n, uint64(maxExtend/time.Microsecond))) * time.Microsecond
			}
		case "MAINPID":
			if n, err := strconv.ParseInt(v, 10, 32); err == nil && n > 0 {
				m.mainPid = int(n)
			}
		case "FDNAME":
			if validFDName(v) {
				m.fdname = v
			}
		}
	}
	return m, true
}

// maxExtend bounds one EXTEND_TIMEOUT_USEC= (a day): a timer of
// centuries is a service that never times out.
const maxExtend = 24 * time.Hour

// validFDName is systemd's rule for a name in LISTEN_FDNAMES: printable
// ASCII without ':', at most 255 bytes.
func validFDName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// notifyDriver is one instance's notify socket and what the loop knows
// of the protocol's state.
type notifyDriver struct {
	path string
	conn *net.UnixConn
	spec Spec

	// Set before the reader starts and never changed.
	inst   *instance
	proc   *proc.Process
	cgroup string
	// rejected counts the datagrams ignored (the service's counter,
	// shared by its instances).
	rejected *atomic.Int64
	// mainPid is the MAINPID= rs accepted, 0 for none: the reader lets
	// it send too.
	mainPid atomic.Int64

	// The main pid's pidfd, shared by the loop (stop signals it) and its
	// watcher (which closes it when the pid exits or the driver closes).
	mainMu  sync.Mutex
	mainFD  *os.File
	closeMu sync.Once

	// adopted: taken over from the rs before an exec in place; its
	// reader says no hello.
	adopted bool
	// pauseMu guards resume: the reader is to stop (update-self's
	// freeze) until it is closed (pauseRead, resumeRead).
	pauseMu sync.Mutex
	resume  chan struct{}
	paused  func()

	// The loop's.
	ready     bool
	reloading bool
	pingOut   bool
}

// notifySeq numbers rs's notify sockets: one name per instance.
var notifySeq atomic.Uint64

// newNotifyDriver makes the notify socket of a new instance in dir (made
// sure of as rs's private directory first) and the environment that
// names it to the process: NOTIFY_SOCKET, and WATCHDOG_USEC when the
// service is pinged.
func newNotifyDriver(dir string, spec Spec) (*notifyDriver, []string, error) {
	var path string
	if spec.User != "" || spec.Group != "" {
		// Another user cannot reach rs's private directory (0700): an
		// abstract socket, its name unguessable so that nobody takes it
		// first. Anyone may send to it, as to systemd's own: what is not
		// from the service is dropped and counted, as here.
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, nil, fmt.Errorf("notify socket: %w", err)
		}
		path = fmt.Sprintf("@rs-notify-%d-%d-%x", os.Getpid(), notifySeq.Add(1), rnd)
	} else {
		if err := privateDir(dir); err != nil {
			return nil, nil, err
		}
		path = filepath.Join(dir, fmt.Sprintf("notify-%d-%d.sock", os.Getpid(), notifySeq.Add(1)))
	}
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, nil, fmt.Errorf("notify socket %s: path too long for a unix socket", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("notify socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FileConn dups it
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return nil, nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", path, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 256<<10)
	if !abstract(path) {
		// A file of that name is a stale one of an rs that had this
		// pid: the directory is rs's own.
		_ = os.Remove(path)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		if !abstract(path) {
			os.Remove(path)
		}
		return nil, nil, fmt.Errorf("notify socket %s: %w", path, err)
	}
	d := &notifyDriver{path: path, conn: c.(*net.UnixConn), spec: spec}
	env := []string{"NOTIFY_SOCKET=" + path}
	if spec.Period > 0 {
		// A ping is answered by the next WATCHDOG=1: one at least every
		// ping timeout answers every ping in time. WATCHDOG_PID, the
		// child's own pid, is written at its exec stop (startNotify).
		env = append(env, "WATCHDOG_USEC="+strconv.FormatInt(spec.PingTimeout.Microseconds(), 10))
	}
	return d, env, nil
}

// abstract: path names a socket in the abstract namespace (no file).
func abstract(path string) bool { return strings.HasPrefix(path, "@") }

// privateDir makes sure of rs's runtime directory.
var privateDir = control.PrivateDir

// attach starts reading the socket for inst, on the loop once the
// process runs.
func (d *notifyDriver) attach(s *Server, inst *instance) error {
	inst.ended = true // no channel: its reaping alone ends it
	d.inst, d.proc, d.cgroup = inst, inst.proc, inst.proc.Cgroup
	d.rejected = &inst.svc.notifyRejected
	s.drivers.Add(1) // Run waits for it: the socket is closed once the instance is gone
	go func() {
		defer s.drivers.Done()
		d.read(s)
	}()
	return nil
}

// read is the driver's goroutine: it ends when the socket is closed.
func (d *notifyDriver) read(s *Server) {
	if !d.adopted {
		s.post(evNotify{drv: d, hello: true})
	}
	buf := make([]byte, notifyMax)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*notifyMaxFDs))
	for {
		n, oobn, flags, _, err := d.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				d.waitResume()
				continue
			}
			s.log.Warn("notify socket", "label", d.spec.Label, "err", err)
			return
		}
		ev, why := d.take(buf[:n], oob[:oobn], flags)
		if why != "" {
			d.rejected.Add(1)
			s.log.Debug("notify datagram ignored", "label", d.spec.Label, "why", why)
			continue
		}
		s.post(ev)
	}
}

// pauseRead stops the reader once the datagram it is reading is posted
// (update-self's freeze): paused is called from the reader then. It
// never blocks.
func (d *notifyDriver) pauseRead(paused func()) {
	d.pauseMu.Lock()
	d.resume, d.paused = make(chan struct{}), paused
	d.pauseMu.Unlock()
	d.conn.SetReadDeadline(time.Now())
}

// resumeRead lets a paused reader read again; close calls it too.
func (d *notifyDriver) resumeRead() {
	d.pauseMu.Lock()
	defer d.pauseMu.Unlock()
	d.conn.SetReadDeadline(time.Time{})
	if d.resume != nil {
		close(d.resume)
		d.resume, d.paused = nil, nil
	}
}

// waitResume: the reader's deadline passed, so a pause was asked for
// (or it ended just now).
func (d *notifyDriver) waitResume() {
	d.pauseMu.Lock()
	r, paused := d.resume, d.paused
	d.paused = nil
	d.pauseMu.Unlock()
	if r == nil {
		return
	}
	if paused != nil {
		paused()
	}
	<-r
}

// take judges one datagram, off the loop: its event, or why it is
// ignored (its files then closed here).
func (d *notifyDriver) take(b, oob []byte, flags int) (evNotify, string) {
	var cred *unix.Ucred
	var files []*os.File
	cmsgs, cerr := unix.ParseSocketControlMessage(oob)
	for _, c := range cmsgs {
		switch {
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_CREDENTIALS:
			if u, err := unix.ParseUnixCredentials(&c); err == nil {
				cred = u
			}
		case c.Header.Level == unix.SOL_SOCKET && c.Header.Type == unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(&c); err == nil {
				for _, fd := range fds {
					// close-on-exec already: ReadMsgUnix passes MSG_CMSG_CLOEXEC
					files = append(files, os.NewFile(uintptr(fd), "notify-fd"))
				}
			}
		}
	}
	reject := func(why string) (evNotify, string) {
		closeNow(files)
		return evNotify{}, why
	}
	switch {
	case cerr != nil:
		return reject("control data: " + cerr.Error())
	case flags&unix.MSG_TRUNC != 0:
		return reject(fmt.Sprintf("longer than %d bytes", notifyMax))
	case flags&unix.MSG_CTRUNC != 0:
		return reject("control data truncated (too many files)")
	case cred == nil:
		return reject("no credentials")
	case !d.fromService(int(cred.Pid)):
		return reject(fmt.Sprintf("from pid %d, not the service's", cred.Pid))
	}
	m, ok := parseNotify(b)
	if !ok {
		return reject("a NUL byte in it")
	}
	if !m.fdstore {
		closeNow(files) // a barrier's, or sent without FDSTORE=1
		files = nil
	}
	ev := evNotify{drv: d, m: m, files: files, at: time.Now()}
	if m.mainPid > 0 && m.mainPid != d.proc.Pid() {
		ev.mainFD, ev.mainErr = d.openMain(m.mainPid)
	}
	return ev, ""
}

// fromService: pid is the instance's process, its main pid, or in its
// cgroup leaf (or below) or, without one, its process group. A pid that
// is gone by now is not.
func (d *notifyDriver) fromService(pid int) bool {
	if pid <= 0 {
		return false
	}
	if pid == d.proc.Pid() || int64(pid) == d.mainPid.Load() {
		return true
	}
	return inTree(pid, d.proc.Pid(), d.cgroup)
}

// inTree: pid is in the tree of the instance that leads group leader and
// has cgroup v2 leaf cgroup ("" without one).
func inTree(pid, leader int, cgroup string) bool {
	if cgroup != "" {
		return inCgroup(control.CgroupOf(pid), cgroup)
	}
	pg, err := unix.Getpgid(pid)
	return err == nil && pg == leader
}

// openMain opens a pidfd of a MAINPID= and checks, after, that the
// process it names is in the service's tree: checked after the open, the
// pidfd cannot name a process that took a recycled pid.
func (d *notifyDriver) openMain(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("MAINPID=%d: %w", pid, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil { // for the poller
		unix.Close(fd)
		return nil, fmt.Errorf("MAINPID=%d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	if !inTree(pid, d.proc.Pid(), d.cgroup) {
		f.Close()
		return nil, fmt.Errorf("MAINPID=%d: not a process of the service", pid)
	}
	return f, nil
}

// closeNow closes files here (a goroutine off the loop).
func closeNow(files []*os.File) {
	for _, f := range abortive(files) {
		f.Close()
	}
}

// handle turns one datagram into the lifecycle's signals, on the loop.
func (d *notifyDriver) handle(ev evNotify) []signal {
	if ev.hello {
		return []signal{{kind: sigHello}}
	}
	m := ev.m
	var sigs []signal
	if m.mainPid > 0 {
		var files []*os.File
		if ev.mainFD != nil {
			files = []*os.File{ev.mainFD}
		}
		sigs = append(sigs, signal{kind: sigMainPID, n: m.mainPid, err: ev.mainErr, files: files})
	}
	if m.status != nil {
		sigs = append(sigs, signal{kind: sigStatus, text: *m.status})
	}
	if m.errno != 0 {
		sigs = append(sigs, signal{kind: sigErrno, n: m.errno})
	}
	switch {
	case m.stopping:
		sigs = append(sigs, signal{kind: sigStopping})
	case m.reloading:
		d.reloading = true
		sigs = append(sigs, signal{kind: sigReloading, n: 1})
	case m.ready && !d.ready:
		d.ready = true
		sigs = append(sigs, signal{kind: sigReady})
	case m.ready && d.reloading:
		d.reloading = false
		sigs = append(sigs, signal{kind: sigReloading, n: 0})
	}
	if m.extend > 0 {
		sigs = append(sigs, signal{kind: sigExtend, d: m.extend})
	}
	switch {
	case m.watchdogTrigger:
		sigs = append(sigs, signal{kind: sigFault, reason: "no-heartbeat", err: errors.New("WATCHDOG=trigger")})
	case m.watchdog && d.pingOut:
		d.pingOut = false
		sigs = append(sigs, signal{kind: sigAlive, at: ev.at})
	}
	name := m.fdname
	if name == "" {
		name = defaultFDName
	}
	if m.fdstoreRemove && m.fdname != "" {
		sigs = append(sigs, signal{kind: sigRemoveFD, text: m.fdname})
	}
	for i, f := range ev.files {
		n := name
		if i > 0 {
			n = fmt.Sprintf("%s.%d", name, i)
		}
		sigs = append(sigs, signal{kind: sigStoreFD, names: []string{n}, files: []*os.File{f}})
	}
	return sigs
}

// init: a notify service is not given an init; what it gets comes with
// its exec (the fd store at its next start is handed over as the
// listeners are).
func (d *notifyDriver) init(initKind, string, int, []string, []*os.File) error { return nil }

// ping is answered by the next WATCHDOG=1.
func (d *notifyDriver) ping(uint64) error {
	d.pingOut = true
	return nil
}

var errNoUpdate = errors.New("a notify service has no live update protocol")

func (d *notifyDriver) prepare(int, time.Duration) error { return errNoUpdate }

func (d *notifyDriver) cancel() error { return nil }

// stop sends the stop signal to the main pid (MAINPID=, else rs's
// child); the stop sequence (proc.Stop) follows with the group's.
func (d *notifyDriver) stop() error {
	sig := d.spec.StopSignal
	d.mainMu.Lock()
	defer d.mainMu.Unlock()
	if d.mainFD != nil {
		// Through its raw conn: Fd() would take the pidfd out of the
		// poller its watcher waits in.
		if rc, err := d.mainFD.SyscallConn(); err == nil {
			var serr error
			if cerr := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); cerr == nil && serr == nil {
				return nil
			}
		}
	}
	return d.proc.Signal(sig)
}

// watchMain makes f (a pidfd of pid, checked) the main pid's, replacing
// any, and watches it in a goroutine: when it exits, evMainExited. The
// pidfd is closed by that goroutine.
func (d *notifyDriver) watchMain(s *Server, pid int, f *os.File) {
	d.mainMu.Lock()
	old := d.mainFD
	d.mainFD = f
	d.mainMu.Unlock()
	d.mainPid.Store(int64(pid))
	if old != nil {
		go old.Close() // its watcher ends with an error, and posts nothing
	}
	s.drivers.Add(1) // Run waits for it: close (the instance's end) closes f
	go func() {
		defer s.drivers.Done()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		exited := false
		err = rc.Read(func(fd uintptr) bool {
			var fds = []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, e := unix.Poll(fds, 0)
			if e == nil && n > 0 {
				exited = true
				return true
			}
			return false
		})
		if err == nil && exited {
			s.post(evMainExited{drv: d, pid: pid})
			d.mainMu.Lock()
			if d.mainFD == f {
				d.mainFD = nil
			}
			d.mainMu.Unlock()
			f.Close()
		}
	}()
}

// dropMain: rs's own child is the main process again (MAINPID= named
// it); the watch of the one named before ends.
func (d *notifyDriver) dropMain() {
	d.mainMu.Lock()
	old := d.mainFD
	d.mainFD = nil
	d.mainMu.Unlock()
	d.mainPid.Store(0)
	if old != nil {
		go old.Close() // its watcher ends with an error, and posts nothing
	}
}

// close lets go of the instance: its socket is closed and removed, and
// the main pid's watcher stopped, off the loop (Server.bg waits for it
// before rs exits).
func (d *notifyDriver) close() {
	d.resumeRead()
	d.closeMu.Do(func() {
		d.mainMu.Lock()
		f := d.mainFD
		d.mainFD = nil
		d.mainMu.Unlock()
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			d.conn.Close()
			if !abstract(d.path) {
				os.Remove(d.path)
			}
			if f != nil {
				f.Close()
			}
		}()
	})
}

// bgWG counts the notify sockets being removed: rs waits for them before
// it exits, so that it leaves none behind.
var bgWG sync.WaitGroup
