package main

// store is kv's map, split into shards by a fixed hash of the key. The
// split exists for live update: the old version encodes the shards and
// the new one builds them on all CPUs at once, and that work is the part
// of the update's pause that grows with the data. Only the main loop
// touches a store.
type store struct {
	shards [storeShards]map[string]string
	// rec, while a pre-copy base streams (precopy.go), records every
	// key written or deleted since the base began.
	rec *changes
}

// storeShards is part of the state format: a new version with another
// count rehashes instead of taking shards as they come. 64: a pre-copy
// base clones one shard at a time on the main loop (precopy.go), and a
// sixty-fourth of a million keys clones in well under a millisecond.
const storeShards = 64

func newStore() *store {
	s := &store{}
	for i := range s.shards {
		s.shards[i] = make(map[string]string)
	}
	return s
}

// shardSizer makes a loading store's maps to size, each shard's when the
// load's first key for it comes: room for about keys keys in all, which
// the hash spreads evenly, so a shard takes its share and a sixteenth
// more before it grows. One shard at a time, not all before the first
// key: a base comes shard by shard (the snapshot walks them in order),
// and sizing a million keys' maps at once took about 130 ms on the
// bench's VM (the page faults of some 50 MB as the tables are set
// empty), one burst of a CPU the old instance wanted while it served,
// which sef's pace of the load then answered with as long a sleep
// (BENCHMARKS.md, 2026-12-03). A base in another order only sizes later.
type shardSizer struct {
	per   int // 0: size nothing, the maps grow
	sized [storeShards]bool
}

func newShardSizer(keys int) *shardSizer {
	z := &shardSizer{}
	if keys > 0 {
		z.per = keys/storeShards + keys/storeShards/16 + 1
	}
	return z
}

// set is st.set for a store being loaded, which records no changes.
func (z *shardSizer) set(st *store, k, v string) {
	i := shardOf(k)
	if !z.sized[i] {
		z.sized[i] = true
		if z.per > 0 && len(st.shards[i]) == 0 {
			st.shards[i] = make(map[string]string, z.per)
		}
	}
	st.shards[i][k] = v
}

// shardOf is FNV-1a: fixed across processes and versions, unlike the
// runtime's seeded map hash.
func shardOf(k string) int {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % storeShards)
}

func (s *store) get(k string) (string, bool) {
	v, ok := s.shards[shardOf(k)][k]
	return v, ok
}

func (s *store) set(k, v string) {
	s.shards[shardOf(k)][k] = v
	if s.rec != nil {
		s.rec.keys[k] = struct{}{}
	}
}

// del reports whether k was there.
func (s *store) del(k string) bool {
	m := s.shards[shardOf(k)]
	if _, ok := m[k]; !ok {
		return false
	}
	delete(m, k)
	if s.rec != nil {
		s.rec.keys[k] = struct{}{}
	}
	return true
}

func (s *store) len() int {
	n := 0
	for _, m := range s.shards {
		n += len(m)
	}
	return n
}

func (s *store) clear() {
	for _, m := range s.shards {
		clear(m)
	}
	if s.rec != nil {
		s.rec.reset = true
		clear(s.rec.keys)
	}
}
