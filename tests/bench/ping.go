package main

// The ping scenario: rs's ping round trip through a service's sef
// receive loop, against two floors measured in the same batches.
//
//   - rs: kvping, configured with period 10ms (ping_timeout 1s, so that a
//     loaded machine does not get it reincarnated), its ping_rtt_us read
//     from status every pingSampleGap; rs times each ping from its send
//     to when the service sent the pong (the kernel's SO_TIMESTAMPNS).
//   - raw floor: a SOCK_SEQPACKET socketpair in this process, a packet of
//     the size of an encoded ping sent and echoed back, by two threads
//     blocked in read(2): what the kernel costs.
//   - msg floor: the same over package msg (msgpack, the Go netpoller), as
//     rs and sef use it, still in one process.
//   - process floor: package msg again, but the echo is a second Go
//     process (this binary re-executed), idle between pings as a service
//     is: what waking another Go process costs, without rs's loop or
//     sef's. Timed as rs times: read through a msg.Mux, to the kernel's
//     stamp of the pong.
//
// pingBatches batches, each of pingSamples rs samples, then floorRuns
// round trips of each floor; the rs/floor ratios are taken batch by batch.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
)

const (
	pingBatches   = 5
	pingSamples   = 100
	pingSampleGap = 12 * time.Millisecond // more than the period: a new ping each time
	floorRuns     = 2000
	floorWarmup   = 200
	// The process floor goes at kvping's pace: procFloorRuns round trips
	// procFloorPause apart per batch.
	procFloorRuns  = 100
	procFloorPause = 10 * time.Millisecond
)

func (b *bench) pings() error {
	st, err := b.waitRunning("kvping", 0, 10*time.Second)
	if err != nil {
		return err
	}
	b.killed = append(b.killed, st.Pid)
	size, err := pingSize()
	if err != nil {
		return err
	}
	rsRow := row{name: "ping: rs → kv (period 10ms), status ping_rtt_us"}
	rawRow := row{name: fmt.Sprintf("ping floor: raw SOCK_SEQPACKET pair, %d-byte packets", size)}
	msgRow := row{name: "ping floor: package msg over a socketpair"}
	procRow := row{name: "ping floor: package msg, echo in a second Go process"}
	var p50s, p99s, procP50s []float64
	reasons := map[string]int{}
	notRunning, zero := 0, 0
	for range pingBatches {
		var batch []time.Duration
		for range pingSamples {
			if err := b.sleep(pingSampleGap); err != nil {
				return err
			}
			cur, err := b.status("kvping")
			if err != nil {
				return err
			}
			if cur.Restarts != st.Restarts {
				reasons[cur.LastExit] += cur.Restarts - st.Restarts
				b.killed = append(b.killed, cur.Pid)
			}
			st = cur
			switch {
			case st.State != "running":
				notRunning++
			case st.PingRTTUs == 0:
				zero++
			default:
				batch = append(batch, time.Duration(st.PingRTTUs)*time.Microsecond)
			}
		}
		raw, err := rawFloor(size, floorRuns)
		if err != nil {
			b.notes = append(b.notes, "ping floor (raw): "+err.Error())
		}
		m, err := msgFloor(floorRuns)
		if err != nil {
			b.notes = append(b.notes, "ping floor (msg): "+err.Error())
		}
		pf, err := procFloor(procFloorRuns)
		if err != nil {
			b.notes = append(b.notes, "ping floor (process): "+err.Error())
		}
		procRow.d = append(procRow.d, pf...)
		if len(batch) > 0 && len(pf) > 0 {
			procP50s = append(procP50s, float64(quantile(sorted(batch), 0.5))/float64(quantile(sorted(pf), 0.5)))
		}
		rsRow.d = append(rsRow.d, batch...)
		rawRow.d = append(rawRow.d, raw...)
		msgRow.d = append(msgRow.d, m...)
		if len(batch) > 0 && len(raw) > 0 {
			bs, rw := sorted(batch), sorted(raw)
			p50s = append(p50s, float64(quantile(bs, 0.5))/float64(quantile(rw, 0.5)))
			p99s = append(p99s, float64(quantile(bs, 0.99))/float64(quantile(rw, 0.99)))
		}
	}
	if _, err := b.ctl.Do(control.Request{Op: control.OpDown, Label: "kvping"}, nil); err != nil {
		b.problem("ping: down kvping: " + err.Error())
	}
	if notRunning+zero > 0 {
		b.notes = append(b.notes, fmt.Sprintf("ping: of %d samples %d found kvping not running, %d had no answered ping yet",
			pingBatches*pingSamples, notRunning, zero))
	}
	for reason, k := range reasons {
		b.problem(fmt.Sprintf("ping: kvping (period 10ms, ping_timeout 1s) reincarnated %d time(s) while sampled, last_exit %q", k, reason))
	}
	b.rows = append(b.rows, rsRow, rawRow, msgRow, procRow)

	t := table{title: fmt.Sprintf("Ping round trip (%d batches; rs: %d status samples each, in-process floors: %d round trips each, process floor: %d, %v apart)", pingBatches, pingSamples, floorRuns, procFloorRuns, procFloorPause),
		head: []string{"path", "p50", "p99", "min", "max", "n"}}
	for _, r := range []row{rsRow, rawRow, msgRow, procRow} {
		if len(r.d) == 0 {
			t.add(r.name, "-", "-", "-", "-", "0")
			continue
		}
		d := sorted(r.d)
		t.add(r.name, short(quantile(d, 0.5)), short(quantile(d, 0.99)), short(d[0]), short(d[len(d)-1]), fmt.Sprint(len(d)))
	}
	t.foot = append(t.foot, fmt.Sprintf("Ratios batch by batch, median (min–max): rs / raw floor p50 %s, p99 %s; rs / process floor p50 %s.",
		ratioRange(p50s), ratioRange(p99s), ratioRange(procP50s)))
	b.sections = append(b.sections, t)
	return nil
}

// pingSize is the size of an encoded ping (a pong is the same size).
func pingSize() (int, error) {
	p, err := msg.Encode(&msg.Message{Kind: msg.KindPing, Seq: 1000})
	return len(p), err
}

// rawFloor: size-byte packets over a blocking SOCK_SEQPACKET pair, echoed
// by a second thread; n timed round trips after floorWarmup.
func rawFloor(size, n int) ([]time.Duration, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// Bounded waits: a read gives up after 10 s.
	tv := unix.Timeval{Sec: 10}
	for _, fd := range fds {
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	echoed := make(chan struct{})
	go func() {
		defer close(echoed)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		buf := make([]byte, 4096)
		for {
			k, err := unix.Read(fds[1], buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || k == 0 {
				return
			}
			if _, err := unix.Write(fds[1], buf[:k]); err != nil {
				return
			}
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		unix.Shutdown(fds[0], unix.SHUT_RDWR) // the echo reads 0 and ends
		<-echoed
		unix.Close(fds[0])
		unix.Close(fds[1])
	}()
	pkt := make([]byte, size)
	buf := make([]byte, 4096)
	d := make([]time.Duration, 0, n)
	for i := range n + floorWarmup {
		t := time.Now()
		if _, err := unix.Write(fds[0], pkt); err != nil {
			return d, err
		}
		for {
			k, err := unix.Read(fds[0], buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return d, err
			}
			if k != size {
				return d, fmt.Errorf("echo of %d bytes, want %d", k, size)
			}
			break
		}
		if i >= floorWarmup {
			d = append(d, time.Since(t))
		}
	}
	return d, nil
}

// msgFloor: ping/pong through package msg over a socketpair, the echo on
// a goroutine, as rs and sef do it but in one process.
func msgFloor(n int) ([]time.Duration, error) {
	fa, fb, err := msg.Pair()
	if err != nil {
		return nil, err
	}
	a, err := msg.NewConn(fa)
	if err != nil {
		fb.Close()
		return nil, err
	}
	defer a.Close()
	e, err := msg.NewConn(fb)
	if err != nil {
		return nil, err
	}
	go func() { // the echoing "service"; ends when a is closed
		defer e.Close()
		echo(e)
	}()
	return pingRounds(a, n, floorWarmup, 0)
}

// echo answers every ping on e with its pong until e fails or closes.
func echo(e *msg.Conn) {
	for {
		m, _, err := e.Recv()
		if err != nil {
			return
		}
		if e.Send(&msg.Message{Kind: msg.KindPong, Seq: m.Seq}) != nil {
			return
		}
	}
}

// pingRounds times n ping/pong round trips on a, after warmup untimed
// ones, pause apart, each from its send to when Recv returns.
func pingRounds(a *msg.Conn, n, warmup int, pause time.Duration) ([]time.Duration, error) {
	a.SetReadDeadline(time.Now().Add(30 * time.Second))
	return rounds(a, n, warmup, pause, func() (msg.Message, time.Time, error) {
		m, _, err := a.Recv()
		return m, time.Now(), err
	})
}

// rounds sends n+warmup pings on a, pause apart, and times the last n
// from the send to the time recv gives with the pong.
func rounds(a *msg.Conn, n, warmup int, pause time.Duration, recv func() (msg.Message, time.Time, error)) ([]time.Duration, error) {
	d := make([]time.Duration, 0, n)
	for i := range n + warmup {
		time.Sleep(pause)
		t := time.Now()
		if err := a.Send(&msg.Message{Kind: msg.KindPing, Seq: uint64(i + 1)}); err != nil {
			return d, err
		}
		m, at, err := recv()
		if err != nil {
			return d, err
		}
		if m.Kind != msg.KindPong || m.Seq != uint64(i+1) {
			return d, errors.New("round trip: not the pong expected")
		}
		if i >= warmup {
			d = append(d, at.Sub(t))
		}
	}
	return d, nil
}

// echoEnv names the fd of the echo child's end of the socketpair.
const echoEnv = "RSBENCH_ECHO_FD"

// procFloor: ping/pong through package msg with this binary re-executed
// as the echo, procFloorPause apart like kvping's pings, so that the echo
// is as idle between two pings as kvping is.
func procFloor(n int) ([]time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fa, fb, err := msg.Pair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), echoEnv+"=3")
	cmd.ExtraFiles = []*os.File{fb}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	fb.Close()
	if err != nil {
		fa.Close()
		return nil, err
	}
	a, err := msg.NewConn(fa)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	defer func() {
		a.Close() // the echo reads EOF and exits
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	return stampedRounds(a, n, 5, procFloorPause)
}

// stampedRounds is pingRounds measured as rs measures: the channel read
// through a msg.Mux with the kernel's timestamps on, each round trip
// ending when the echo sent its pong.
func stampedRounds(a *msg.Conn, n, warmup int, pause time.Duration) ([]time.Duration, error) {
	if err := a.EnableTimestamps(); err != nil {
		return nil, err
	}
	mux, err := msg.NewMux()
	if err != nil {
		return nil, err
	}
	got := make(chan msg.Delivery, 16)
	go mux.Run(func(batch []msg.Delivery) {
		for _, d := range batch {
			got <- d
		}
	})
	defer mux.Close()
	if err := mux.Add(a, nil); err != nil {
		return nil, err
	}
	return rounds(a, n, warmup, pause, func() (msg.Message, time.Time, error) {
		select {
		case r := <-got:
			return r.Msg, r.At, r.Err
		case <-time.After(30 * time.Second):
			return msg.Message{}, time.Time{}, errors.New("round trip: no pong within 30s")
		}
	})
}

// echoMain is the re-executed bench as the process floor's echo.
func echoMain() {
	fd, err := strconv.Atoi(os.Getenv(echoEnv))
	if err != nil {
		os.Exit(2)
	}
	e, err := msg.NewConn(os.NewFile(uintptr(fd), "echo"))
	if err != nil {
		os.Exit(2)
	}
	echo(e)
	os.Exit(0)
}
