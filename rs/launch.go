package rs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/control"
)

// What a process gets at its exec, for every type of service: the
// sockets of `listen` (rs's, held across every restart, standby
// take-over and update), its credentials, environment, working
// directory and umask. Everything that reads a file or makes a socket
// (the user and group databases, env_file, bind) runs in the spawn's
// goroutine, never on the loop.
//
// The environment, lowest first (a later one replaces an earlier one's
// variable):
//
//  1. rs's own environment (Options.Env), without the variables below;
//  2. env_file's lines, in file order;
//  3. env, the config table (or `service up --env`);
//  4. what rs sets: RS_LABEL, the sef channel's RS_CHANNEL_FD,
//     LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (when there are
//     listeners), NOTIFY_SOCKET and WATCHDOG_* (notify), a hook's
//     RS_REASON, RS_RESTARTS and RS_STATE (hooks.go). env and
//     env_file cannot set these (an error), and rs's own values of them
//     never reach a service.

// reservedEnv are the variables only rs sets.
var reservedEnv = []string{"RS_LABEL", msg.EnvChannelFD, "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RS_REASON", "RS_RESTARTS", "RS_STATE"}

func reserved(key string) bool { return slices.Contains(reservedEnv, key) }

// heldListener is one socket of `listen`, held by rs.
type heldListener struct {
	name string
	f    *os.File
}

// listenNames are the LISTEN_FDNAMES of spec's sockets.
func listenNames(s Spec) []string {
	if len(s.ListenNames) > 0 {
		return s.ListenNames
	}
	names := make([]string, len(s.Listen))
	for i := range names {
		names[i] = "listen" + strconv.Itoa(i)
	}
	return names
}

// validateLaunch checks what validateSpec cannot see in one value.
func validateLaunch(s Spec) error {
	if len(s.ListenNames) > 0 && len(s.ListenNames) != len(s.Listen) {
		return specErrorf(s.Label, []string{"listen_names", "listen"}, "listen_names has %d names for %d listen sockets", len(s.ListenNames), len(s.Listen))
	}
	names := listenNames(s)
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return specErrorf(s.Label, []string{"listen_names"}, "listen name %q given twice", n)
		}
	}
	for k := range s.Env {
		if reserved(k) {
			return specErrorf(s.Label, []string{"env"}, "env %s: set by rs, cannot be given", k)
		}
	}
	for _, f := range []struct{ key, v string }{{"workdir", s.Workdir}, {"env_file", s.EnvFile}} {
		if f.v != "" && !strings.HasPrefix(f.v, "/") {
			return specErrorf(s.Label, []string{f.key}, "%s %q: path must be absolute", f.key, f.v)
		}
	}
	if err := checkOwnIdentity(s); err != nil {
		return specErrorf(s.Label, []string{"user", "group"}, "%v", err)
	}
	return nil
}

// rs's own identity, for the check that a non-root rs is not asked for
// another user: looked up once at start-up (off the loop), and only
// when rs is not root.
var own = func() (o struct {
	root      bool
	uid, gid  string
	user, grp string
}) {
	o.root = os.Geteuid() == 0
	if o.root {
		return o
	}
	o.uid, o.gid = strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	if u, err := user.LookupId(o.uid); err == nil {
		o.user = u.Username
	}
	if g, err := user.LookupGroupId(o.gid); err == nil {
		o.grp = g.Name
	}
	return o
}()

// checkOwnIdentity: only root can run a service as another user or
// group.
func checkOwnIdentity(s Spec) error {
	if own.root {
		return nil
	}
	if s.User != "" && s.User != own.uid && s.User != own.user {
		return fmt.Errorf("user %q: rs runs as uid %s, not root, and cannot change a service's user", s.User, own.uid)
	}
	if s.Group != "" && s.Group != own.gid && s.Group != own.grp {
		return fmt.Errorf("group %q: rs runs as gid %s, not root, and cannot change a service's group", s.Group, own.gid)
	}
	return nil
}

// credential resolves user and group to ids (the user's supplementary
// groups too, as getgrouplist(3) gives them). nil: rs's own (no user or
// group, or rs is not root, where validation made sure they are rs's).
func credential(s Spec) (*syscall.Credential, error) {
	if (s.User == "" && s.Group == "") || !own.root {
		return nil, nil
	}
	c := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if s.User != "" {
		u, err := lookupUser(s.User)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.Uid, c.Gid = uint32(uid), uint32(gid)
		if u.Username != "" {
			ids, err := u.GroupIds()
			if err != nil {
				return nil, fmt.Errorf("user %q: its groups: %w", s.User, err)
			}
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					c.Groups = append(c.Groups, uint32(g))
				}
			}
		}
	}
	if s.Group != "" {
		gid, err := lookupGroup(s.Group)
		if err != nil {
			return nil, err
		}
		c.Gid = gid
	}
	if len(c.Groups) == 0 {
		c.Groups = []uint32{c.Gid}
	}
	return c, nil
}

// lookupUser finds a user by name or uid; a uid with no entry in the
// user database is taken as it is, with gid the same number.
func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			return &user.User{Uid: name, Gid: name}, nil
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

func lookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", name, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q: gid %q: %w", name, g.Gid, err)
	}
	return uint32(n), nil
}

// readEnvFile reads KEY=VALUE lines: blank lines and lines starting
// with '#' are skipped, spaces around the key and the value trimmed, and
// one pair of matching quotes around the value taken off.
func readEnvFile(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("env_file %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || control.CheckEnvKey(k) != nil || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("env_file %s:%d: want KEY=VALUE", path, n)
		}
		if reserved(k) {
			return nil, fmt.Errorf("env_file %s:%d: %s is set by rs, cannot be given", path, n, k)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, [2]string{k, v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("env_file %s: %w", path, err)
	}
	return out, nil
}

// launchEnv is the environment of spec's process, before the variables
// rs adds for it (see the order above).
func launchEnv(base []string, s Spec) ([]string, error) {
	env := make([]string, 0, len(base)+len(s.Env)+4)
	at := map[string]int{}
	set := func(k, v string) {
		if i, ok := at[k]; ok {
			env[i] = k + "=" + v
			return
		}
		at[k] = len(env)
		env = append(env, k+"="+v)
	}
	for _, e := range base {
		k, v, _ := strings.Cut(e, "=")
		if !reserved(k) {
			set(k, v)
		}
	}
	if s.EnvFile != "" {
		kvs, err := readEnvFile(s.EnvFile)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			set(kv[0], kv[1])
		}
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		set(k, s.Env[k])
	}
	return append(env, "RS_LABEL="+s.Label), nil
}

// launch is what a start function of any type hands proc.Start, but
// for the protocol's own files and variables, which it appends to Files
// and Env (after the listeners: they are fds 3, 4, ...).
func launch(s Spec, base []string, listeners []heldListener) (proc.Spec, error) {
	env, err := launchEnv(base, s)
	if err != nil {
		return proc.Spec{}, err
	}
	cred, err := credential(s)
	if err != nil {
		return proc.Spec{}, err
	}
	if s.Workdir != "" {
		if fi, err := os.Stat(s.Workdir); err != nil {
			return proc.Spec{}, fmt.Errorf("workdir %s: %w", s.Workdir, errors.Unwrap(err))
		} else if !fi.IsDir() {
			return proc.Spec{}, fmt.Errorf("workdir %s: not a directory", s.Workdir)
		}
	}
	ps := proc.Spec{
		Path: s.Binary, Args: s.Args, Env: env, Dir: s.Workdir,
		Limits: s.limits(), Name: s.Label, Memory: s.Memory, Pids: s.Pids,
		Credential: cred,
	}
	if s.Umask != "" {
		m, err := control.ParseUmask(s.Umask)
		if err != nil {
			return proc.Spec{}, err
		}
		ps.Umask = &m
	}
	if len(listeners) > 0 {
		names := make([]string, len(listeners))
		for i, l := range listeners {
			names[i] = l.name
			ps.Files = append(ps.Files, l.f)
		}
		ps.Env = append(ps.Env, "LISTEN_FDS="+strconv.Itoa(len(listeners)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		ps.PidEnv = append(ps.PidEnv, "LISTEN_PID")
	}
	return ps, nil
}

// openListeners makes spec's sockets, listening, in `listen` order. A
// unix socket's path is made anew: a socket file left there is removed
// (any other file is an error); it gets mode 0666 and, with user set,
// the service's user and group as owner. On error none is left open.
func openListeners(s Spec, cred *syscall.Credential) ([]heldListener, error) {
	names := listenNames(s)
	var out []heldListener
	for i, a := range s.Listen {
		f, err := openListener(a, cred)
		if err != nil {
			for _, l := range out {
				l.f.Close()
			}
			return nil, err
		}
		out = append(out, heldListener{name: names[i], f: f})
	}
	return out, nil
}

func openListener(spec string, cred *syscall.Credential) (*os.File, error) {
	a, err := control.ParseListen(spec)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) { return nil, fmt.Errorf("listen %s: %w", spec, err) }
	var fd int
	var sa unix.Sockaddr
	switch {
	case a.Net == "tcp" && a.Addr.Addr().Unmap().Is4():
		sa = &unix.SockaddrInet4{Port: int(a.Addr.Port()), Addr: a.Addr.Addr().Unmap().As4()}
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	case a.Net == "tcp":
		sa = &unix.SockaddrInet6{Port: int(a.Addr.Port()), Addr: a.Addr.Addr().As16()}
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	default:
		sa = &unix.SockaddrUnix{Name: a.Path}
		if !strings.HasPrefix(a.Path, "@") {
			if err := removeStaleSocket(a.Path); err != nil {
				return fail(err)
			}
		}
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return fail(err)
	}
	if a.Net == "tcp" {
		// rs holds the socket for good; a restart of rs itself must not
		// wait out the old one's TIME_WAIT connections.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return fail(err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	if a.Net == "unix" && !strings.HasPrefix(a.Path, "@") {
		if err := ownSocketFile(a.Path, cred); err != nil {
			unix.Close(fd)
			unix.Unlink(a.Path)
			return fail(err)
		}
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	return os.NewFile(uintptr(fd), spec), nil
}

// removeStaleSocket removes a socket file at path, and nothing else.
func removeStaleSocket(path string) error {
	var st unix.Stat_t
	switch err := unix.Lstat(path, &st); {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("%s exists and is not a socket; rs removes only a stale socket there", path)
	}
	return unix.Unlink(path)
}

// ownSocketFile gives the socket file rs just bound mode 0666 and, with
// cred, its owner, through an O_PATH fd of the file itself: a symlink
// put in its place meanwhile is not followed.
func ownSocketFile(path string, cred *syscall.Credential) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s was replaced by another file", path)
	}
	if cred != nil {
		if err := unix.Fchownat(fd, "", int(cred.Uid), int(cred.Gid), unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), 0o666); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// dupListeners gives the spawn its own copies of the held sockets (a
// non-blocking fcntl, on the loop): a `down` may close the service's
// while a dropped standby is still being started.
func dupListeners(ls []heldListener) ([]heldListener, error) {
	out := make([]heldListener, 0, len(ls))
	for _, l := range ls {
		var d int
		err := withFD(l.f, func(fd int) (err error) {
			d, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
			return err
		})
		if err != nil {
			for _, o := range out {
				o.f.Close()
			}
			return nil, fmt.Errorf("listen %s: dup: %w", l.name, err)
		}
		out = append(out, heldListener{name: l.name, f: os.NewFile(uintptr(d), l.name)})
	}
	return out, nil
}

// listenersChanged: a new spec asks for other sockets (or another owner
// of them) than those rs holds for old.
func listenersChanged(old, next Spec) bool {
	return !slices.Equal(old.Listen, next.Listen) || !slices.Equal(listenNames(old), listenNames(next)) ||
		old.User != next.User || old.Group != next.Group
}

// closeListeners lets go of svc's sockets (off the loop); a pause of
// one of them (listeners.go) ends first.
func (s *Server) closeListeners(svc *service) {
	if len(svc.listeners) == 0 {
		return
	}
	files := make([]*os.File, len(svc.listeners))
	for i, l := range svc.listeners {
		files[i] = l.f
	}
	kept := svc.paused[:0]
	for _, p := range svc.paused {
		if !slices.Contains(files, p.f) {
			kept = append(kept, p)
		} else if !p.tcp && !p.endDrain() {
			s.log.Error("accept loop did not end: a bug in rs", "label", svc.spec.Label, "name", p.name)
		}
	}
	svc.paused = kept
	svc.listeners = nil
	s.closeHeld(svc, files...)
}

// isListenName: name is one of svc's held sockets (not the service's to
// store over).
func (svc *service) isListenName(name string) bool {
	for _, l := range svc.listeners {
		if l.name == name {
			return true
		}
	}
	return false
}

// closeListenerFiles closes sockets svc does not hold (off the loop).
func (s *Server) closeListenerFiles(svc *service, ls []heldListener) {
	files := make([]*os.File, len(ls))
	for i, l := range ls {
		files[i] = l.f
	}
	s.closeHeld(svc, files...) // one goroutine for them all
}

// signalService sends the signal of `service signal` to the main process
// of the service's instance: not its group, not a standby, not rs.
func (s *Server) signalService(req control.Request, r chan<- control.Reply) {
	sig, err := control.ParseSignal(req.Signal)
	if err != nil {
		fail(r, control.Errorf(control.CodeInvalid, "%w", err))
		return
	}
	svc, ok := s.services[req.Label]
	if !ok {
		fail(r, fmt.Errorf("%w %q", control.ErrUnknown, req.Label))
		return
	}
	inst := svc.primary
	if inst == nil || inst.proc == nil || inst.phase >= phaseStopping {
		fail(r, control.Errorf(control.CodeRefused, "%s has no instance to signal (%s)", req.Label, svc.state()))
		return
	}
	if err := inst.proc.Signal(sig); err != nil {
		fail(r, control.Errorf(control.CodeRefused, "signal %s to %s (pid %d): %w", unix.SignalName(sig), req.Label, inst.pid(), err))
		return
	}
	s.log.Info("signal sent", "label", req.Label, "pid", inst.pid(), "signal", unix.SignalName(sig))
	answer(r, control.Reply{Message: fmt.Sprintf("%s sent to %s (pid %d)", unix.SignalName(sig), req.Label, inst.pid())})
}
