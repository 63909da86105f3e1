// Package logs captures the output of rs's services into files, off rs's
// loop.
//
// # The model
//
// Each service (label) with log = "file" has two pipes, one for its
// stdout and one for its stderr, made once by Add and kept by the Writer
// for as long as the service is in rs's table: not per instance. Every
// instance of the service (a restart, a standby, an update's new
// instance) gets the same write ends as its fds 1 and 2, so what one
// instance wrote just before it was SIGKILLed is still in the pipe for
// the Writer to read, and an update neither loses nor repeats a line.
// The Writer holds a write end of each pipe itself, so the read side
// never sees end-of-file between two instances.
//
// One goroutine reads every service's pipes (read ends non-blocking, one
// epoll set, woken through an eventfd for the messages the API sends it)
// and appends to LOGDIR/<label>.log. rs's loop only calls the methods
// below, which queue a message under a mutex held for no I/O and never
// wait. When a disk is slow the goroutine simply reads less: the pipe
// fills and the service blocks on its own write, as under s6-log; rs
// never does.
//
// The goroutine has a thread of its own (locked, never rs's main
// thread) niced by writerNice, so that when the CPUs are short rs's loop
// and the processes it starts go before a flood. It reads its
// non-blocking pipes by raw syscalls (a read cannot block, and the
// scheduler need not hand its P on), grows a pipe that floods to 1 MiB,
// and tells New's busy callback when output floods and when it is quiet
// again: rs, on one P otherwise, takes a second meanwhile.
//
// Add with a new mode for a label retires the old pipes: the Writer
// closes its write ends and reads them on until every process holding
// them has let go (end of file), so an instance still stopping loses no
// line. Each process start hands the child its own Dup of the files.
//
// # The file
//
// One line per line of output:
//
//	2026-12-02T03:04:05.123456Z out listening on 127.0.0.1:7070
//	2026-12-02T03:04:05.123789Z err warning: no database configured
//
// An RFC 3339 UTC timestamp with microseconds (the time the Writer read
// the line), one space, the stream (out or err), one space, the text as
// the service wrote it, without its newline. A line longer than MaxLine
// (64 KiB) is cut into pieces of MaxLine bytes: every piece but the last
// has the stream marked with a '+' ("out+"), meaning the text goes on in
// the next line of the same stream. Nothing is dropped. A last line
// without a newline is held until its newline comes or until Ended says
// the instance is gone; then it is written as a line of its own.
//
// # Rotation
//
// Before a write would take the file past Config.MaxSize (at a line's
// end; a file holds at least one line), <label>.log is renamed to
// <label>.log.1, the older ones shift up (.1 to .2, ...), the one beyond
// Config.Keep is removed, and a new <label>.log is started: nothing
// restarts. With Config.Compress the file just rotated is renamed to
// <label>.log.rotated-N, and a goroutine of the service's own gzips it,
// shifts the older ones (.1.gz to .2.gz, ...) and names it
// <label>.log.1.gz, one rotation after the other: reading the pipes
// never waits for a compression. If the compressor falls 16 files
// behind, rotation waits for it and the file grows past MaxSize
// meanwhile. Reopen closes every
// file, to be opened again (created if gone) at the next line: for an
// external logrotate. rs calls it on SIGUSR1 and on the control op
// "reopen-logs".
//
// # A disk that fails
//
// A write that fails (ENOSPC, EIO, a directory that cannot be made)
// keeps what was not written, stops reading that service's pipes (the
// service blocks once its pipe is full: nothing is lost) and is tried
// again every RetryEvery. Status tells the error meanwhile; once a
// retry succeeds it is cleared and reading resumes. Other services are
// not affected.
//
// # Other modes
//
// log = "inherit" gives every instance a new open file description of
// rs's own stdout and stderr (New opens /proc/self/fd/1 and 2), so that
// a service that sets O_NONBLOCK on its fd does not change rs's; where
// that open fails (a socket) a dup is used, and New logs it. log = "null"
// gives /dev/null.
package logs
