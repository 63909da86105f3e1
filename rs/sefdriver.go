package rs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/proc"
)

// sefDriver speaks sef's protocol (package msg) with one instance over
// its channel. It checks the order of what the instance sends (hello
// first, nothing before its init, one init-result, pongs in sequence,
// lu-ready only when asked) and reports the rest as signals.
type sefDriver struct {
	conn *msg.Conn
	// Set before the Mux reads the channel and never changed: the Mux's
	// goroutine reads them too.
	inst *instance
	proc *proc.Process

	hello      bool   // it said hello
	initSent   bool   // rs gave it its init
	initResult bool   // it answered its init
	pingSeq    uint64 // the ping it owes a pong for
	pingOut    bool
	luAsked    bool // asked to prepare; no verdict (stop or lu-cancel) sent yet
	luReady    bool // and it answered with its state
	preCopy    bool // its hello said it can stream and load a pre-copy base
	luBase     bool // asked to prepare with a base stream; no lu-base-done yet
	// baseCrossing: lu-cancel went out before its lu-base-done came; one
	// crossing lu-base-done is expected and dropped.
	baseCrossing bool
	// luCancelled: lu-cancel went out before its lu-ready came; one
	// crossing lu-ready is expected and dropped.
	luCancelled bool
	// hold: the next init asks the instance to hold until lu-commit
	// (holder); only a live update's init carries it.
	hold bool
}

// newSefDriver makes the channel of a new instance: the driver holds rs's
// end; child is the end the process gets, with the environment entry
// that names it there, fd in the process (after its listeners).
// The caller closes child once the process has started.
func newSefDriver(fd int) (d *sefDriver, child *os.File, env string, err error) {
	mine, theirs, err := msg.Pair()
	if err != nil {
		return nil, nil, "", err
	}
	conn, err := msg.NewConn(mine)
	if err == nil {
		// Stamped packets: a ping's round trip then leaves out the time
		// its pong waited for rs to read it, which at a thousand services
		// is rs's own queueing, not the service's answer.
		if err = conn.EnableTimestamps(); err != nil {
			conn.Close()
		}
	}
	if err != nil {
		theirs.Close()
		return nil, nil, "", err
	}
	return &sefDriver{conn: conn}, theirs, msg.ChildEnv(fd), nil
}

// attach has rs's mux read the channel for inst, on the loop once the process
// runs.
func (d *sefDriver) attach(s *Server, inst *instance) error {
	d.inst = inst
	if s.mux == nil {
		return s.muxErr
	}
	return s.mux.Add(d.conn, d)
}

// handle checks one message from the instance against the protocol.
func (d *sefDriver) handle(m msg.Message, files []*os.File, at time.Time) signal {
	fault := func(err error) signal {
		return signal{kind: sigFault, reason: "faulty", err: err, files: files}
	}
	switch {
	case !m.Kind.FromService():
		return fault(fmt.Errorf("sent %s, which only rs sends", m.Kind))
	case !d.hello && m.Kind != msg.KindHello:
		return fault(fmt.Errorf("sent %s before hello", m.Kind))
	case !d.initSent && m.Kind != msg.KindHello:
		return fault(fmt.Errorf("sent %s before its init", m.Kind))
	}
	switch m.Kind {
	case msg.KindHello:
		if d.hello || m.Version != msg.ProtocolVersion {
			return fault(fmt.Errorf("hello out of sequence or protocol version %d (rs speaks %d)", m.Version, msg.ProtocolVersion))
		}
		d.hello, d.preCopy = true, m.PreCopy
		return signal{kind: sigHello}
	case msg.KindLUBaseDone:
		if d.baseCrossing && !d.luBase {
			d.baseCrossing = false
			return signal{kind: sigNone}
		}
		if !d.luAsked || !d.luBase {
			return fault(errors.New("unexpected lu-base-done"))
		}
		d.luBase = false
		return signal{kind: sigBaseDone, bytes: m.Base}
	case msg.KindFDStore:
		return signal{kind: sigStoreFD, names: m.Names, files: files}
	case msg.KindInitResult:
		if d.initResult {
			return fault(errors.New("second init-result"))
		}
		d.initResult = true
		if m.Err != "" {
			return signal{kind: sigInitFailed, err: errors.New(m.Err)}
		}
		var left []string
		for _, w := range m.NotTaken {
			switch w {
			case msg.NotTakenState:
				left = append(left, leftState)
			case msg.NotTakenFDs:
				left = append(left, leftFDs)
			}
		}
		return signal{kind: sigReady, left: left, held: d.hold && m.Hold}
	case msg.KindPong:
		if !d.pingOut || m.Seq != d.pingSeq {
			return fault(fmt.Errorf("pong %d out of sequence (expected %d)", m.Seq, d.pingSeq))
		}
		d.pingOut = false
		return signal{kind: sigAlive, at: at}
	case msg.KindLUReady:
		switch {
		case d.luAsked && !d.luReady:
			if m.Err != "" {
				d.luAsked = false // it resumed by itself
				return signal{kind: sigRefused, err: errors.New(m.Err), files: files}
			}
			if len(files) == 0 || m.Names[0] != "state" {
				return fault(errors.New("lu-ready without its state"))
			}
			d.luReady = true
			return signal{kind: sigState, names: m.Names, files: files}
		case d.luCancelled:
			// It got ready just as rs cancelled; the cancel resumes it.
			d.luCancelled = false
			return signal{kind: sigNone, files: files}
		}
		return fault(errors.New("unexpected lu-ready"))
	}
	return fault(fmt.Errorf("unexpected %s", m.Kind))
}

func (d *sefDriver) init(kind initKind, label string, restarts int, names []string, files []*os.File) error {
	typ := msg.InitFresh
	switch kind {
	case initRestart:
		typ = msg.InitRestart
	case initUpdate:
		typ = msg.InitLiveUpdate
	}
	err := d.send(&msg.Message{Kind: msg.KindInit, Version: msg.ProtocolVersion, InitType: typ,
		Label: label, Restarts: uint32(restarts), Names: names, Hold: d.hold && typ == msg.InitLiveUpdate}, files...)
	if err == nil {
		d.initSent = true
	}
	return err
}

func (d *sefDriver) holdNext() { d.hold = true }

func (d *sefDriver) release() error { return d.send(&msg.Message{Kind: msg.KindLUCommit}) }

func (d *sefDriver) ping(seq uint64) error {
	d.pingSeq, d.pingOut = seq, true
	return d.send(&msg.Message{Kind: msg.KindPing, Seq: seq})
}

func (d *sefDriver) prepare(state int, maxTime time.Duration) error {
	if err := d.send(&msg.Message{Kind: msg.KindLUPrepare, State: uint32(state), MaxTime: int64(maxTime)}); err != nil {
		return err
	}
	d.luAsked, d.luReady, d.luBase, d.baseCrossing = true, false, false, false
	return nil
}

func (d *sefDriver) cancel() error {
	if !d.luAsked {
		return nil // it refused by itself, or was never asked
	}
	d.luAsked, d.luCancelled, d.baseCrossing, d.luBase = false, !d.luReady, d.luBase, false
	return d.send(&msg.Message{Kind: msg.KindLUCancel})
}

func (d *sefDriver) stop() error { return d.send(&msg.Message{Kind: msg.KindStop}) }

// close closes rs's end; the Mux forgets it.
func (d *sefDriver) close() { d.conn.Close() }

// send never waits: a full channel is a service that does not read it.
func (d *sefDriver) send(m *msg.Message, files ...*os.File) error {
	err := d.conn.TrySend(m, files...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, msg.ErrWouldBlock):
		return errDeaf
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return errPeerGone
	}
	return err
}
