package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Containment modes, as status reports them.
const (
	ContainCgroup       = "cgroup"        // each instance in a v2 leaf, killed with cgroup.kill
	ContainProcessGroup = "process-group" // each instance a process group, killed with kill(-pgid)
)

// Where a controller's limits are set.
const (
	ctlV2 = "v2"
	ctlV1 = "v1"
)

// emptyBound is how long the reaper waits for a killed cgroup to report
// `populated 0` (a process in uninterruptible sleep dies only when it
// wakes). Past it the cgroup is left for ReleaseContainment or the next
// rs's clean-up.
const emptyBound = 10 * time.Second

// Info says what containment is in force and where limits are set.
type Info struct {
	Mode   string // ContainCgroup or ContainProcessGroup
	Memory string // "v2", "v1" or "": which memory controller limits an instance
	Pids   string // likewise for the pids controller
	// V2 is rs's subtree in the v2 hierarchy, relative to its mount ("" none).
	V2 string
}

// cgroups is rs's own subtree in each hierarchy it uses, set up once.
type cgroups struct {
	info   Info
	v2     string // directory of rs's v2 subtree, "" if none
	v1mem  string // directory of rs's subtree in the v1 memory hierarchy, "" if none
	v1pids string
	log    *slog.Logger
	// locks are the fds of rs's subtrees, each flock'd (LOCK_EX) for
	// rs's life: the mark another rs reads as "alive", whatever pid
	// namespace it sees (see ownSubtree).
	locks []int
}

var (
	cgOnce sync.Once
	cg     cgroups
	cgSeq  atomic.Uint64
)

// InitContainment finds the cgroup hierarchies from /proc/self/mountinfo,
// removes what an rs that was SIGKILLed left there (killing what still
// runs in its cgroups), and makes this rs's subtree. Start calls it on
// first use; rs calls it at start, before any service, with its logger.
// It is done once; later calls return the same Info.
func InitContainment(log *slog.Logger) Info {
	cgOnce.Do(func() {
		if log == nil {
			log = slog.Default()
		}
		cg = setupCgroups(log)
	})
	return cg.info
}

// Containment is InitContainment with the default logger.
func Containment() Info { return InitContainment(nil) }

// ReleaseContainment kills whatever is left in this rs's cgroups and
// removes them. rs calls it last, once every service has ended.
func ReleaseContainment() {
	InitContainment(nil)
	if cg.v2 != "" {
		killCgroup(cg.v2)
		removeTree(cg.v2)
	}
	for _, d := range []string{cg.v1mem, cg.v1pids} {
		if d != "" {
			removeTree(d)
		}
	}
	for _, fd := range cg.locks {
		unix.Close(fd)
	}
	cg.locks = nil
}

// subtreeName names rs's subtree by its pid, its start time (clock ticks
// since boot, /proc/<pid>/stat field 22) and its pid namespace (the
// inode of /proc/self/ns/pid): a later process with the same pid does
// not match, nor does an rs that is pid 1 of another namespace.
func subtreeName(pid int, start, pidNS uint64) string {
	return fmt.Sprintf("rs-%d-%d-%d", pid, start, pidNS)
}

// parseSubtree reads a subtree's name; pidNS is 0 in the name an rs
// before the namespace part gave (rs-<pid>-<start>).
func parseSubtree(name string) (pid int, start, pidNS uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, "rs-")
	if !ok {
		return 0, 0, 0, false
	}
	f := strings.Split(rest, "-")
	if len(f) != 2 && len(f) != 3 {
		return 0, 0, 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, 0, 0, false
	}
	if start, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return 0, 0, 0, false
	}
	if len(f) == 3 {
		if pidNS, err = strconv.ParseUint(f[2], 10, 64); err != nil || pidNS == 0 {
			return 0, 0, 0, false
		}
	}
	return pid, start, pidNS, true
}

// cgLocksEnv names, in the environment of an rs exec'd in place
// (Exec), the fds of its subtrees' flocks that crossed the exec.
const cgLocksEnv = "RS_PROC_CGROUP_LOCKS"

// containmentLocks are the fds of the subtrees' flocks (none before
// InitContainment).
func containmentLocks() []int {
	if cg.log == nil {
		return nil // not set up yet: nothing locked
	}
	return slices.Clone(cg.locks)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// inheritedLocks takes the flocks an earlier image of this rs kept across
// its exec in place ($RS_PROC_CGROUP_LOCKS, unset here): each a
// directory fd, given FD_CLOEXEC again so that no service inherits it.
// Anything else named there is left alone.
func inheritedLocks() []int {
	v, ok := os.LookupEnv(cgLocksEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(cgLocksEnv)
	var fds []int
	for _, f := range strings.Split(v, ",") {
		fd, err := strconv.Atoi(f)
		if err != nil || fd <= 2 {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		unix.CloseOnExec(fd)
		fds = append(fds, fd)
	}
	return fds
}

// initPidNS is the inode of the initial pid namespace (the kernel's
// PROC_PID_INIT_INO).
const initPidNS = 0xEFFFFFFC

// ownPidNS is the inode of rs's pid namespace, 0 if unknown.
func ownPidNS() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
}

// lockDir opens dir and takes its flock without waiting: held, it says
// that an rs owns dir. It returns unix.EWOULDBLOCK if another open of
// it holds the lock.
func lockDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// startTime is field 22 of /proc/<pid>/stat.
func startTime(pid string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	return statField(b, 22)
}

func alive(pid int, start uint64) bool {
	s, ok := startTime(strconv.Itoa(pid))
	return ok && s == start
}

type mount struct {
	root, point, fstype, super string
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseMountinfo returns the cgroup and cgroup2 mounts of a mountinfo.
func parseMountinfo(data []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		if t := f[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, mount{root: unescapeMount(f[3]), point: unescapeMount(f[4]), fstype: t, super: f[sep+3]})
		}
	}
	return out
}

// ownCgroups parses /proc/self/cgroup: the v2 path (the 0:: line) and the
// v1 path of each controller.
func ownCgroups(data []byte) (v2 string, hasV2 bool, v1 map[string]string) {
	v1 = map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctls, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && ctls == "" {
			v2, hasV2 = path, true
			continue
		}
		for _, c := range strings.Split(ctls, ",") {
			v1[c] = path
		}
	}
	return v2, hasV2, v1
}

// dirOf is the directory of cgroup path (as /proc/self/cgroup shows it)
// under mount m, or "" when the mount does not show it.
func dirOf(m mount, path string) string {
	rel := path
	if m.root != "/" {
		r, ok := strings.CutPrefix(path, m.root)
		if !ok || (r != "" && r[0] != '/') {
			return ""
		}
		rel = r
	}
	return filepath.Join(m.point, rel)
}

func hasOpt(super, opt string) bool {
	for _, o := range strings.Split(super, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

func setupCgroups(log *slog.Logger) cgroups {
	c := cgroups{info: Info{Mode: ContainProcessGroup}, log: log}
	c.locks = inheritedLocks() // held: makeSubtree finds its own subtrees locked by them
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		log.Warn("containment: process groups: cannot read mountinfo", "err", err)
		return c
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		log.Warn("containment: process groups: cannot read /proc/self/cgroup", "err", err)
		return c
	}
	start, ok := startTime("self")
	if !ok {
		log.Warn("containment: process groups: cannot read /proc/self/stat")
		return c
	}
	pidNS := ownPidNS()
	name := subtreeName(os.Getpid(), start, pidNS)
	v2path, hasV2, v1 := ownCgroups(self)
	mounts := parseMountinfo(mi)
	var v2mount, memMount, pidsMount *mount
	for i := range mounts {
		m := &mounts[i]
		switch {
		case m.fstype == "cgroup2" && v2mount == nil:
			v2mount = m
		case m.fstype == "cgroup" && hasOpt(m.super, "memory") && memMount == nil:
			memMount = m
		case m.fstype == "cgroup" && hasOpt(m.super, "pids") && pidsMount == nil:
			pidsMount = m
		}
	}
	if v2mount != nil && hasV2 {
		if dir := dirOf(*v2mount, v2path); dir != "" {
			if sub, err := c.makeSubtree(dir, name, pidNS, true); err != nil {
				log.Warn("containment: process groups: cannot make a cgroup v2 subtree", "dir", dir, "err", err)
			} else if _, err := os.Stat(filepath.Join(sub, "cgroup.kill")); err != nil {
				log.Warn("containment: process groups: cgroup v2 has no cgroup.kill (kernel before 5.14)", "dir", sub)
				os.Remove(sub)
			} else {
				c.v2 = sub
				c.info.Mode = ContainCgroup
				c.info.V2 = filepath.Join(v2path, name)
				c.enableV2(sub)
			}
		}
	} else {
		log.Info("containment: process groups: no cgroup v2 mounted")
	}
	if c.info.Memory == "" && memMount != nil {
		if p, ok := v1["memory"]; ok {
			if dir := dirOf(*memMount, p); dir != "" {
				if sub, err := c.makeSubtree(dir, name, pidNS, false); err == nil {
					c.v1mem, c.info.Memory = sub, ctlV1
				} else {
					log.Warn("containment: no cgroup v1 memory subtree", "dir", dir, "err", err)
				}
			}
		}
	}
	if c.info.Pids == "" && pidsMount != nil {
		if p, ok := v1["pids"]; ok {
			if dir := dirOf(*pidsMount, p); dir != "" {
				if sub, err := c.makeSubtree(dir, name, pidNS, false); err == nil {
					c.v1pids, c.info.Pids = sub, ctlV1
				} else {
					log.Warn("containment: no cgroup v1 pids subtree", "dir", dir, "err", err)
				}
			}
		}
	}
	log.Info("containment", "mode", c.info.Mode, "cgroup", c.info.V2, "memory", c.info.Memory, "pids", c.info.Pids)
	return c
}

// enableV2 hands the memory and pids controllers, where rs's own cgroup
// has them, down to the leaves. The subtree holds no process, so v2's
// rule against processes in a cgroup with controllers enabled holds.
func (c *cgroups) enableV2(sub string) {
	avail, err := os.ReadFile(filepath.Join(sub, "cgroup.controllers"))
	if err != nil {
		return
	}
	for _, ctl := range strings.Fields(string(avail)) {
		if ctl != "memory" && ctl != "pids" {
			continue
		}
		if err := writeFile(filepath.Join(sub, "cgroup.subtree_control"), "+"+ctl); err != nil {
			c.log.Warn("containment: cannot enable a v2 controller for the leaves", "controller", ctl, "err", err)
			continue
		}
		if ctl == "memory" {
			c.info.Memory = ctlV2
		} else {
			c.info.Pids = ctlV2
		}
	}
}

// makeSubtree removes, in dir, the subtrees of rs processes that are gone
// (after killing what still runs in them, for v2), then makes this rs's
// and locks it.
func (c *cgroups) makeSubtree(dir, name string, pidNS uint64, v2 bool) (string, error) {
	if err := removeLeftovers(c.log, dir, name, pidNS, v2); err != nil {
		return "", err
	}
	sub := filepath.Join(dir, name)
	if err := os.Mkdir(sub, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	fd, err := lockDir(sub)
	switch {
	case err == nil:
		c.locks = append(c.locks, fd)
	case errors.Is(err, unix.EWOULDBLOCK):
		// Its name is this process's: an earlier image of it (an rs
		// that exec'd itself in place) holds the lock on an fd it kept.
	default:
		os.Remove(sub)
		return "", fmt.Errorf("lock %s: %w", sub, err)
	}
	return sub, nil
}

// removeLeftovers removes the subtrees in dir of an rs that is gone: no
// rs holds its lock (lockDir), and, by its name, its rs is not alive in
// this pid namespace, or, from another namespace, it has cgroups under
// it (an rs locks its subtree before it makes any: an unlocked one of
// another namespace with none may be an rs's that is between its mkdir
// and its lock, and holds no process anyway). The names of an rs before
// the lock (no namespace part) are judged by their pid alone, as then,
// and only by an rs in the initial pid namespace: one in another cannot
// see the pids of the rs processes that most likely made them.
func removeLeftovers(log *slog.Logger, dir, self string, pidNS uint64, v2 bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		pid, start, ns, ok := parseSubtree(e.Name())
		if !ok || !e.IsDir() || e.Name() == self {
			continue
		}
		old := filepath.Join(dir, e.Name())
		if ns == 0 && pidNS != initPidNS {
			continue // an old name: its rs was most likely in the initial namespace, where rs cannot see
		}
		sameNS := ns == 0 || ns == pidNS
		if sameNS && alive(pid, start) {
			continue
		}
		if !sameNS && !hasSubdirs(old) {
			continue
		}
		fd, err := lockDir(old)
		if err != nil {
			continue // its rs is alive (EWOULDBLOCK), or it is gone already
		}
		killed := 0
		if v2 {
			killed = killCgroup(old)
		}
		err = removeTree(old)
		unix.Close(fd)
		log.Info("containment: removed the cgroups of an rs that is gone", "dir", old, "processes_killed", killed, "err", err)
	}
	return nil
}

// hasSubdirs reports whether dir has a directory in it (a cgroup).
func hasSubdirs(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.IsDir() {
			return true
		}
	}
	return false
}

// killCgroup kills every process in the v2 cgroup dir and its
// descendants, and waits (bounded) until cgroup.events says
// `populated 0`. It returns how many processes it found there.
func killCgroup(dir string) int {
	n := countProcs(dir)
	if err := writeFile(filepath.Join(dir, "cgroup.kill"), "1"); err != nil {
		return n
	}
	waitEmpty(dir, emptyBound)
	return n
}

func countProcs(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "cgroup.procs" {
			if b, err := os.ReadFile(p); err == nil {
				n += len(strings.Fields(string(b)))
			}
		}
		return nil
	})
	return n
}

// waitEmpty waits until the cgroup's `populated` reads 0, or d passes.
// cgroup.events signals a change with POLLPRI.
func waitEmpty(dir string, d time.Duration) bool {
	fd, err := unix.Open(filepath.Join(dir, "cgroup.events"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(d)
	var buf [256]byte
	for {
		n, err := unix.Pread(fd, buf[:], 0)
		if err != nil {
			return false
		}
		if v, ok := keyValue(buf[:n], "populated"); ok && v == 0 {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return false
		}
	}
}

// keyValue finds "key N" in a cgroup's flat-keyed file.
func keyValue(b []byte, key string) (uint64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// removeTree removes a cgroup and its descendants, deepest first. Only
// directories can be removed in a cgroup file system; its files go with
// their directory.
func removeTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	err = unix.Rmdir(dir)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

func writeFile(path, v string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(v)); err != nil {
		return fmt.Errorf("write %q to %s: %w", v, path, err)
	}
	return nil
}

// leaf is one instance's cgroups: a v2 leaf for containment and the v1
// leaves that hold limits where v2 does not.
type leaf struct {
	rel    string // v2 leaf relative to the v2 mount, as /proc/<pid>/cgroup shows it
	v2     string // v2 leaf directory, "" if none
	v2fd   int    // open v2 leaf for CLONE_INTO_CGROUP, -1 once closed
	v1mem  string // v1 memory leaf, "" if none
	v1pids string
	oomV2  bool // the OOM count is in the v2 leaf's memory.events
}

// leafName makes a cgroup name of a caller's name: only [A-Za-z0-9_.-].
func leafName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 {
		b = []byte("p")
	}
	return fmt.Sprintf("%s.%d", b, cgSeq.Add(1))
}

// newLeaf makes the cgroups of one instance and sets its memory (bytes)
// and pids limits there (0: none). It returns nil, nil where rs has no
// cgroup to put it in.
func newLeaf(name string, memory uint64, pids int) (*leaf, error) {
	c := &cg
	if c.v2 == "" && (memory == 0 || c.v1mem == "") && (pids == 0 || c.v1pids == "") {
		return nil, nil
	}
	l := &leaf{v2fd: -1}
	n := leafName(name)
	fail := func(err error) (*leaf, error) {
		l.remove()
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if c.v2 != "" {
		l.v2 = filepath.Join(c.v2, n)
		if err := os.Mkdir(l.v2, 0o755); err != nil {
			l.v2 = ""
			return fail(err)
		}
		l.rel = filepath.Join(c.info.V2, n)
		if memory > 0 && c.info.Memory == ctlV2 {
			if err := writeFile(filepath.Join(l.v2, "memory.max"), strconv.FormatUint(memory, 10)); err != nil {
				return fail(err)
			}
			// A limit that swap could stretch is no limit.
			_ = writeFile(filepath.Join(l.v2, "memory.swap.max"), "0")
		}
		if c.info.Memory == ctlV2 {
			l.oomV2 = true
		}
		if pids > 0 && c.info.Pids == ctlV2 {
			if err := writeFile(filepath.Join(l.v2, "pids.max"), strconv.Itoa(pids)); err != nil {
				return fail(err)
			}
		}
		fd, err := unix.Open(l.v2, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		l.v2fd = fd
	}
	if c.info.Memory == ctlV1 && memory > 0 {
		l.v1mem = filepath.Join(c.v1mem, n)
		if err := os.Mkdir(l.v1mem, 0o755); err != nil {
			l.v1mem = ""
			return fail(err)
		}
		if memory > 0 {
			if err := writeFile(filepath.Join(l.v1mem, "memory.limit_in_bytes"), strconv.FormatUint(memory, 10)); err != nil {
				return fail(err)
			}
			_ = writeFile(filepath.Join(l.v1mem, "memory.memsw.limit_in_bytes"), strconv.FormatUint(memory, 10))
		}
	}
	if c.info.Pids == ctlV1 && pids > 0 {
		l.v1pids = filepath.Join(c.v1pids, n)
		if err := os.Mkdir(l.v1pids, 0o755); err != nil {
			l.v1pids = ""
			return fail(err)
		}
		if err := writeFile(filepath.Join(l.v1pids, "pids.max"), strconv.Itoa(pids)); err != nil {
			return fail(err)
		}
	}
	return l, nil
}

// join puts pid into the leaf's v1 cgroups (v2 placed it at clone time).
func (l *leaf) join(pid int) error {
	for _, d := range []string{l.v1mem, l.v1pids} {
		if d != "" {
			if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
				return fmt.Errorf("cgroup: %w", err)
			}
		}
	}
	return nil
}

func (l *leaf) needsJoin() bool { return l != nil && (l.v1mem != "" || l.v1pids != "") }

func (l *leaf) closeFD() {
	if l != nil && l.v2fd >= 0 {
		unix.Close(l.v2fd)
		l.v2fd = -1
	}
}

// kill sends SIGKILL to everything in the v2 leaf.
func (l *leaf) kill() {
	if l != nil && l.v2 != "" {
		_ = writeFile(filepath.Join(l.v2, "cgroup.kill"), "1")
	}
}

// finish waits until the v2 leaf is empty, reads how many OOM kills the
// memory controller counted, and removes the leaf's cgroups.
func (l *leaf) finish() (oomKills int) {
	if l == nil {
		return 0
	}
	if l.v2 != "" {
		waitEmpty(l.v2, emptyBound)
	}
	switch {
	case l.oomV2:
		if b, err := os.ReadFile(filepath.Join(l.v2, "memory.events")); err == nil {
			if v, ok := keyValue(b, "oom_kill"); ok {
				oomKills = int(v)
			}
		}
	case l.v1mem != "":
		if b, err := os.ReadFile(filepath.Join(l.v1mem, "memory.oom_control")); err == nil {
			if v, ok := keyValue(b, "oom_kill"); ok {
				oomKills = int(v)
			}
		}
	}
	l.remove()
	return oomKills
}

func (l *leaf) remove() {
	l.closeFD()
	for _, d := range []string{l.v2, l.v1mem, l.v1pids} {
		if d != "" && unix.Rmdir(d) == unix.EBUSY {
			// A service with the rights made cgroups of its own inside.
			_ = removeTree(d)
		}
	}
}
