package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"runtime"
	"unsafe"
)

// Pre-copy (sef's LUBaseStart and LUBaseLoad): while rs streams an
// update's base, the old kv writes its map in steps between requests,
// a few thousand keys a step, and records every key written or deleted
// since the base began (store.rec); the new kv builds its map from the
// base meanwhile. At the quiescent point the state holds only the delta:
// the recorded keys' values now, or their deletion, and whether a
// FLUSHALL came (the new kv then drops its base first). A key that
// changed while the base streamed may be in the base with any of its
// values, or not at all: the delta has its last word.

// The base format, inside sef's framing: baseMagic, the count of shards
// and each shard's count of keys when the base began, then batches,
// each its length and then (key, value) pairs, and a batch of length 0
// to end. The counts let the new kv size its maps as it loads (shardSizer):
// inserting a million keys into 64 maps on one P (as the load runs)
// took 463 ms and 167 MB growing them, 132 ms and 84 MB made to size (a
// Go benchmark, 2026-12-03), and that CPU is taken from the old instance
// while it serves. A base of an older kv (baseMagicV1) has no counts and
// loads the same, only slower.
//
// The delta: deltaMagic, the reset flag, then the count of changes, each
// an op (1 set, 0 delete), the key and for a set the value; the
// connections follow as in a whole state.
const (
	baseMagic   = "kv-base-2\n"
	baseMagicV1 = "kv-base-1\n" // no shard counts
	deltaMagic  = "kv-delta-1\n"
	// The shard counts are the other instance's: a count of shards above
	// maxBaseShards is an error, and counts that add up to more than
	// maxPresize keys size nothing (the maps grow as they load).
	maxBaseShards = 1 << 12
	maxPresize    = 1 << 24
	// A step writes at most stepBytes, a batch is about as large; the
	// loader takes one of at most maxBaseBatch bytes (one large value may
	// make a batch exceed stepBytes).
	stepBytes    = 128 << 10
	maxBaseBatch = 1 << 30
)

// changes is what changed since a base began.
type changes struct {
	keys  map[string]struct{}
	reset bool // FLUSHALL: everything before the reset is gone
}

// snapshot is a base being written. The main loop walks the map with an
// iterator kept across steps and copies only the next stepPairs entries'
// string headers into a buffer (it touches no key's bytes, and
// allocates nothing); a goroutine encodes the buffer off the loop and
// wakes the loop (s.Reached), and a later step writes the encoded batch.
// A few buffers keep both busy. Strings never change, so the encoder reads
// them safely. A key changed after the iterator passed it is a recorded
// change: the delta has it.
type snapshot struct {
	st    *store
	shard int
	next  func() (string, string, bool)
	stop  func()
	ended bool // every shard walked

	free    chan []pair // buffers for the next entries
	todo    chan []pair // to the encoder; closed at the end or the drop
	encoded chan []byte // batches ready to write
	spare   chan []byte // batches written, for reuse
	out     int         // buffers with the encoder or in encoded
	closed  bool        // todo is closed
	begun   bool
}

type pair struct{ k, v string }

// stepPairs is how many entries a step takes from the map; snapBuffers
// how many such buffers go round between the loop and the encoder.
const (
	stepPairs   = 1024
	snapBuffers = 4
)

// startBase begins the base of st: from now on st records its changes.
// wake wakes the main loop (sef's Reached) when a batch is encoded.
func startBase(st *store, wake func()) *snapshot {
	st.rec = &changes{keys: map[string]struct{}{}}
	sn := &snapshot{st: st, shard: -1, free: make(chan []pair, snapBuffers), todo: make(chan []pair, snapBuffers),
		encoded: make(chan []byte, snapBuffers), spare: make(chan []byte, snapBuffers)}
	for range snapBuffers {
		sn.free <- make([]pair, 0, stepPairs)
	}
	go sn.encoder(wake)
	return sn
}

// step writes an encoded batch if one is ready, and hands the encoder the
// next entries if a buffer is free; when it did neither, sef waits for
// the encoder's wake-up.
func (sn *snapshot) step(w io.Writer) (bool, error) {
	if !sn.begun {
		sn.begun = true
		var e stateEncoder
		e.str(baseMagic)
		e.uint(storeShards)
		for _, m := range sn.st.shards {
			e.uint(uint64(len(m)))
		}
		if err := e.flush(w); err != nil {
			return false, err
		}
	}
	select {
	case b := <-sn.encoded:
		sn.out--
		_, err := w.Write(b) // sef copies it
		select {
		case sn.spare <- b[:0]:
		default: // enough spares
		}
		if err != nil {
			return false, err
		}
	default:
	}
	if !sn.ended {
		select {
		case buf := <-sn.free:
			buf = sn.fill(buf[:0])
			if len(buf) > 0 {
				sn.out++
				sn.todo <- buf // never blocks: as many places as buffers
			} else {
				sn.free <- buf
			}
		default:
		}
	}
	if !sn.ended || sn.out > 0 {
		return false, nil
	}
	sn.closed = true
	close(sn.todo)
	var e stateEncoder
	e.uint(0) // the end
	return true, e.flush(w)
}

// fill takes the next entries of the map into buf.
func (sn *snapshot) fill(buf []pair) []pair {
	for len(buf) < stepPairs {
		if sn.next == nil {
			if sn.shard+1 >= storeShards {
				sn.ended = true
				break
			}
			sn.shard++
			sn.next, sn.stop = iter.Pull2(maps.All(sn.st.shards[sn.shard]))
		}
		k, v, ok := sn.next()
		if !ok {
			sn.stop()
			sn.next, sn.stop = nil, nil
			continue
		}
		buf = append(buf, pair{k, v})
	}
	return buf
}

// encoder turns buffers of entries into batches, until todo closes.
func (sn *snapshot) encoder(wake func()) {
	var body stateEncoder
	for buf := range sn.todo {
		body.b = body.b[:0]
		for _, p := range buf {
			body.str(p.k)
			body.str(p.v)
		}
		clear(buf) // the strings are the map's, not the buffer's
		var out stateEncoder
		select {
		case out.b = <-sn.spare:
		default:
		}
		out.uint(uint64(len(body.b)))
		out.b = append(out.b, body.b...)
		sn.free <- buf[:0]
		sn.encoded <- out.b
		wake()
		// The main loop serves clients meanwhile and must not wait for
		// a P behind this goroutine: yield after each batch.
		runtime.Gosched()
	}
}

// drop ends the snapshot, written or not, and the record of changes:
// the update is over (committed processes exit; this is the rollback).
// The encoder ends once todo is closed.
func (sn *snapshot) drop() {
	if sn.stop != nil {
		sn.stop()
		sn.next, sn.stop = nil, nil
	}
	if !sn.closed {
		sn.closed, sn.ended = true, true
		close(sn.todo)
	}
	sn.st.rec = nil
}

// saveDelta writes what changed since the base began.
func (srv *server) saveDelta(w io.Writer) error { return writeDelta(srv.eng.data, w) }

func writeDelta(st *store, w io.Writer) error {
	if st.rec == nil {
		return errors.New("state save: a delta without a base begun")
	}
	var e stateEncoder
	e.str(deltaMagic)
	reset := uint64(0)
	if st.rec.reset {
		reset = 1
	}
	e.uint(reset)
	e.uint(uint64(len(st.rec.keys)))
	for k := range st.rec.keys {
		if v, ok := st.get(k); ok {
			e.uint(1)
			e.str(k)
			e.str(v)
		} else {
			e.uint(0)
			e.str(k)
		}
	}
	return e.flush(w)
}

// applyDelta applies a delta onto the base the new kv loaded.
func applyDelta(d *stateDecoder, base *store) (*store, error) {
	if base == nil {
		return nil, errors.New("state: a delta, but no pre-copy base was loaded")
	}
	switch d.uint() {
	case 0:
	case 1:
		base.clear()
	default:
		return nil, errors.New("state: bad reset flag")
	}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		switch op := d.uint(); op {
		case 0:
			base.del(d.str())
		case 1:
			k := d.str()
			v := d.str()
			if d.err == nil {
				base.set(k, v)
			}
		default:
			if d.err == nil {
				d.err = fmt.Errorf("delta op %d", op)
			}
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("state: delta: %w", d.err)
	}
	return base, nil
}

// loadBase builds a store from a base stream (sef's reader: its end is
// io.EOF). Each batch is read whole into one buffer; its keys and
// values are strings that share it.
func loadBase(r io.Reader) (*store, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(baseMagic)+1)
	if _, err := io.ReadFull(br, magic); err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	keys := 0 // an older kv's base sizes nothing
	switch m := string(magic[1:]); {
	case magic[0] != byte(len(m)) || m != baseMagic && m != baseMagicV1: // both magics are as long
		return nil, fmt.Errorf("base format %q, this kv reads %q and %q", magic, baseMagic, baseMagicV1)
	case m == baseMagic:
		var err error
		if keys, err = readShardCounts(br); err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
	}
	st, size := newStore(), newShardSizer(keys)
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		if n == 0 {
			break
		}
		if n > maxBaseBatch {
			return nil, fmt.Errorf("base: a batch of %d bytes (at most %d)", n, maxBaseBatch)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		d := stateDecoder{s: unsafe.String(unsafe.SliceData(b), len(b))}
		for d.off < len(d.s) && d.err == nil {
			k := d.str()
			v := d.str()
			if d.err == nil {
				size.set(st, k, v)
			}
		}
		if d.err != nil {
			return nil, fmt.Errorf("base: %w", d.err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			err = errors.New("bytes after its end")
		}
		return nil, fmt.Errorf("base: %w", err)
	}
	return st, nil
}

// readShardCounts reads a base's shard counts and returns how many keys
// they add up to, or 0 if that is more than maxPresize.
func readShardCounts(br io.ByteReader) (int, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return 0, err
	}
	if n > maxBaseShards {
		return 0, fmt.Errorf("%d shards (at most %d)", n, maxBaseShards)
	}
	var total uint64
	for range n {
		c, err := binary.ReadUvarint(br)
		if err != nil {
			return 0, err
		}
		total += min(c, maxPresize+1) // no overflow: at most 2^12 of them
	}
	if total > maxPresize {
		return 0, nil
	}
	return int(total), nil
}
