package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The orphan reaper against rs's own children: in a process of its own
// (the role reaper-stress: being a subreaper is for the process's whole
// life), goroutines start children through Start and through StartCmd
// (os/exec) while others make orphans as fast as they can, so the
// reaper scans all the time. Every owned child's exit status must reach
// its own waiter, and every orphan must be reaped.
func TestReaperLeavesOwnedExits(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "PROC_TEST_ROLE=reaper-stress")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("reaper-stress: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "orphans reaped") {
		t.Fatalf("reaper-stress said:\n%s", out.String())
	}
	t.Log(strings.TrimSpace(out.String()))
}

// reaperStress is the body of TestReaperLeavesOwnedExits; it prints what
// went wrong and returns non-zero if anything did.
func reaperStress() int {
	if err := SetSubreaper(); err != nil {
		fmt.Println(err)
		return 1
	}
	defer ReleaseContainment()
	r := NewReaper(nil)
	defer r.Stop()
	const workers, rounds, orphanMakers = 4, 20, 2
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		errs = append(errs, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				code := (w*rounds+i)%200 + 1
				if i%2 == 0 {
					p, err := Start(Spec{Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf("exit %d", code)}})
					if err != nil {
						fail("start: %v", err)
						continue
					}
					if e := p.Exit(); e.Code != code || e.Signal != 0 {
						fail("Start's child: exit %v, want exit %d (its status was stolen)", e, code)
					}
					continue
				}
				c := exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", code))
				if err := StartCmd(c); err != nil {
					fail("StartCmd: %v", err)
					continue
				}
				err := WaitCmd(c)
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != code {
					fail("StartCmd's child: %v, want exit status %d (its status was stolen)", err, code)
				}
			}
		}()
	}
	// Orphans: each shell leaves a child behind and exits; the child,
	// reparented here, exits too.
	made := 0
	for range orphanMakers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				c := exec.Command("/bin/sh", "-c", "/bin/sh -c 'exit 5' & exit 0")
				if err := StartCmd(c); err != nil {
					fail("orphan maker: %v", err)
					continue
				}
				if err := WaitCmd(c); err != nil {
					fail("orphan maker: %v", err)
				}
				mu.Lock()
				made++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Every orphan is reaped, within a bound: no zombie child is left.
	deadline := time.Now().Add(10 * time.Second)
	for r.Reaped() < made || len(zombieChildren()) > 0 {
		if time.Now().After(deadline) {
			fail("%d of %d orphans reaped; zombies left: %v", r.Reaped(), made, zombieChildren())
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, e := range errs {
		fmt.Println(e)
	}
	if len(errs) > 0 {
		return 1
	}
	fmt.Printf("%d owned children kept their exit status; %d orphans reaped\n", workers*rounds, r.Reaped())
	return 0
}

// zombieChildren lists this process's children that are zombies.
func zombieChildren() []int {
	var z []int
	for _, pid := range childPids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil && bytes.Contains(b, []byte(") Z ")) {
			z = append(z, pid)
		}
	}
	return z
}
