package sef

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// retire lowers every thread of the process, those made later too. It
// runs in a child (this test binary again): the nice value cannot be
// raised back without privilege, and the other tests should not run
// at 19.
func TestRetireLowersEveryThread(t *testing.T) {
	if os.Getenv("SEF_RETIRE_CHILD") == "1" {
		retireChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRetireLowersEveryThread$")
	cmd.Env = append(os.Environ(), "SEF_RETIRE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	var nices []string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "nice "); ok {
			nices = append(nices, v)
		}
	}
	if len(nices) < 4 {
		t.Fatalf("the child reported %d threads: %s", len(nices), out)
	}
	for _, n := range nices {
		if n != fmt.Sprint(retiredNice) {
			t.Fatalf("thread nice values after retire: %v, want all %d", nices, retiredNice)
		}
	}
}

// retireChild holds three threads of its own, retires, starts one more,
// and prints every thread's nice value (field 19 of its stat).
func retireChild() {
	var held, release sync.WaitGroup
	release.Add(1)
	hold := func() {
		runtime.LockOSThread()
		held.Done()
		release.Wait()
	}
	held.Add(3)
	for range 3 {
		go hold()
	}
	held.Wait()
	retire()
	held.Add(1)
	go hold() // a thread made now inherits its maker's value
	held.Wait()
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		// After "pid (comm) ", f[0] is field 3 (state): nice, field 19, is f[16].
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		fmt.Println("nice", f[16])
	}
	release.Done()
}
