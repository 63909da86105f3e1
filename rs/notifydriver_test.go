package rs

import (
	"strings"
	"testing"
	"time"
)

// parseNotify takes what sd_notify(3) says and nothing else: hostile
// datagrams (binary, huge values, lines without '=', keys twice) are
// ignored where they do not parse, and a NUL drops the datagram.
func TestParseNotify(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		name string
		in   string
		ok   bool
		want notifyMsg
	}{
		{"ready", "READY=1", true, notifyMsg{ready: true}},
		{"ready with a newline", "READY=1\n", true, notifyMsg{ready: true}},
		{"ready not 1", "READY=yes", true, notifyMsg{}},
		{"status with '=' in it", "STATUS=a=b c", true, notifyMsg{status: str("a=b c")}},
		{"empty status", "STATUS=", true, notifyMsg{status: str("")}},
		{"status not UTF-8", "STATUS=\xff\xfe", true, notifyMsg{}},
		{"first of a key counts", "STATUS=one\nSTATUS=two\nREADY=1\nREADY=0", true, notifyMsg{status: str("one"), ready: true}},
		{"no '='", "READY\nWATCHDOG\n=1\n", true, notifyMsg{}},
		{"unknown keys", "X_FOO=1\nready=1\n READY=1", true, notifyMsg{}},
		{"NUL", "READY=1\x00", false, notifyMsg{}},
		{"mainpid", "MAINPID=1234", true, notifyMsg{mainPid: 1234}},
		{"mainpid bad", "MAINPID=-1\nMAINPID=2", true, notifyMsg{}},
		{"mainpid huge", "MAINPID=99999999999", true, notifyMsg{}},
		{"errno", "ERRNO=2", true, notifyMsg{errno: 2}},
		{"errno bad", "ERRNO=-5", true, notifyMsg{}},
		{"extend", "EXTEND_TIMEOUT_USEC=1500000", true, notifyMsg{extend: 1500 * time.Millisecond}},
		{"extend capped", "EXTEND_TIMEOUT_USEC=18446744073709551615", true, notifyMsg{extend: maxExtend}},
		{"extend overflow", "EXTEND_TIMEOUT_USEC=18446744073709551616", true, notifyMsg{}},
		{"watchdog", "WATCHDOG=1", true, notifyMsg{watchdog: true}},
		{"watchdog trigger", "WATCHDOG=trigger", true, notifyMsg{watchdogTrigger: true}},
		{"fdstore", "FDSTORE=1\nFDNAME=db", true, notifyMsg{fdstore: true, fdname: "db"}},
		{"fdname with ':'", "FDSTORE=1\nFDNAME=a:b", true, notifyMsg{fdstore: true}},
		{"fdname too long", "FDNAME=" + strings.Repeat("a", 256), true, notifyMsg{}},
		{"fdname control char", "FDNAME=a\tb", true, notifyMsg{}},
		{"remove", "FDSTOREREMOVE=1\nFDNAME=db", true, notifyMsg{fdstoreRemove: true, fdname: "db"}},
		{"stopping reloading barrier", "STOPPING=1\nRELOADING=1\nBARRIER=1", true, notifyMsg{stopping: true, reloading: true, barrier: true}},
		{"huge value", "STATUS=" + strings.Repeat("x", 1<<20), true, notifyMsg{status: str(strings.Repeat("x", 1<<20))}},
		{"empty", "", true, notifyMsg{}},
	}
	for _, c := range cases {
		got, ok := parseNotify([]byte(c.in))
		if ok != c.ok || !sameNotify(got, c.want) {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func sameNotify(a, b notifyMsg) bool {
	if (a.status == nil) != (b.status == nil) || a.status != nil && *a.status != *b.status {
		return false
	}
	a.status, b.status = nil, nil
	return a == b
}

// FuzzParseNotify: any datagram parses without a panic, and what it
// yields is within the protocol's bounds.
func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{"READY=1", "STATUS=x\nMAINPID=12", "FDSTORE=1\nFDNAME=a", "EXTEND_TIMEOUT_USEC=5", "\x00", "=\n=\n", "ERRNO=4095"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := parseNotify(b)
		if !ok {
			if !strings.Contains(string(b), "\x00") {
				t.Fatalf("dropped without a NUL: %q", b)
			}
			return
		}
		if m.mainPid < 0 || m.errno < 0 || m.errno >= 4096 || m.extend < 0 || m.extend > maxExtend {
			t.Fatalf("out of bounds: %+v", m)
		}
		if m.fdname != "" && !validFDName(m.fdname) {
			t.Fatalf("fdname %q", m.fdname)
		}
	})
}
