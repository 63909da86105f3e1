package rs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/logs"
)

// The table an rs hands the next image of itself across an exec in
// place (update-self, selfupdate.go): the service table with every fd
// rs holds for it by number (those fds cross the exec open). msgpack in
// a memfd, named by $RS_SELF_TABLE; $RS_SELF_OLD names an fd of the old
// binary, for the rollback. The format is versioned: an rs reads only
// the TableVersion it was built with and refuses any other.

// TableVersion is the version of the table's format this rs writes and
// reads.
const TableVersion = 1

// Environment of an exec in place.
const (
	EnvTable    = "RS_SELF_TABLE"    // the table's memfd
	EnvOldExe   = "RS_SELF_OLD"      // an fd of the binary of the rs that wrote it
	EnvRollback = "RS_SELF_ROLLBACK" // set on a rollback: why the new rs gave up
)

// maxTable bounds the table a new rs reads.
const maxTable = 64 << 20

// Table is what crosses the exec.
type Table struct {
	Version int    `msgpack:"version"`
	Token   string `msgpack:"token"` // the update-self request's
	Why     string `msgpack:"why"`   // "update-self", or the panic
	OldPath string `msgpack:"old_path"`
	NewPath string `msgpack:"new_path"`
	// Started is when the first rs of this pid started (its uptime).
	Started time.Time `msgpack:"started"`
	// Carry: fds of cmd/rs's own (the control socket, the metrics
	// listener), by name.
	Carry     map[string]int `msgpack:"carry"`
	NotifySeq uint64         `msgpack:"notify_seq"`
	Services  []tService     `msgpack:"services"` // in the order they were added
}

type tFD struct {
	Name string `msgpack:"name"`
	FD   int    `msgpack:"fd"`
}

// tService is one row of the table, with the policy's memory.
type tService struct {
	Spec        Spec          `msgpack:"spec"`
	Failed      bool          `msgpack:"failed"`
	Waiting     bool          `msgpack:"waiting"`
	RanOnce     bool          `msgpack:"ran_once"`
	StopWant    bool          `msgpack:"stop_want"`
	Fails       int           `msgpack:"fails"`
	History     []time.Time   `msgpack:"history"`
	WantStandby bool          `msgpack:"want_standby"`
	Restarts    int           `msgpack:"restarts"`
	LastExit    string        `msgpack:"last_exit"`
	StatusText  string        `msgpack:"status_text"`
	RTT         time.Duration `msgpack:"rtt"`
	FDStore     []tFD         `msgpack:"fdstore"`
	Listeners   []tFD         `msgpack:"listeners"`
	Log         *logs.Held    `msgpack:"log"`
	Primary     *tInstance    `msgpack:"primary"`
}

// tInstance is a running primary.
type tInstance struct {
	Proc         proc.Held `msgpack:"proc"`
	RunningSince time.Time `msgpack:"running_since"`
	PingSeq      uint64    `msgpack:"ping_seq"`
	PingOut      bool      `msgpack:"ping_out"`
	// sef: its channel, and the driver's memory of the exchange.
	Chan        int  `msgpack:"chan"`
	LUCancelled bool `msgpack:"lu_cancelled"`
	// notify: its socket.
	Notify   string `msgpack:"notify"`
	NotifyFD int    `msgpack:"notify_fd"`
}

// CarriedFD is the fd of rs's own named name (Options.Carry) that
// crossed the exec; false on a nil table or none of that name.
func (t *Table) CarriedFD(name string) (int, bool) {
	if t == nil {
		return 0, false
	}
	fd, ok := t.Carry[name]
	return fd, ok && fd > 2
}

// fds lists every fd the table names.
func (t *Table) fds() []int {
	var fds []int
	for _, fd := range t.Carry {
		fds = append(fds, fd)
	}
	for _, ts := range t.Services {
		for _, f := range append(ts.FDStore[:len(ts.FDStore):len(ts.FDStore)], ts.Listeners...) {
			fds = append(fds, f.FD)
		}
		if l := ts.Log; l != nil {
			fds = append(fds, l.OutR, l.OutW, l.ErrR, l.ErrW)
		}
		if p := ts.Primary; p != nil {
			if p.Chan >= 0 {
				fds = append(fds, p.Chan)
			}
			if p.NotifyFD >= 0 {
				fds = append(fds, p.NotifyFD)
			}
		}
	}
	return fds
}

// writeTable puts t in a new memfd (close-on-exec; the exec keeps it).
func writeTable(t *Table) (*os.File, error) {
	b, err := msgpack.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("table: %w", err)
	}
	fd, err := unix.MemfdCreate("rs-table", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("table: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "rs-table")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("table: %w", err)
	}
	return f, nil
}

// ErrTableVersion: the table was written by an rs of another format.
var ErrTableVersion = errors.New("table version not understood")

// ReadTable reads the table from the memfd fd (a number, as the
// environment or --check-table gives it), from its start, without
// taking the fd.
func ReadTable(fd string) (*Table, error) {
	n, err := strconv.Atoi(fd)
	if err != nil || n < 3 {
		return nil, fmt.Errorf("table fd %q: not an fd", fd)
	}
	var b bytes.Buffer
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		k, err := unix.Pread(n, buf, off)
		if k > 0 {
			b.Write(buf[:k])
			off += int64(k)
			if b.Len() > maxTable {
				return nil, fmt.Errorf("table: over %d bytes", maxTable)
			}
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("table: read fd %d: %w", n, err)
		}
		if k == 0 {
			break
		}
	}
	return decodeTable(b.Bytes())
}

func decodeTable(b []byte) (*Table, error) {
	// The version first, alone: a table of another version may not
	// decode as this one's at all.
	var head struct {
		Version int `msgpack:"version"`
	}
	if err := msgpack.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("table: %w", err)
	}
	if head.Version != TableVersion {
		return nil, fmt.Errorf("%w: version %d (this rs reads %d)", ErrTableVersion, head.Version, TableVersion)
	}
	var t Table
	if err := msgpack.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("table: %w", err)
	}
	return &t, nil
}

// CheckTable is `rs --check-table FD`: can this binary read the table?
// It writes one line to w.
func CheckTable(fd string, w io.Writer) error {
	t, err := ReadTable(fd)
	if err != nil {
		return err
	}
	running := 0
	for _, s := range t.Services {
		if s.Primary != nil {
			running++
		}
	}
	fmt.Fprintf(w, "table version %d: %d services, %d running\n", t.Version, len(t.Services), running)
	return nil
}

// rawFD is f's descriptor, without making f blocking (as Fd would: a
// socket shared with a service would turn blocking for it too).
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// adoptFile takes an fd that crossed the exec: close-on-exec again.
func adoptFile(fd int, name string) *os.File {
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), name)
}
