// pause holds a pod's namespaces for the kind node image built by e2e/kind/node-image.sh,
// in place of registry.k8s.io/pause (no registry is reachable where that image is built).
// It sleeps until SIGINT or SIGTERM, exits 0 then, and reaps any child that it inherits as
// the pod's PID 1 (when the pod shares its process namespace).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
