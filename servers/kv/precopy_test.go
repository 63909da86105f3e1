package main

import (
	"bytes"
	"fmt"
	"maps"
	"testing"
	"time"
)

// runBase writes st's whole base into a buffer, calling between(step)
// after each step, as sef would call work between steps.
func runBase(t *testing.T, sn *snapshot, wake <-chan struct{}, between func(step int)) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	for step := 0; ; step++ {
		n := buf.Len()
		done, err := sn.step(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return &buf
		}
		between(step)
		if buf.Len() == n {
			select { // nothing written: the encoder wakes us
			case <-wake:
			case <-time.After(10 * time.Second):
				t.Fatal("no wake-up from the encoder")
			}
		}
	}
}

func contents(st *store) map[string]string {
	m := map[string]string{}
	for _, sh := range st.shards {
		maps.Copy(m, sh)
	}
	return m
}

// The base plus the delta is the store as it is at the end, whatever
// was written, overwritten, deleted or flushed while the base streamed.
func TestPreCopyBaseAndDelta(t *testing.T) {
	const keys = 20000
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprintf("flushall=%v", flush), func(t *testing.T) {
			st := newStore()
			for i := range keys {
				st.set(fmt.Sprintf("key:%d", i), fmt.Sprintf("value:%d", i))
			}
			wake := make(chan struct{}, 1)
			sn := startBase(st, func() {
				select {
				case wake <- struct{}{}:
				default:
				}
			})
			buf := runBase(t, sn, wake, func(step int) {
				for j := range 50 { // keys already sent and not yet sent alike
					k := fmt.Sprintf("key:%d", (step*50+j)*7%keys)
					switch j % 3 {
					case 0:
						st.set(k, fmt.Sprintf("new:%d", step))
					case 1:
						st.del(k)
					case 2:
						st.set(fmt.Sprintf("added:%d:%d", step, j), "x")
					}
				}
				if flush && step == 5 {
					st.clear()
					st.set("after-flush", "y")
				}
			})
			// Writes between the base's end and the quiescent point.
			st.set("late", "z")
			st.del("key:1")
			base, err := loadBase(buf)
			if err != nil {
				t.Fatal(err)
			}
			var delta bytes.Buffer
			if err := writeDelta(st, &delta); err != nil {
				t.Fatal(err)
			}
			delta.WriteByte(0) // no connections
			got, conns, err := parseState(delta.Bytes(), nil, base)
			if err != nil || len(conns) != 0 {
				t.Fatalf("delta: %v (%d connections)", err, len(conns))
			}
			want := contents(st)
			if g := contents(got); !maps.Equal(g, want) {
				t.Fatalf("base + delta: %d keys, want %d", len(g), len(want))
			}
			sn.drop()
			if st.rec != nil {
				t.Fatal("the record of changes outlives the drop")
			}
		})
	}
}

// A dropped snapshot (a rollback during the base) leaves the store as
// it was and records nothing more.
func TestPreCopyDropDuringTheBase(t *testing.T) {
	st := newStore()
	for i := range 10000 {
		st.set(fmt.Sprintf("key:%d", i), "v")
	}
	sn := startBase(st, func() {})
	var buf bytes.Buffer
	sn.step(&buf)
	sn.step(&buf)
	sn.drop()
	st.set("after", "x")
	if st.rec != nil || st.len() != 10001 {
		t.Fatalf("after the drop: rec %v, %d keys", st.rec, st.len())
	}
}

// handBase is a base of one key, "k" = "v", in the format of magic,
// with the shard counts counts (written only if magic has them).
func handBase(magic string, counts ...uint64) []byte {
	var e stateEncoder
	e.str(magic)
	if magic == baseMagic {
		e.uint(uint64(len(counts)))
		for _, c := range counts {
			e.uint(c)
		}
	}
	var body stateEncoder
	body.str("k")
	body.str("v")
	e.uint(uint64(len(body.b)))
	e.b = append(e.b, body.b...)
	e.uint(0)
	return e.b
}

// The base is the other instance's: malformed input is an error, and
// shard counts it lies about size nothing.
func TestPreCopyHostileBase(t *testing.T) {
	good := handBase(baseMagic, 1)
	for name, in := range map[string][]byte{
		"good":                    good,
		"an older kv's, no sizes": handBase(baseMagicV1),
		"no shards":               handBase(baseMagic),
		"counts past maxPresize":  handBase(baseMagic, maxPresize, maxPresize, 1<<63),
	} {
		if st, err := loadBase(bytes.NewReader(in)); err != nil || st.len() != 1 || contents(st)["k"] != "v" {
			t.Fatalf("%s: loadBase: %v", name, err)
		}
	}
	head := len(baseMagic) + 1 + 2 // the magic, 1 shard, its count
	huge := append([]byte{}, good[:head]...)
	huge = append(huge, 0xff, 0xff, 0xff, 0xff, 0x0f) // a batch of 4 GiB
	for name, in := range map[string][]byte{
		"empty":           nil,
		"bad magic":       append([]byte{byte(len(baseMagic))}, "kv-base-9\n"...),
		"too many shards": handBase(baseMagic, make([]uint64, maxBaseShards+1)...),
		"cut in counts":   good[:len(baseMagic)+2],
		"cut short":       good[:len(good)-3],
		"no end":          good[:len(good)-1],
		"trailing bytes":  append(append([]byte{}, good...), 1),
		"huge batch":      huge,
		"bad pair":        append(append([]byte{}, good[:head]...), 2, 9, 'k', 0),
	} {
		if _, err := loadBase(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: loadBase accepted %q", name, in)
		}
	}
	if _, _, err := parseState(append([]byte{byte(len(deltaMagic))}, deltaMagic+"\x00\x00\x00"...), nil, nil); err == nil {
		t.Error("a delta with no base loaded was accepted")
	}
}

// A base sizes each shard's map at the shard's first key (shardSizer):
// one whose keys do not come shard by shard, as an older or another kv
// may send, loads every key all the same.
func TestPreCopyBaseInAnyOrder(t *testing.T) {
	var e stateEncoder
	e.str(baseMagic)
	counts := make([]uint64, storeShards)
	want := map[string]string{}
	for i := range 5000 {
		k := fmt.Sprintf("key:%d", i)
		want[k] = fmt.Sprint(i)
		counts[shardOf(k)]++
	}
	e.uint(storeShards)
	for _, c := range counts {
		e.uint(c)
	}
	var body stateEncoder
	for i := range 5000 { // in the order of i: every batch has keys of many shards
		body.str(fmt.Sprintf("key:%d", i))
		body.str(fmt.Sprint(i))
		if i%100 == 99 {
			e.uint(uint64(len(body.b)))
			e.b = append(e.b, body.b...)
			body.b = body.b[:0]
		}
	}
	e.uint(0)
	st, err := loadBase(bytes.NewReader(e.b))
	if err != nil || !maps.Equal(contents(st), want) {
		t.Fatalf("loadBase: %v; %d keys of %d", err, st.len(), len(want))
	}
}

// The new kv sizes its maps from the base's shard counts: the same base
// without them (an older kv's) loads the same keys, with more
// allocations: the maps' growth.
func TestPreCopyBaseSizesTheMaps(t *testing.T) {
	st := newStore()
	for i := range 20000 {
		st.set(fmt.Sprintf("key:%d", i), "v")
	}
	wake := make(chan struct{}, 1)
	sn := startBase(st, func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	sized := runBase(t, sn, wake, func(int) {}).Bytes()
	sn.drop()
	head := len(baseMagic) + 1
	r := bytes.NewReader(sized[head:])
	if n, err := readShardCounts(r); err != nil || n != 20000 {
		t.Fatalf("the base's counts add up to %d (%v), want 20000", n, err)
	}
	unsized := append([]byte{byte(len(baseMagicV1))}, baseMagicV1...)
	unsized = append(unsized, sized[len(sized)-r.Len():]...)
	allocs := map[string]float64{}
	for name, in := range map[string][]byte{"sized": sized, "unsized": unsized} {
		allocs[name] = testing.AllocsPerRun(3, func() {
			got, err := loadBase(bytes.NewReader(in))
			if err != nil || !maps.Equal(contents(got), contents(st)) {
				t.Fatalf("%s: loadBase: %v", name, err)
			}
		})
	}
	// contents allocates the same in both; the maps' growth does not.
	if allocs["sized"] >= allocs["unsized"] {
		t.Fatalf("allocations per load: sized %v, unsized %v", allocs["sized"], allocs["unsized"])
	}
}
