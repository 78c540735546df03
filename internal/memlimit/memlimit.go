// Package memlimit tells the Go runtime the container's memory limit. The
// collector paces itself by the live heap alone (GOGC), so a process whose
// heap doubles between collections can be OOM-killed below what it needs;
// with a soft limit it collects harder as it nears the real one.
package memlimit

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Share is the part of the container's limit given to the Go heap: the
// rest is stacks, the runtime's own and what the kernel counts besides.
const Share = 0.9

// FromCgroup sets the runtime's soft memory limit to Share of the memory
// limit of the process's cgroup, unless GOMEMLIMIT is set. It returns the
// limit it set, or 0 when it set none.
func FromCgroup() int64 {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return 0
	}
	limit := Read("/")
	if limit <= 0 {
		return 0
	}
	soft := int64(float64(limit) * Share)
	debug.SetMemoryLimit(soft)
	return soft
}

// Read is the memory limit of the process's cgroup, under root (a
// filesystem root, "/" but in tests): cgroup v2's memory.max, else v1's
// memory.limit_in_bytes; 0 when there is none.
func Read(root string) int64 {
	v1Path, v2Path := "", ""
	if f, err := os.Open(filepath.Join(root, "proc/self/cgroup")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				v2Path = parts[2]
			case hasController(parts[1], "memory"):
				v1Path = parts[2]
			}
		}
		f.Close()
	}
	cg := filepath.Join(root, "sys/fs/cgroup")
	candidates := []string{
		filepath.Join(cg, v2Path, "memory.max"), filepath.Join(cg, "memory.max"),
		filepath.Join(cg, "unified", v2Path, "memory.max"),
		filepath.Join(cg, "memory", v1Path, "memory.limit_in_bytes"), filepath.Join(cg, "memory", "memory.limit_in_bytes"),
	}
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// v1 says "no limit" with a number near 2^63 rounded to a page.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}
