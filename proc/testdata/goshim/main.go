// Command goshim is the shim rs does not use, kept to measure it
// (BenchmarkStartListenPID/go-shim): a Go program that sets LISTEN_PID
// to its own pid and execs its first argument, as a shim between fork
// and the service's exec would.
package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	env := os.Environ()
	for i, e := range env {
		if strings.HasPrefix(e, "LISTEN_PID=") {
			env[i] = "LISTEN_PID=" + strconv.Itoa(os.Getpid())
		}
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], env)
	os.Stderr.WriteString("goshim: " + err.Error() + "\n")
	os.Exit(127)
}
