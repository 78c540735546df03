// Command shunt makes a pod's TCP traffic take a detour through a sidecar
// proxy without the application knowing.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shunt:", err)
		os.Exit(exitCode(err))
	}
}
