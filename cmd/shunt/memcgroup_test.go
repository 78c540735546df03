package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memCgroup is a memory cgroup the test made, with a hard limit: the
// kernel enforces it as it does a container's limits.memory.
type memCgroup struct {
	dir string
	v2  bool
}

// newMemCgroup makes a child of this process's memory cgroup (v2, or v1's
// memory hierarchy) limited to limit bytes, removed at cleanup. It returns
// nil when there is none to use (not root, no memory controller).
func newMemCgroup(t *testing.T, limit int64) *memCgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	var candidates []memCgroup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		name := fmt.Sprintf("shunt-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		switch {
		case parts[0] == "0" && parts[1] == "":
			for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
				candidates = append(candidates, memCgroup{filepath.Join(root, parts[2], name), true})
			}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			candidates = append(candidates, memCgroup{filepath.Join("/sys/fs/cgroup/memory", parts[2], name), false})
		}
	}
	for _, c := range candidates {
		if os.Mkdir(c.dir, 0o755) != nil {
			continue
		}
		if os.WriteFile(c.file("memory.max", "memory.limit_in_bytes"), []byte(strconv.FormatInt(limit, 10)), 0o644) != nil {
			_ = os.Remove(c.dir)
			continue
		}
		cg := c
		t.Cleanup(func() {
			// The kernel refuses to remove it until its process is reaped.
			for i := 0; os.Remove(cg.dir) != nil && i < 100; i++ {
				time.Sleep(20 * time.Millisecond)
			}
		})
		return &cg
	}
	return nil
}

func (c *memCgroup) file(v2, v1 string) string {
	if c.v2 {
		return filepath.Join(c.dir, v2)
	}
	return filepath.Join(c.dir, v1)
}

// wrap makes argv start inside the cgroup: a shell joins it, then execs.
func (c *memCgroup) wrap(argv ...string) []string {
	return append([]string{"/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(c.dir, "cgroup.procs")}, argv...)
}

// ooms is how many times the kernel's OOM killer acted in the cgroup.
func (c *memCgroup) ooms() int {
	b, _ := os.ReadFile(c.file("memory.events", "memory.oom_control"))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// peak is the cgroup's high-water mark of charged memory (anonymous and
// page cache), in bytes; 0 where the kernel does not keep one.
func (c *memCgroup) peak() int64 {
	b, _ := os.ReadFile(c.file("memory.peak", "memory.max_usage_in_bytes"))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}
