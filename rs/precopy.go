package rs

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
)

// Pre-copy (issue 15, after Clark et al., NSDI 2005): when both
// instances of an update said in their hello that they can (sef's
// LUBaseStart and LUBaseLoad), rs makes a pipe and hands its write end
// to the old instance with lu-prepare, its read end to the new one
// (lu-base, while it waits in hello). The old instance streams a base
// snapshot of its state into it while it serves; the new one loads it
// meanwhile; the memfd at lu-ready then holds only the delta. rs never
// reads the pipe: it only makes it, hands it out and closes its own
// ends, off the loop. Either instance failing is the update's rollback
// as ever.
//
// maxtime is the bound of the pause clients see, so it counts from the
// end of the base (lu-base-done), not from lu-prepare; the base itself
// is bounded by baseTime(maxtime).

// preCopier is a driver whose protocol carries a pre-copy (sef's).
type preCopier interface {
	// canPreCopy: the instance said it can stream and load a base.
	canPreCopy() bool
	// preload hands the new instance the base stream's read end.
	preload(r *os.File) error
	// prepareBase is prepare with the base stream's write end.
	prepareBase(state int, maxTime time.Duration, w *os.File) error
}

// MinBaseTime is the least time a pre-copy base may take to stream;
// the bound is 30 times the update's maxtime when that is longer.
const MinBaseTime = 60 * time.Second

func baseTime(maxTime time.Duration) time.Duration { return max(MinBaseTime, 30*maxTime) }

// basePipeSize is what rs asks of the kernel for the base pipe: fewer
// wake-ups for both instances than the default 64 KiB.
const basePipeSize = 1 << 20

// prepareOld asks the old instance to prepare: with a pre-copy base if
// both instances can, else as ever.
func (s *Server) prepareOld(u *update) error {
	oldPC, ok := u.old.drv.(preCopier)
	newPC, ok2 := u.new.drv.(preCopier)
	if !ok || !ok2 || !oldPC.canPreCopy() || !newPC.canPreCopy() {
		return u.old.drv.prepare(u.state, u.maxTime)
	}
	r, w, err := basePipe()
	if err != nil {
		s.log.Warn("update: no pre-copy pipe; the whole state moves in the pause", "label", u.svc.spec.Label, "err", err)
		return u.old.drv.prepare(u.state, u.maxTime)
	}
	defer s.closeHeld(u.svc, r, w) // the instances hold their own copies
	if err := newPC.preload(r); err != nil {
		s.log.Warn("update: cannot hand the new instance the pre-copy base; the whole state moves in the pause",
			"label", u.svc.spec.Label, "err", err)
		return u.old.drv.prepare(u.state, u.maxTime)
	}
	if err := oldPC.prepareBase(u.state, u.maxTime, w); err != nil {
		return err
	}
	u.base = true
	return nil
}

// basePipe makes the pre-copy pipe, grown if the kernel lets it.
func basePipe() (r, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, basePipeSize) // a small pipe still works
	return os.NewFile(uintptr(p[0]), "lu-base-r"), os.NewFile(uintptr(p[1]), "lu-base-w"), nil
}

// baseDone: the old instance wrote its whole base (n bytes) and now
// heads for the state; maxtime starts now.
func (s *Server) baseDone(u *update, n uint64) {
	u.baseDoneAt = time.Now()
	u.baseBytes = n
	s.arm(u, tUpdate, u.maxTime)
	u.progress(fmt.Sprintf("pre-copy base streamed: %s in %v while the old instance served; maxtime %v starts now",
		byteSize(n), u.baseDoneAt.Sub(u.prepareAt).Round(time.Microsecond), u.maxTime))
}

// byteSize spells n bytes for an operator.
func byteSize(n uint64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func (d *sefDriver) canPreCopy() bool { return d.preCopy }

func (d *sefDriver) preload(r *os.File) error {
	return d.send(&msg.Message{Kind: msg.KindLUBase, Names: []string{msg.BaseFD}}, r)
}

func (d *sefDriver) prepareBase(state int, maxTime time.Duration, w *os.File) error {
	if err := d.send(&msg.Message{Kind: msg.KindLUPrepare, State: uint32(state), MaxTime: int64(maxTime),
		Names: []string{msg.BaseFD}}, w); err != nil {
		return err
	}
	d.luAsked, d.luReady, d.luBase, d.baseCrossing = true, false, true, false
	return nil
}
