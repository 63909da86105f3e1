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

func newStore() *store { return newStoreSized(0) }

// newStoreSized makes a store with room for about keys keys: the hash
// spreads them evenly, and a shard takes its share and a sixteenth more
// before it grows.
func newStoreSized(keys int) *store {
	per := 0
	if keys > 0 {
		per = keys/storeShards + keys/storeShards/16 + 1
	}
	s := &store{}
	for i := range s.shards {
		s.shards[i] = make(map[string]string, per)
	}
	return s
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
