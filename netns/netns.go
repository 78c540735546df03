// Package netns runs code inside another network namespace, so that every
// shunt command can act on a pod's namespace without nsenter.
package netns

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// PathForPID is the network namespace of a process.
func PathForPID(pid int) string {
	return "/proc/" + strconv.Itoa(pid) + "/ns/net"
}

// Do runs fn with the calling goroutine's thread inside the network
// namespace at path. Programs fn starts (iptables-restore, say) inherit the
// namespace; sockets fn opens live in it. Goroutines fn starts do not: they
// may run on other threads. An empty path runs fn where it is.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer target.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(target.Fd()), &st); err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("network namespace %s: not a namespace file", path)
	}

	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("network namespace: reading the current one: %w", err)
	}
	defer home.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the other namespace: keep it locked so the
		// runtime retires it when this goroutine ends, instead of reusing it.
		return fmt.Errorf("returning from network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
