// Command kv is the reference server supervised by rs: a key-value store
// that speaks RESP2, the Redis protocol, so that redis-cli,
// redis-benchmark and any Redis client library can drive it.
//
//	kv [--listen host:port | --listen unix:/path] [--allow-faults]
//
// Commands: PING, ECHO, SET, GET, DEL, EXISTS, INCR, DBSIZE, FLUSHALL,
// INFO, CONFIG GET (always an empty array), DEBUG SLEEP <seconds> and,
// with --allow-faults, DEBUG FAULT <kind>. Names are case-insensitive.
// Anything else gets -ERR and the connection stays usable; a malformed
// frame gets -ERR and the connection is closed. Requests may be RESP
// arrays of bulk strings or inline lines (with redis-cli's quoting), and
// may be pipelined.
//
// # Shape
//
// kv links sef. Its map has exactly one owner, the main loop, which takes
// work from sef's Receive; sef answers rs's pings from inside Receive, so
// a main loop that hangs or spins stops answering and rs reincarnates kv.
// Around the loop:
//
//	acceptor ──> one goroutine per connection
//	                 │ parse every complete request buffered
//	                 │ Post(batch) ──────────────> main loop: run the batch
//	                 │ <── reply bytes on batch.replies ──┘  against the map
//	                 │ write them, then read and parse more
//
// A connection has at most one batch in flight, so its replies keep the
// order of its requests without a lock. DEBUG SLEEP parks its batch
// instead of blocking the loop: a timer posts a wake that resumes the
// batch, and other clients are served meanwhile. DEBUG FAULT first makes
// sure its +OK was written, then fails from the main loop (panic, exit 3,
// SIGKILL, SIGABRT, a hang, a busy loop, SIGSTOP, a malformed packet to
// rs, or closing the rs channel).
//
// # Lifetime
//
// The init callback (fresh start and restart alike) takes the listening
// socket back from rs's fd store, where it outlives each instance so a
// crash-restart refuses no connection; on a first start it opens the
// socket and stores a copy. A unix socket's path is not unlinked on exit
// for the same reason; a fresh start replaces a stale one, never a live
// one. When sef reports a stop the main loop ends, the listener and every
// connection are closed, their goroutines are waited for (bounded), and
// kv exits 0. Without an rs channel kv runs standalone: same protocol, no
// pings, SIGTERM or SIGINT stop it. The map is not kept across a crash.
//
// # Live update
//
// `service update` moves the map and every open client connection to the
// new version (update.go, with sef/handoff doing the generic part): on
// rs's prepare request the connection goroutines and the acceptor park at
// their next read, with the bytes they had read but not parsed and any
// half-read request; once all are parked (and no DEBUG SLEEP is pending) the state save
// writes the store, shard by shard on every CPU, and handoff writes each
// connection, whose socket goes along as a copy. The new version maps the state and
// rebuilds the shards in parallel, then serves each connection from
// exactly where the old one stopped. If the update is rolled back,
// everyone resumes in the old version. The map is a store of 64 shards by
// a fixed hash (store.go) so that both sides can work in parallel.
//
// Pre-copy (precopy.go, sef's LUBaseStart and LUBaseLoad): before the
// connections park, the map streams to the new version while kv serves.
// Each step, between requests, takes the next 1024 entries from an
// iterator kept across steps (string headers only: no key's bytes are
// touched); a goroutine encodes them off the main loop, and a later step
// writes the batch. From the first step the store records every key
// written or deleted, and FLUSHALL as a reset. The new version builds its
// store from the stream meanwhile; the state saved in the pause is then
// only the delta (each recorded key's value now, or its deletion, after
// the reset if one came) and the connections. The base begins with each
// shard's count of keys, so that the new version makes its maps that
// large before it loads instead of growing them. A rollback drops the
// snapshot and the record.
//
// Bounds: arguments up to 512 MiB, arrays up to 1 Mi elements, inline and
// header lines up to 64 KiB, 1 GiB per request; beyond that the frame is
// malformed. Read buffers grow only as data arrives.
package main
