package msg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ProtocolVersion is the version carried by init; sef refuses any other.
const ProtocolVersion = 1

// Size limits. A packet larger than MaxPacket is a fault of its sender;
// large payloads (a service's state) travel as a memfd instead.
const (
	MaxPacket = 64 << 10
	MaxFDs    = 253 // SCM_MAX_FD
	MaxString = 4096
	MaxNames  = MaxFDs
	// MaxStoredFDs bounds a service's fd store in rs; sef refuses to
	// store more, rs takes a service that does for faulty.
	MaxStoredFDs = 64
)

// Kind says what a message is. Each request kind has its reply kind next
// to it; the package doc draws the sequences.
type Kind uint8

const (
	KindInit       Kind = 1  // rs → service: init type, label, restarts; fd store attached
	KindInitResult Kind = 2  // service → rs: Err empty on success
	KindPing       Kind = 3  // rs → service: Seq
	KindPong       Kind = 4  // service → rs: the same Seq
	KindLUPrepare  Kind = 5  // rs → service: State, MaxTime
	KindLUReady    Kind = 6  // service → rs: Err, or state memfd and fds attached
	KindLUCancel   Kind = 7  // rs → service: resume normal work
	KindStop       Kind = 8  // rs → service: stop gracefully and exit 0
	KindFDStore    Kind = 9  // service → rs: keep the attached fd under Names[0]
	KindLUCommit   Kind = 10 // rs → a new instance held after its init (Hold): the update took, serve
	KindStandby    Kind = 11 // reserved: rs → standby instance, take over
	KindHello      Kind = 12 // service → rs: first message, exec and start-up done; PreCopy
	KindLUBase     Kind = 13 // rs → new instance in hello: the pre-copy base stream's read end attached
	KindLUBaseDone Kind = 14 // service → rs: the base stream is written (Base bytes); preparing goes on
	kindMax             = KindLUBaseDone
)

var kindNames = [...]string{
	KindInit:       "init",
	KindInitResult: "init-result",
	KindPing:       "ping",
	KindPong:       "pong",
	KindLUPrepare:  "lu-prepare",
	KindLUReady:    "lu-ready",
	KindLUCancel:   "lu-cancel",
	KindStop:       "stop",
	KindFDStore:    "fd-store",
	KindLUCommit:   "lu-commit",
	KindStandby:    "standby",
	KindHello:      "hello",
	KindLUBase:     "lu-base",
	KindLUBaseDone: "lu-base-done",
}

func (k Kind) String() string {
	if k >= 1 && k <= kindMax {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// FromService tells whether k is a kind a service may send.
func (k Kind) FromService() bool {
	switch k {
	case KindInitResult, KindPong, KindLUReady, KindFDStore, KindHello, KindLUBaseDone:
		return true
	}
	return false
}

// InitType says why an instance is being initialised.
type InitType uint8

const (
	InitFresh      InitType = 1 // first start
	InitRestart    InitType = 2 // reincarnation after a crash, hang or restart
	InitLiveUpdate InitType = 3 // new version taking over from an old instance
)

func (t InitType) String() string {
	switch t {
	case InitFresh:
		return "fresh"
	case InitRestart:
		return "restart"
	case InitLiveUpdate:
		return "live-update"
	}
	return fmt.Sprintf("init-type(%d)", uint8(t))
}

// Message is every message of the channel; which fields mean something
// depends on Kind. Names name the fds attached to the same packet, in order.
type Message struct {
	Kind     Kind     `msgpack:"k"`
	Seq      uint64   `msgpack:"q,omitempty"`
	Version  uint16   `msgpack:"v,omitempty"`
	InitType InitType `msgpack:"t,omitempty"`
	Label    string   `msgpack:"l,omitempty"`
	Restarts uint32   `msgpack:"r,omitempty"`
	State    uint32   `msgpack:"s,omitempty"`
	MaxTime  int64    `msgpack:"m,omitempty"` // nanoseconds
	Err      string   `msgpack:"e,omitempty"`
	Names    []string `msgpack:"n,omitempty"`
	// NotTaken, in a live update's init-result: what the new instance was
	// handed and did not take (NotTakenState, NotTakenFDs). Absent from
	// a sef that predates it, which rs reads as everything taken.
	NotTaken []string `msgpack:"u,omitempty"`
	// Hold, in a live update's init: once its init succeeded the new
	// instance holds (accepts nothing, reads no handed-over connection,
	// delivers no work) until lu-commit, so that a rollback loses
	// nothing it answered; in that init's init-result: the instance
	// holds. Absent (false) is the instance serving from its init on.
	// rs asks it only of a group update's members; a sef that predates
	// it cannot decode such an init (an unknown field) and fails it.
	Hold bool `msgpack:"h,omitempty"`
	// PreCopy, in hello: the service can stream a pre-copy base as an
	// old instance and load one as a new instance (sef's LUBaseStart and
	// LUBaseLoad). Sent only when true.
	PreCopy bool `msgpack:"p,omitempty"`
	// Base, in lu-base-done: the bytes of the base stream written.
	Base uint64 `msgpack:"b,omitempty"`
}

// BaseFD names the pre-copy pipe's end attached to lu-prepare (the
// write end) and to lu-base (the read end).
const BaseFD = "base"

// What a live update's init-result may list in NotTaken.
const (
	NotTakenState = "state" // the state memfd and the fds handed with it: no restore ran
	NotTakenFDs   = "fds"   // the fd store's fds: no init callback ran
)

// Errors of decoding and of the channel. All of them make the sender faulty.
var (
	ErrMalformed   = errors.New("malformed message")
	ErrOversized   = errors.New("oversized message")
	ErrUnknownKind = errors.New("unknown message kind")
	ErrTooManyFDs  = errors.New("too many fds")
	ErrFDMismatch  = errors.New("fds do not match their names")
)

// Encode returns the packet for m.
func Encode(m *Message) ([]byte, error) {
	if seq, ok := m.heartbeat(); ok {
		return appendHeartbeat(make([]byte, 0, heartbeatMax), m.Kind, seq), nil
	}
	if err := m.Validate(-1); err != nil {
		return nil, err
	}
	b, err := msgpack.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Kind, err)
	}
	if len(b) > MaxPacket {
		return nil, fmt.Errorf("encode %s: %d bytes: %w", m.Kind, len(b), ErrOversized)
	}
	return b, nil
}

// Decode parses one packet that arrived with nfds fds. Whatever the input,
// it returns a valid message or an error wrapping one of the sentinels.
func Decode(b []byte, nfds int) (Message, error) {
	var m Message
	if len(b) > MaxPacket {
		return m, fmt.Errorf("%d bytes: %w", len(b), ErrOversized)
	}
	if nfds == 0 {
		if m, ok := decodeHeartbeat(b); ok {
			return m, nil
		}
	}
	return decodeGeneral(b, nfds)
}

// decodeGeneral is Decode without the heartbeat shortcut.
func decodeGeneral(b []byte, nfds int) (Message, error) {
	var m Message
	if err := Scan(b); err != nil {
		return m, err
	}
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.Len() != 0 {
		return Message{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, r.Len())
	}
	// msgpack truncates an integer to its field's width: 65537 would
	// read as version 1, kind 260 as a pong.
	if err := CheckFit(b, &m); err != nil {
		return Message{}, err
	}
	if err := m.Validate(nfds); err != nil {
		return Message{}, err
	}
	return m, nil
}

// Validate checks the fields that Kind requires. nfds < 0 skips the check
// of attached fds against Names.
func (m *Message) Validate(nfds int) error {
	if m.Kind < 1 || m.Kind > kindMax {
		return fmt.Errorf("%w: %d", ErrUnknownKind, m.Kind)
	}
	if len(m.Label) > MaxString || len(m.Err) > MaxString {
		return fmt.Errorf("%w: %s: string too long", ErrMalformed, m.Kind)
	}
	if len(m.Names) > MaxNames {
		return fmt.Errorf("%w: %s: %d names", ErrTooManyFDs, m.Kind, len(m.Names))
	}
	for _, n := range m.Names {
		if n == "" || len(n) > 255 {
			return fmt.Errorf("%w: %s: bad fd name", ErrMalformed, m.Kind)
		}
	}
	if len(m.NotTaken) > 0 {
		if m.Kind != KindInitResult || len(m.NotTaken) > 2 {
			return fmt.Errorf("%w: %s: not-taken list", ErrMalformed, m.Kind)
		}
		for _, w := range m.NotTaken {
			if w != NotTakenState && w != NotTakenFDs {
				return fmt.Errorf("%w: %s: not-taken %q", ErrMalformed, m.Kind, w)
			}
		}
	}
	if m.Hold && m.Kind != KindInitResult && (m.Kind != KindInit || m.InitType != InitLiveUpdate) {
		return fmt.Errorf("%w: %s: hold outside a live update's init", ErrMalformed, m.Kind)
	}
	if nfds >= 0 && nfds != len(m.Names) {
		return fmt.Errorf("%w: %s: %d fds, %d names", ErrFDMismatch, m.Kind, nfds, len(m.Names))
	}
	switch m.Kind {
	case KindInit:
		if m.InitType < InitFresh || m.InitType > InitLiveUpdate {
			return fmt.Errorf("%w: init: type %d", ErrMalformed, m.InitType)
		}
		if m.Version == 0 {
			return fmt.Errorf("%w: init: no version", ErrMalformed)
		}
	case KindHello:
		if m.Version == 0 {
			return fmt.Errorf("%w: hello: no version", ErrMalformed)
		}
	case KindPing, KindPong:
		if m.Seq == 0 {
			return fmt.Errorf("%w: %s: no sequence number", ErrMalformed, m.Kind)
		}
	case KindLUPrepare:
		if m.State == 0 || m.MaxTime <= 0 {
			return fmt.Errorf("%w: lu-prepare: state %d, maxtime %d", ErrMalformed, m.State, m.MaxTime)
		}
	case KindFDStore:
		if len(m.Names) != 1 {
			return fmt.Errorf("%w: fd-store: %d names, want 1", ErrMalformed, len(m.Names))
		}
	case KindLUBase:
		if len(m.Names) != 1 || m.Names[0] != BaseFD {
			return fmt.Errorf("%w: lu-base: names %q, want [%q]", ErrMalformed, m.Names, BaseFD)
		}
	}
	if m.PreCopy && m.Kind != KindHello {
		return fmt.Errorf("%w: %s: pre-copy flag outside hello", ErrMalformed, m.Kind)
	}
	if m.Kind == KindLUPrepare && len(m.Names) > 0 && (len(m.Names) != 1 || m.Names[0] != BaseFD) {
		return fmt.Errorf("%w: lu-prepare: names %q, want none or [%q]", ErrMalformed, m.Names, BaseFD)
	}
	if len(m.Names) > 0 {
		switch m.Kind {
		case KindInit, KindLUReady, KindFDStore, KindStandby, KindLUPrepare, KindLUBase:
		default:
			return fmt.Errorf("%w: %s carries no fds", ErrFDMismatch, m.Kind)
		}
	}
	return nil
}

// Pings and pongs are nearly all the traffic: one of each per service per
// period. They skip msgpack's reflection both ways. The encoding is the
// map {k: kind, q: seq}, which the general decoder reads the same (the
// tests hold both paths to it); decodeHeartbeat takes only the shapes
// below and leaves anything else to the general decoder.
const heartbeatMax = 16

// heartbeat tells whether m is a valid ping or pong and nothing else.
func (m *Message) heartbeat() (uint64, bool) {
	if m.Kind != KindPing && m.Kind != KindPong || m.Seq == 0 {
		return 0, false
	}
	if m.Version != 0 || m.InitType != 0 || m.Label != "" || m.Restarts != 0 ||
		m.State != 0 || m.MaxTime != 0 || m.Err != "" || m.Names != nil || m.NotTaken != nil || m.Hold ||
		m.PreCopy || m.Base != 0 {
		return 0, false
	}
	return m.Seq, true
}

func appendHeartbeat(b []byte, k Kind, seq uint64) []byte {
	b = append(b, 0x82, 0xa1, 'k', byte(k), 0xa1, 'q', 0xcf)
	return binary.BigEndian.AppendUint64(b, seq)
}

// decodeHeartbeat reads {k: 3|4, q: seq > 0} with k a positive fixint
// or uint8 and q any unsigned msgpack integer, and nothing after it.
func decodeHeartbeat(b []byte) (Message, bool) {
	if len(b) < 7 || b[0] != 0x82 || b[1] != 0xa1 || b[2] != 'k' {
		return Message{}, false
	}
	i := 3
	if b[i] == 0xcc {
		i++
	}
	k := Kind(b[i])
	i++
	if k != KindPing && k != KindPong || len(b) < i+3 || b[i] != 0xa1 || b[i+1] != 'q' {
		return Message{}, false
	}
	i += 2
	var seq uint64
	switch rest := b[i+1:]; {
	case b[i] <= 0x7f && len(rest) == 0:
		seq = uint64(b[i])
	case b[i] == 0xcc && len(rest) == 1:
		seq = uint64(rest[0])
	case b[i] == 0xcd && len(rest) == 2:
		seq = uint64(binary.BigEndian.Uint16(rest))
	case b[i] == 0xce && len(rest) == 4:
		seq = uint64(binary.BigEndian.Uint32(rest))
	case b[i] == 0xcf && len(rest) == 8:
		seq = binary.BigEndian.Uint64(rest)
	default:
		return Message{}, false
	}
	if seq == 0 {
		return Message{}, false
	}
	return Message{Kind: k, Seq: seq}, true
}
